//! A backlog's filing on an IMAP session of its own: while the server moves one group
//! of decided messages (seconds on a large inbox, the service idle meanwhile), the main
//! session fetches and decides the next batches. The journal is still written on the
//! main task only, after the server has moved the group, as on one session: a kill in
//! between repeats harmless moves, and what already left the inbox is settled at the
//! next start. Without a second session (refused, or `imap.connections: 1`) the group
//! is filed on the main session, as before.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::filing::FilingOrder;
use super::inbox::{Quiet, Shell};
use super::Error;
use crate::shell::mailbox::{self, Imap, Trouble};

/// The last group of a pass is filed in parts of this many when a second session
/// can take some. Smaller parts share better but cost a UID MOVE per folder each: in
/// the 10,000 sort, parts of 2,000 and 3,000 both beat 1,000 in 6 of 7 A/B pairs.
const PART: usize = 3000;
/// Outcomes recorded in one go before the other session's part gets its turn.
const RECORD_TURN: usize = 500;

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
    /// A second session still signing in is not idle: filing then would hold the next
    /// batch until its login and SELECT are done (a slow login server's whole delay).
    pub fn due(&self, unfiled: usize, soon: usize, every: usize) -> bool {
        let idle = match (&self.moving, &self.opening) {
            (Some((_, task)), _) => task.is_finished(),
            (None, Some(opening)) => opening.is_finished(),
            (None, None) => !self.unavailable,
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
                    // Recorded on the main task when the whole group is back.
                    let refused = order.carry_out(&mut second, |_| {}).await;
                    debug!(
                        "{n} messages flagged and moved in {:?} (second session)",
                        started.elapsed()
                    );
                    (second, order, refused)
                });
                filer.moving = Some((quiet, task));
                // On this one-thread runtime the task runs only when this one waits:
                // let it send its commands before the records below take the thread.
                tokio::task::yield_now().await;
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

    /// The pass is over: its last group is filed in parts, the main session taking
    /// them from the front and the second, once its own filing is done and recorded,
    /// from the back (the service has nothing else to do by now, the server two
    /// processes). Each part is recorded as soon as it is moved, while the other
    /// session still moves; then the second session is closed.
    pub(super) async fn close_filer(
        &self,
        mut filer: Filer,
        session: &mut Imap,
        uidvalidity: u32,
        last: Vec<Quiet>,
    ) -> Result<(), Error> {
        let helped = filer.session.is_some() || filer.moving.is_some() || filer.opening.is_some();
        if helped {
            // A backlog's last parts move now: its WAL so far is copied meanwhile. (A
            // pass of a few messages leaves that to the thread's next second.)
            self.journal.checkpoint_soon();
        }
        let part = if helped { PART } else { last.len().max(1) };
        let last = RefCell::new(VecDeque::from(last));
        let next = |front: bool| take_part(&mut last.borrow_mut(), part, front);
        // The main session is polled first: its command goes out before any record.
        let (mine, theirs) = tokio::join!(
            biased;
            async {
                while let Some(part) = next(true) {
                    self.file_and_record(session, uidvalidity, part, "").await?;
                }
                Ok::<(), Error>(())
            },
            async {
                if let Some((quiet, order, refused)) = finish_moving(&mut filer).await? {
                    self.record_filed_in_turns(uidvalidity, quiet, &order, refused)
                        .await?;
                    // Copied (and synced to disk) while the last parts still move, not
                    // at exit: that checkpoint then copies ~1,800 frames, not ~7,000.
                    self.journal.checkpoint_soon();
                }
                let Some(mut second) = self.second_if_opened(&mut filer).await else {
                    return Ok::<(), Error>(());
                };
                while let Some(part) = next(false) {
                    let which = " (second session)";
                    self.file_and_record(&mut second, uidvalidity, part, which).await?;
                }
                filer.session = Some(second);
                Ok(())
            },
        );
        if helped {
            // Everything is recorded: the last copy runs while the sessions log out.
            self.journal.checkpoint_soon();
        }
        if let Some(mut s) = filer.session.take() {
            let t = Duration::from_secs(self.t());
            let _ = tokio::time::timeout(t, s.logout()).await;
        }
        theirs?;
        mine
    }

    /// The second session if it is open (its login done); None, without opening or
    /// waiting for one, otherwise. One still opening is aborted with the filer.
    async fn second_if_opened(&self, filer: &mut Filer) -> Option<Imap> {
        let opened = filer
            .opening
            .as_ref()
            .is_some_and(|task| task.is_finished());
        if filer.session.is_none() && !opened {
            return None;
        }
        self.second_session(filer).await
    }

    /// A filing's outcomes recorded `RECORD_TURN` at a time, letting the main session
    /// go on between them: 5,000 at once held the one-thread runtime for ~80 ms while
    /// the part that session had moved waited to be recorded and the next to be sent.
    async fn record_filed_in_turns(
        &self,
        uidvalidity: u32,
        quiet: Vec<Quiet>,
        order: &FilingOrder,
        refused: HashMap<u32, String>,
    ) -> Result<(), Error> {
        let mut quiet = VecDeque::from(quiet);
        while let Some(turn) = take_part(&mut quiet, RECORD_TURN, false) {
            self.record_filed(uidvalidity, turn, order, refused.clone())?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// A group flagged and moved on this session, then its outcomes recorded.
    pub(super) async fn file_and_record(
        &self,
        session: &mut Imap,
        uidvalidity: u32,
        quiet: Vec<Quiet>,
        which: &str,
    ) -> Result<(), Error> {
        if quiet.is_empty() {
            return Ok(());
        }
        let order = self.filing_order(&quiet);
        let started = std::time::Instant::now();
        let n = quiet.len();
        // Each folder's messages recorded as the server answers its move, while it moves
        // the next: only the last folder's records are left when the last answer comes.
        let (mut waiting, mut failed) = (quiet, None);
        let refused = order
            .carry_out(session, |uids| {
                if failed.is_none() {
                    let filed: HashSet<u32> = uids.iter().copied().collect();
                    let (now, later) = std::mem::take(&mut waiting)
                        .into_iter()
                        .partition(|q| filed.contains(&q.uid));
                    waiting = later;
                    failed = self
                        .record_filed(uidvalidity, now, &order, HashMap::new())
                        .err();
                }
            })
            .await?;
        debug!(
            "{n} messages flagged and moved in {:?}{which}",
            started.elapsed()
        );
        if let Some(e) = failed {
            return Err(e);
        }
        self.record_filed(uidvalidity, waiting, &order, refused)
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

/// Up to `n` messages from the front or the back of the group, in a Vec of their own.
/// Only those are copied: a whole group cut up at once held its plans twice (peak RSS
/// 58 -> 70 MiB in the 10,000 sort).
fn take_part(group: &mut VecDeque<Quiet>, n: usize, front: bool) -> Option<Vec<Quiet>> {
    if group.is_empty() {
        return None;
    }
    let n = n.min(group.len());
    let at = if front { 0 } else { group.len() - n };
    Some(group.drain(at..at + n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second session is opened while the first batches are decided; until its
    /// login and SELECT are done, the decided messages wait (up to `every`) rather than
    /// holding the next batch.
    #[test]
    fn a_session_still_signing_in_is_not_idle() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (done, signed_in) = tokio::sync::oneshot::channel::<()>();
            let mut filer = Filer::new(2);
            filer.opening = Some(tokio::spawn(async move {
                let _ = signed_in.await;
                Err(Trouble::Broken("not a real session".into()))
            }));
            tokio::task::yield_now().await;
            assert!(!filer.due(1000, 1000, 5000), "filed while signing in");
            assert!(filer.due(5000, 1000, 5000), "what waits is bounded");
            done.send(()).unwrap();
            while !filer.opening.as_ref().unwrap().is_finished() {
                tokio::task::yield_now().await;
            }
            assert!(filer.due(1000, 1000, 5000), "not filed once signed in");
            assert!(
                !Filer::new(1).due(1000, 1000, 5000),
                "one session files at `every`"
            );
        });
    }
}
