//! What operators watch: Prometheus metrics, `/healthz` (alive) and `/readyz` (logged in
//! to IMAP, SMTP reachable, mailbox checked recently), systemd's READY/WATCHDOG, and a
//! loud log line when the mailbox has not been checked for too long (the "silently
//! stopped fetching" failure of other tools).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{error, info, warn};

type Labels = Vec<(String, String)>;

pub struct Health {
    registry: Registry,
    messages: Family<Labels, Counter>,
    sent: Family<Labels, Counter>,
    drafts: Family<Labels, Counter>,
    drafts_waiting: Gauge,
    left_for_human: Counter,
    errors: Family<Labels, Counter>,
    imap_reconnects: Counter,
    reload_failures: Counter,
    breaker_open: Gauge,
    imap_up: Gauge,
    smtp_up: Gauge,
    since_check: Gauge<f64, AtomicU64>,
    last_check: Mutex<Instant>,
    ever_checked: std::sync::atomic::AtomicBool,
    /// The service loop's last step (drain, IDLE wake, reconnect attempt): the watchdog.
    heartbeat: Mutex<Instant>,
    stale_after: Duration,
    token_refreshes: Family<Labels, Counter>,
    token_ok: Family<Labels, Gauge>,
    token_lifetime: Family<Labels, Gauge>,
    /// Per OAuth2 account, why its tokens are not flowing (None: they are).
    token_trouble: Mutex<std::collections::BTreeMap<String, Option<String>>>,
}

impl Health {
    pub fn new(stale_after: Duration) -> Health {
        let mut h = Health {
            registry: Registry::with_prefix("triage"),
            messages: Family::default(),
            sent: Family::default(),
            drafts: Family::default(),
            drafts_waiting: Gauge::default(),
            left_for_human: Counter::default(),
            errors: Family::default(),
            imap_reconnects: Counter::default(),
            reload_failures: Counter::default(),
            breaker_open: Gauge::default(),
            imap_up: Gauge::default(),
            smtp_up: Gauge::default(),
            since_check: Gauge::default(),
            last_check: Mutex::new(Instant::now()),
            ever_checked: false.into(),
            heartbeat: Mutex::new(Instant::now()),
            stale_after,
            token_refreshes: Family::default(),
            token_ok: Family::default(),
            token_lifetime: Family::default(),
            token_trouble: Mutex::new(Default::default()),
        };
        h.registry.register(
            "oauth2_token_refreshes",
            "OAuth2 access-token requests by account and outcome (ok, failed)",
            h.token_refreshes.clone(),
        );
        h.registry.register(
            "oauth2_token_ok",
            "1 while the account's last OAuth2 token refresh succeeded (and a rotated refresh token was saved)",
            h.token_ok.clone(),
        );
        h.registry.register(
            "oauth2_token_lifetime_seconds",
            "Lifetime of the account's current OAuth2 access token as granted",
            h.token_lifetime.clone(),
        );
        h.registry.register(
            "messages",
            "Messages decided, by category and outcome (filed, left for human, shadow)",
            h.messages.clone(),
        );
        h.registry.register(
            "answers_sent",
            "Messages sent (kind: reply or forward), accepted by the SMTP server",
            h.sent.clone(),
        );
        h.registry.register(
            "drafts",
            "Drafts for a person, by outcome (drafted, approved, discarded)",
            h.drafts.clone(),
        );
        h.registry.register(
            "drafts_waiting",
            "Drafts in the Drafts folder waiting for a person",
            h.drafts_waiting.clone(),
        );
        h.registry.register(
            "left_for_human",
            "Messages left visibly for a human",
            h.left_for_human.clone(),
        );
        h.registry.register(
            "errors",
            "Errors by kind (imap, smtp, smtp_refused, journal, documents)",
            h.errors.clone(),
        );
        h.registry.register(
            "imap_reconnects",
            "IMAP sessions re-established after a failure",
            h.imap_reconnects.clone(),
        );
        h.registry.register(
            "reload_failures",
            "Rules/templates/directory reloads refused as invalid (the last good set stays live)",
            h.reload_failures.clone(),
        );
        h.registry.register(
            "circuit_breaker_open",
            "1 while the circuit breaker stops automatic answers",
            h.breaker_open.clone(),
        );
        h.registry
            .register("imap_up", "1 while logged in to IMAP", h.imap_up.clone());
        h.registry.register(
            "smtp_up",
            "1 while the SMTP server answered the last attempt",
            h.smtp_up.clone(),
        );
        h.registry.register(
            "seconds_since_mailbox_check",
            "Seconds since the inbox was last read successfully",
            h.since_check.clone(),
        );
        h
    }

    pub fn message(&self, category: &str, outcome: &str) {
        self.messages
            .get_or_create(&vec![
                ("category".into(), category.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
        if outcome == "left for human" {
            self.left_for_human.inc();
        }
    }
    pub fn sent(&self, kind: &str) {
        self.sent
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }
    pub fn draft(&self, outcome: &str) {
        self.drafts
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }
    pub fn drafts_waiting(&self, n: usize) {
        self.drafts_waiting.set(n as i64);
    }
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }
    pub fn reconnected(&self) {
        self.imap_reconnects.inc();
    }
    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }
    pub fn breaker(&self, open: bool) {
        self.breaker_open.set(open as i64);
    }
    pub fn imap(&self, up: bool) {
        self.imap_up.set(up as i64);
    }
    pub fn smtp(&self, up: bool) {
        self.smtp_up.set(up as i64);
    }
    /// An OAuth2 refresh's outcome: the lifetime granted, or the endpoint's error.
    /// `trouble` keeps readiness red although the refresh went through.
    pub fn token_refreshed(
        &self,
        account: &str,
        outcome: Result<u64, &str>,
        trouble: Option<&str>,
    ) {
        let labels = vec![("account".to_string(), account.to_string())];
        let mut with_outcome = labels.clone();
        with_outcome.push((
            "outcome".into(),
            if outcome.is_ok() { "ok" } else { "failed" }.into(),
        ));
        self.token_refreshes.get_or_create(&with_outcome).inc();
        let why = match outcome {
            Ok(lifetime) => {
                self.token_lifetime
                    .get_or_create(&labels)
                    .set(lifetime as i64);
                trouble.map(String::from)
            }
            Err(e) => Some(format!("OAuth2 token refresh failing: {e}")),
        };
        self.token_ok
            .get_or_create(&labels)
            .set(why.is_none() as i64);
        self.token_trouble
            .lock()
            .expect("lock")
            .insert(account.to_string(), why);
    }

    /// The inbox was read successfully just now.
    pub fn checked(&self) {
        *self.last_check.lock().expect("lock") = Instant::now();
        self.ever_checked.store(true, Ordering::Relaxed);
        self.beat();
    }
    pub fn beat(&self) {
        *self.heartbeat.lock().expect("lock") = Instant::now();
    }

    fn since_check(&self) -> Duration {
        self.last_check.lock().expect("lock").elapsed()
    }

    /// Why the service is not ready, if it is not.
    pub fn ready(&self) -> Result<(), String> {
        let mut why = Vec::new();
        if self.imap_up.get() != 1 {
            why.push("not logged in to IMAP".to_string());
        }
        if self.smtp_up.get() != 1 {
            why.push("SMTP server not reachable".to_string());
        }
        for (account, trouble) in self.token_trouble.lock().expect("lock").iter() {
            if let Some(t) = trouble {
                why.push(format!("{account}: {t}"));
            }
        }
        if !self.ever_checked.load(Ordering::Relaxed) {
            why.push("the mailbox has not been read yet".to_string());
        } else if self.since_check() > self.stale_after {
            why.push(format!(
                "the mailbox was last read {} s ago (limit {} s)",
                self.since_check().as_secs(),
                self.stale_after.as_secs()
            ));
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("; "))
        }
    }

    pub fn metrics_text(&self) -> String {
        self.since_check.set(self.since_check().as_secs_f64());
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP listener: GET /metrics, /healthz, /readyz; anything else 404. Small on
/// purpose: three fixed answers need no web framework.
pub async fn serve_http(addr: std::net::SocketAddr, health: std::sync::Arc<Health>) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            error!("HTTP listener {addr}: {e}; no /metrics, /healthz or /readyz");
            return;
        }
    };
    info!("HTTP listener on {addr}: /metrics /healthz /readyz");
    // Out of file descriptors, accept fails at once, again and again: back off (10 ms
    // doubling to 1 s) rather than spin, so the rest of the service keeps its CPU.
    let mut pause = std::time::Duration::from_millis(10);
    let open_connections = std::sync::Arc::new(());
    loop {
        let mut conn = match listener.accept().await {
            Ok((conn, _)) => {
                pause = std::time::Duration::from_millis(10);
                conn
            }
            Err(e) => {
                warn!(
                    "HTTP listener {addr}: accept failed: {e}; pausing {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        // At most 64 requests at a time: a flood must not take every file descriptor.
        if std::sync::Arc::strong_count(&open_connections) > 64 {
            drop(conn);
            continue;
        }
        let ticket = open_connections.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let _ticket = ticket;
            // Read until the request line is complete: clients may send it in pieces.
            let mut buf = Vec::with_capacity(256);
            let read_line = async {
                let mut chunk = [0u8; 512];
                while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read_line)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf);
            let path = request
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("GET "))
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or("");
            let (status, body, kind) = match path {
                "/metrics" => (
                    "200 OK",
                    health.metrics_text(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                "/healthz" => ("200 OK", "ok\n".to_string(), "text/plain"),
                "/readyz" => match health.ready() {
                    Ok(()) => ("200 OK", "ready\n".to_string(), "text/plain"),
                    Err(why) => (
                        "503 Service Unavailable",
                        format!("not ready: {why}\n"),
                        "text/plain",
                    ),
                },
                _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Logs loudly while the mailbox goes unread for longer than allowed, and feeds
/// systemd's watchdog while the service loop is making progress.
pub async fn watch(health: std::sync::Arc<Health>) {
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog
        .map(|w| (w / 2).min(Duration::from_secs(30)))
        .unwrap_or(Duration::from_secs(30));
    let mut last_warned: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        if let Some(limit) = watchdog {
            let age = health.heartbeat.lock().expect("lock").elapsed();
            if age < limit {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                warn!(
                    "no progress for {} s: not feeding the watchdog",
                    age.as_secs()
                );
            }
        }
        let stale = health.ever_checked.load(Ordering::Relaxed)
            && health.since_check() > health.stale_after;
        if stale && last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(300)) {
            error!(
                "MAILBOX NOT CHECKED for {} s (limit {} s): readiness is failing; see the log for the IMAP errors",
                health.since_check().as_secs(),
                health.stale_after.as_secs()
            );
            last_warned = Some(Instant::now());
        } else if !stale {
            last_warned = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The draft metrics under the names the README gives.
    #[test]
    fn drafts_are_counted_by_outcome_and_waiting() {
        let h = Health::new(Duration::from_secs(60));
        h.draft("drafted");
        h.draft("drafted");
        h.draft("approved");
        h.drafts_waiting(1);
        let text = h.metrics_text();
        assert!(
            text.contains("triage_drafts_total{outcome=\"drafted\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("triage_drafts_total{outcome=\"approved\"} 1"),
            "{text}"
        );
        assert!(text.contains("triage_drafts_waiting 1"), "{text}");
    }
}
