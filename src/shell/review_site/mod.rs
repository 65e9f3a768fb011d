//! The review pages' listener (`review:` in the config): axum on the service's runtime,
//! read-only. Each request is checked (`access`), its page made on the blocking pool
//! from a connection of its own to the journal, and served with a strict
//! Content-Security-Policy: no script, nothing from elsewhere.

mod access;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tracing::{error, info};

pub use access::account_line;
use access::{Access, Refused};

use crate::core::config::Config;
use crate::review::pages::{self, decisions, summary, Pages};
use crate::shell::journal::{AuditFilter, AuditRow, Journal};

mod reading;

/// What the pages need from the config, and the parts made once.
pub struct Site {
    journal: PathBuf,
    desk: String,
    human_folder: Option<String>,
    page_size: u32,
    access: Access,
    pages: Pages,
}

#[derive(Clone)]
struct Viewer(String);

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

impl Site {
    pub fn new(config: &Config) -> Option<(Site, SocketAddr)> {
        let review = config.review.as_ref()?;
        let listen: SocketAddr = review.listen.parse().ok()?;
        let site = Site {
            journal: config.service.state.clone(),
            desk: config.desk.name.clone(),
            human_folder: config.folders.human.clone(),
            page_size: review.page_size,
            access: Access::new(review.auth.clone(), listen),
            pages: Pages::new(),
        };
        Some((site, listen))
    }
}

/// Serves the pages until the process ends. A listener that cannot bind is logged and
/// given up: the desk's mail matters more than its review pages.
pub async fn serve(site: Site, listen: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            error!("review pages {listen}: {e}; not served");
            return;
        }
    };
    info!("review pages on http://{listen}/");
    let app = router(Arc::new(site));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
    if let Err(e) = served {
        error!("review pages {listen}: {e}");
    }
}

fn router(site: Arc<Site>) -> Router {
    Router::new()
        .route("/", get(summary_page))
        .route("/summary.csv", get(summary_csv))
        .route("/charts/{name}", get(chart))
        .route("/decisions", get(decisions_page))
        .route("/decisions/{id}", get(decision_page))
        .route("/queue", get(queue_page))
        .layer(middleware::from_fn_with_state(site.clone(), check_access))
        .route("/static/review.css", get(style))
        .layer(middleware::from_fn(secure_headers))
        .with_state(site)
}

async fn check_access(
    State(site): State<Arc<Site>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    match site.access.viewer(peer, req.headers()) {
        Ok(viewer) => {
            req.extensions_mut().insert(Viewer(viewer));
            next.run(req).await
        }
        Err(Refused::SignIn) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"triage review\", charset=\"UTF-8\"",
            )],
            "Sign in with your review account.\n",
        )
            .into_response(),
        Err(Refused::Forbidden(why)) => (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    }
}

async fn secure_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        pages::STYLE,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Days {
    days: Option<u32>,
}

impl Days {
    fn get(&self) -> u32 {
        self.days.unwrap_or(7).clamp(1, 366)
    }
}

/// Runs `make` on the blocking pool with the site and a fresh journal connection; a
/// journal error is a 500 that says so, and is logged.
async fn on_journal<T: Send + 'static>(
    site: Arc<Site>,
    make: impl FnOnce(&Site, &Journal) -> Result<T, crate::shell::journal::Error> + Send + 'static,
) -> Result<T, Response> {
    let done = tokio::task::spawn_blocking(move || {
        let journal = Journal::open(&site.journal)?;
        make(&site, &journal)
    })
    .await;
    match done {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            error!("review pages: journal: {e}");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The journal cannot be read: {e}\n"),
            )
                .into_response())
        }
        Err(e) => {
            error!("review pages: {e}");
            Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be made.\n",
            )
                .into_response())
        }
    }
}

fn html(body: Result<String, Response>) -> Response {
    match body {
        Ok(b) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], b).into_response(),
        Err(r) => r,
    }
}

async fn summary_page(
    State(site): State<Arc<Site>>,
    Extension(v): Extension<Viewer>,
    Query(d): Query<Days>,
) -> Response {
    let days = d.get();
    html(on_journal(site, move |s, j| reading::summary(s, j, &v.0, days)).await)
}

async fn summary_csv(State(site): State<Arc<Site>>, Query(d): Query<Days>) -> Response {
    let days = d.get();
    match on_journal(site, move |s, j| reading::summary_csv(s, j, days)).await {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"triage-summary.csv\"",
                ),
            ],
            csv,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn chart(
    State(site): State<Arc<Site>>,
    Path(name): Path<String>,
    Query(d): Query<Days>,
) -> Response {
    let days = d.get();
    match on_journal(site, move |s, j| reading::chart(s, j, &name, days)).await {
        Ok(Some(svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "No such chart.\n").into_response(),
        Err(r) => r,
    }
}

async fn decisions_page(
    State(site): State<Arc<Site>>,
    Extension(v): Extension<Viewer>,
    Query(f): Query<decisions::Filter>,
) -> Response {
    html(on_journal(site, move |s, j| reading::decisions(s, j, &v.0, f)).await)
}

async fn decision_page(
    State(site): State<Arc<Site>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<i64>,
) -> Response {
    match on_journal(site, move |s, j| reading::decision(s, j, &v.0, id)).await {
        Ok(Some(page)) => html(Ok(page)),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            "No such decision (older than the audit log keeps?).\n",
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn queue_page(State(site): State<Arc<Site>>, Extension(v): Extension<Viewer>) -> Response {
    html(on_journal(site, move |s, j| reading::queue(s, j, &v.0)).await)
}

/// The records of the message whose first record is `id`, oldest first.
fn records_of(journal: &Journal, id: i64) -> Result<Vec<AuditRow>, crate::shell::journal::Error> {
    let first = journal.audit_rows(&AuditFilter {
        id: Some(id),
        ..AuditFilter::default()
    })?;
    let Some(first) = first.into_iter().next() else {
        return Ok(Vec::new());
    };
    let Some(message_id) = first.message_id.clone() else {
        return Ok(vec![first]);
    };
    let key = decisions::message_key(&first);
    let all = journal.audit_rows(&AuditFilter {
        message_id: Some(message_id),
        after_id: id - 1,
        ..AuditFilter::default()
    })?;
    Ok(all
        .into_iter()
        .filter(|r| decisions::message_key(r) == key)
        .collect())
}

fn since_days(days: u32) -> (Vec<String>, String) {
    let list = summary::last_days(days, crate::shell::clock::now());
    let since = format!("{}T00:00:00.000Z", list[0]);
    (list, since)
}
