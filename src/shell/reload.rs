//! Rules, templates, directory and config reloaded while the service runs: on SIGHUP, and
//! when a file under them changes (checked every second by size and modification time,
//! which also sees an editor's save-by-rename; a change must hold still for one check
//! before it is read, so a half-written file is not). Everything is validated before the
//! swap; on any problem the last good set stays live and the problem is logged with its
//! file:line:col.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::core::config::Config;
use crate::core::plan::Playbook;

/// Size and modification time of every file that makes up the playbook.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(config_path: &Path, book: &Playbook) -> Fingerprint {
    let config = &book.config;
    let mut files = vec![config_path.to_path_buf()];
    for dir in [&config.rules, &config.templates, &config.directory.path] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            files.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let time = meta.and_then(|m| m.modified().ok());
            (p, size, time)
        })
        .collect()
}

/// Loads and validates a new playbook. Connection and state settings cannot change
/// under a running service: they are kept, with a warning when they differ.
fn load(config_path: &Path, running: &Playbook) -> Result<Playbook, String> {
    let mut config = Config::load(config_path).map_err(|p| p.to_string())?;
    let was = &running.config;
    let differs =
        (&config.imap, &config.smtp, &config.service) != (&was.imap, &was.smtp, &was.service);
    if differs {
        warn!("{}: imap, smtp and service settings take effect at the next restart; the rest is reloaded", config_path.display());
        config.imap = was.imap.clone();
        config.smtp = was.smtp.clone();
        config.service = was.service.clone();
    }
    Playbook::load(config, None)
        .map(|mut b| {
            b.documents = running.documents.clone();
            b
        })
        .map_err(|p| p.to_string())
}

/// Runs until the receiver side is gone; sends each new valid playbook.
pub async fn watch(
    config_path: PathBuf,
    tx: watch::Sender<Arc<Playbook>>,
    health: Arc<crate::shell::health::Health>,
) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("no SIGHUP reload: {e}");
            None
        }
    };
    let mut seen = fingerprint(&config_path, &tx.borrow());
    // A change waits here until it holds still for one check.
    let mut pending: Option<Fingerprint> = None;
    // The last failed version: it is reported once, not every second.
    let mut failed: Option<Fingerprint> = None;
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        if tx.is_closed() {
            return;
        }
        let now = fingerprint(&config_path, &tx.borrow());
        if !signalled {
            if now == seen || failed.as_ref() == Some(&now) {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
        }
        pending = None;
        let why = if signalled { "SIGHUP" } else { "files changed" };
        let running = tx.borrow().clone();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let loaded = load(&config_path, &running);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        match loaded {
            Ok(book) => {
                info!("reloaded ({why}): {}", book.summary());
                seen = fingerprint(&config_path, &book);
                failed = None;
                let _ = tx.send(Arc::new(book));
            }
            Err(problems) => {
                health.reload_failed();
                error!(
                    "RELOAD FAILED ({why}); still running on the last good rules, templates and directory. Fix this and `triage check`:\n{problems}"
                );
                failed = Some(now);
            }
        }
    }
}
