//! Checkpoints on a schedule, in a thread of their own. SQLite's automatic checkpoint
//! runs inside the commit that crosses its threshold: that commit then copies the WAL
//! into the database and waits for an fsync, on the service's task, in the middle of a
//! batch. `cargo bench --bench journal` (10,000 plans of 1.8 KB): decisions recorded in
//! 290–292 → 119–128 ms, their filing outcomes in 749–773 → 315–321 ms with the checkpoints
//! here; the sort job of 10,000 went from 2.4–3.1 s to 2.1–2.5 s (same hour).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::{debug, warn};

/// How often the WAL is copied into the database: the WAL holds at most about this
/// long of writes (a few MB at full speed).
pub const EVERY: Duration = Duration::from_secs(1);

/// The thread; stopped (after a last checkpoint) when dropped.
pub struct Checkpointer {
    /// A message asks for a checkpoint now; dropping the sender stops the thread.
    now: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// A second connection to the journal that runs PASSIVE checkpoints every `every`:
    /// they never block the writer, and a checkpoint interrupted by a kill is redone by
    /// SQLite at the next open.
    pub fn start(path: &Path, every: Duration) -> Result<Checkpointer, String> {
        let db = Connection::open(path).map_err(|e| e.to_string())?;
        let (now, asked) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let last = matches!(
                        asked.recv_timeout(every),
                        Err(RecvTimeoutError::Disconnected)
                    );
                    failing = checkpoint(&db, failing);
                    if last {
                        break;
                    }
                }
            })
            .map_err(|e| format!("checkpoint thread: {e}"))?;
        Ok(Checkpointer {
            now: Some(now),
            thread: Some(thread),
        })
    }

    /// A checkpoint now rather than at the next second: the service is about to wait
    /// for the server, and the one at exit then has less to copy.
    pub fn soon(&self) {
        if let Some(now) = &self.now {
            let _ = now.send(());
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.now.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One checkpoint; whether it failed. A failure is said once, not every second, and so
/// is the recovery: until then the WAL only grows (nothing is lost).
fn checkpoint(db: &Connection, failing: bool) -> bool {
    let done = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((frames, copied)) => {
            if failing {
                warn!("journal checkpoints work again");
            }
            if frames > 0 {
                debug!("journal checkpoint: {copied} of {frames} WAL frames");
            }
            false
        }
        Err(e) => {
            if !failing {
                warn!("journal checkpoint failed, the WAL grows until one works: {e}");
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::journal::Journal;

    #[test]
    fn the_thread_copies_the_wal_into_the_database_and_nothing_is_lost() {
        let dir = std::env::temp_dir().join(format!("triage-checkpoint-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("journal.sqlite");
        let mut journal = Journal::open(&path).unwrap();
        journal.checkpoint_in_background_every(Duration::from_millis(20));
        let before = std::fs::metadata(&path).unwrap().len();
        for uid in 1..=500 {
            journal.set_folder("INBOX", 7, uid).unwrap();
            journal
                .advance(7, uid, Some("m@x"), crate::shell::journal::State::Seen, "r")
                .unwrap();
        }
        // Only a checkpoint writes the database file (the automatic one is off): wait
        // for the thread's, with a deadline far beyond its 20 ms.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(journal);
        let again = Journal::open(&path).unwrap();
        assert_eq!(again.folder("INBOX").unwrap(), Some((7, 500)));
        assert_eq!(
            again.state(7, 500).unwrap(),
            Some(crate::shell::journal::State::Seen)
        );
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
