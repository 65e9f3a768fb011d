//! A backlog's filing on an IMAP session of its own: while the server moves one group
//! of decided messages (seconds on a large inbox, the service idle meanwhile), the main
//! session fetches and decides the next batches. The journal is still written on the
//! main task only, after the server has moved the group, as on one session: a kill in
//! between repeats harmless moves, and what already left the inbox is settled at the
//! next start. Without a second session (refused, or `imap.connections: 1`) the group
//! is filed on the main session, as before.

use std::collections::HashMap;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::filing::FilingOrder;
use super::inbox::{Quiet, Shell};
use super::Error;
use crate::shell::mailbox::{self, Imap, Trouble};

/// What the filing session's task hands back: the session, the order, and what the
/// server refused.
type Carried = (Imap, FilingOrder, Result<HashMap<u32, String>, Trouble>);

/// The second session of a pass and the filing it is carrying out, if any.
pub(super) struct Filer {
    session: Option<Imap>,
    /// Switched off (`imap.connections: 1`), or tried and not available for this pass:
    /// everything on the main session.
    unavailable: bool,
    moving: Option<(Vec<Quiet>, JoinHandle<Carried>)>,
    /// The second session being opened while the first batch is fetched and decided
    /// (its login and SELECT took the first filing's place in the pass).
    opening: Option<JoinHandle<Result<Imap, Trouble>>>,
}

impl Filer {
    pub fn new(connections: u32) -> Filer {
        Filer {
            session: None,
            unavailable: connections < 2,
            moving: None,
            opening: None,
        }
    }

    /// Whether `unfiled` decided messages are to be filed now: at `every` in any case
    /// (what waits costs memory); at `soon` when the second session has nothing to do,
    /// so that the server moves while the service decides, and little is left at the end.
    pub fn due(&self, unfiled: usize, soon: usize, every: usize) -> bool {
        let idle = match &self.moving {
            Some((_, task)) => task.is_finished(),
            None => !self.unavailable,
        };
        unfiled >= every || (idle && unfiled >= soon)
    }
}

impl Drop for Filer {
    /// A pass that ends on an error leaves no move running behind it (as a kill would).
    fn drop(&mut self) {
        if let Some((_, task)) = &self.moving {
            task.abort();
        }
        if let Some(task) = &self.opening {
            task.abort();
        }
    }
}

impl Shell<'_> {
    /// Files the group on the second session, in the background; then records the
    /// outcomes of the filing before it while the server moves this one. On the main
    /// session when there is no second one.
    pub(super) async fn file_behind(
        &mut self,
        filer: &mut Filer,
        session: &mut Imap,
        uidvalidity: u32,
        quiet: Vec<Quiet>,
    ) -> Result<(), Error> {
        let moved = finish_moving(filer).await?;
        match self.second_session(filer).await {
            Some(mut second) => {
                let order = self.filing_order(&quiet);
                let n = quiet.len();
                let task = tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let refused = order.carry_out(&mut second).await;
                    debug!(
                        "{n} messages flagged and moved in {:?} (second session)",
                        started.elapsed()
                    );
                    (second, order, refused)
                });
                filer.moving = Some((quiet, task));
            }
            None => {
                self.file_quietly(session, uidvalidity, quiet).await?;
            }
        }
        match moved {
            Some((quiet, order, refused)) => self.record_filed(uidvalidity, quiet, &order, refused),
            None => Ok(()),
        }
    }

    /// Starts opening the second session, in the background, for a pass that will
    /// file while it decides.
    pub(super) fn open_early(&self, filer: &mut Filer) {
        if filer.unavailable || filer.session.is_some() || filer.opening.is_some() {
            return;
        }
        let cfg = self.config().imap.clone().expect("checked");
        let (sign_in, t) = (self.imap_in.clone(), self.t());
        let inbox = self.config().folders.inbox.clone();
        filer.opening = Some(tokio::spawn(async move {
            let mut s = mailbox::connect(&cfg, &sign_in).await?;
            mailbox::select(&mut s, &inbox, t).await?;
            Ok(s)
        }));
    }

    /// The second session, opened with the inbox selected on first use (or taken from
    /// `open_early`).
    async fn second_session(&self, filer: &mut Filer) -> Option<Imap> {
        if let Some(s) = filer.session.take() {
            return Some(s);
        }
        if filer.unavailable {
            return None;
        }
        self.open_early(filer);
        let task = filer.opening.take().expect("just started");
        let opened = task
            .await
            .unwrap_or_else(|e| Err(Trouble::Broken(format!("opening the filing session: {e}"))));
        match opened {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("a second IMAP session for filing is not available ({e}); filing on the main one");
                filer.unavailable = true;
                None
            }
        }
    }

    /// The pass is over: its last group moved on the main session while the second
    /// one finishes its own (the service has nothing else to do by now, the server
    /// two processes), both recorded, the second session closed.
    pub(super) async fn close_filer(
        &self,
        mut filer: Filer,
        session: &mut Imap,
        uidvalidity: u32,
        last: Vec<Quiet>,
    ) -> Result<(), Error> {
        let order = self.filing_order(&last);
        let started = std::time::Instant::now();
        // The second session's outcomes are recorded while the main one still moves.
        let behind = async {
            match finish_moving(&mut filer).await? {
                Some((quiet, order, refused)) => {
                    self.record_filed(uidvalidity, quiet, &order, refused)
                }
                None => Ok(()),
            }
        };
        let (behind, refused) = tokio::join!(behind, order.carry_out(session));
        if !last.is_empty() {
            debug!(
                "{} messages flagged and moved in {:?}",
                last.len(),
                started.elapsed()
            );
        }
        // Opened early and never needed (nothing quiet, or a stop): closed all the same.
        // Still opening: dropped (aborted) with the filer, not waited for.
        if let Some(task) = filer.opening.take_if(|task| task.is_finished()) {
            if let Ok(Ok(s)) = task.await {
                filer.session = Some(s);
            }
        }
        if let Some(mut s) = filer.session.take() {
            let t = Duration::from_secs(self.t());
            let _ = tokio::time::timeout(t, s.logout()).await;
        }
        behind?;
        self.record_filed(uidvalidity, last, &order, refused?)
    }
}

/// Waits for the filing in flight, if any: the session back in the filer (unless it
/// broke), the outcomes to record.
async fn finish_moving(
    filer: &mut Filer,
) -> Result<Option<(Vec<Quiet>, FilingOrder, HashMap<u32, String>)>, Error> {
    let Some((quiet, task)) = filer.moving.take() else {
        return Ok(None);
    };
    let (second, order, refused) = task
        .await
        .map_err(|e| Error::Imap(Trouble::Broken(format!("filing session: {e}"))))?;
    // A broken session is dropped; the next group opens another.
    let refused = refused?;
    filer.session = Some(second);
    Ok(Some((quiet, order, refused)))
}
