//! `triage run [--once] [--shadow]`: the service. Logs set up, the playbook loaded (and
//! reloaded when the rules change), health and metrics served, and the shell's inbox
//! loop run until a signal asks it to stop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use triage::core::plan::Playbook;
use triage::shell::{health, reload, review_site, service};

use super::{Failure, Format};

pub struct Options {
    pub once: bool,
    pub shadow: bool,
    pub log_format: Format,
}

pub fn execute(config: &Path, options: Options) -> Result<(), Failure> {
    start_logs(options.log_format);
    let book = super::playbook(config, None)?;
    let rt = super::runtime()?;
    let result = rt.block_on(serve(config, book, &options));
    result.map_err(|e| {
        tracing::error!("{e}");
        Failure::Said(1)
    })
}

fn start_logs(format: Format) {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIAGE_LOG")
                .unwrap_or_else(|_| "info".into())
                // The IMAP and HTTP libraries trace raw protocol lines, which carry
                // passwords and tokens: kept at info even under TRIAGE_LOG=trace.
                .add_directive("async_imap=info".parse().expect("directive"))
                .add_directive("ureq=info".parse().expect("directive"))
                .add_directive("ureq_proto=info".parse().expect("directive")),
        )
        .with_writer(std::io::stderr);
    match format {
        Format::Json => logs.json().init(),
        Format::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

async fn serve(config: &Path, book: Playbook, options: &Options) -> Result<(), service::Error> {
    let (stop, stopping) = watch::channel(false);
    let stale = Duration::from_secs(book.config.service.stale_after_seconds);
    let health = Arc::new(health::Health::new(stale));
    let http =
        (book.config.service.http.as_ref()).and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let (rules, playbook) = watch::channel(Arc::new(book));
    if !options.once {
        tokio::spawn(reload::watch(config.to_path_buf(), rules, health.clone()));
        tokio::spawn(health::watch(health.clone()));
        if let Some(addr) = http {
            tokio::spawn(health::serve_http(addr, health.clone()));
        }
        if let Some((site, listen)) = review_site::Site::new(&playbook.borrow().config) {
            tokio::spawn(review_site::serve(site, listen));
        }
    }
    let service = service::run(service::Options {
        once: options.once,
        shadow: options.shadow,
        stop: stopping,
        playbook,
        health: health.clone(),
    });
    tokio::pin!(service);
    tokio::select! {
        r = &mut service => r,
        _ = shutdown() => {
            // Every step is under a timeout, so finishing the message in hand is bounded.
            tracing::info!("stopping on signal: finishing the message in hand");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            let _ = stop.send(true);
            tokio::select! {
                r = &mut service => r,
                _ = shutdown() => {
                    tracing::warn!("second signal: stopping now; the journal settles the message in hand at the next start");
                    Ok(())
                }
            }
        }
    }
}

/// SIGTERM (systemd) or Ctrl-C.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
