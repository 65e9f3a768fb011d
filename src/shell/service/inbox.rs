//! One pass over the inbox: what is new, what is our own copy coming back, what was
//! handled before under another UID; then the new messages decided in batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::deciding::Deciders;
use super::{Error, Options, Smtp};
use crate::core::config::Config;
use crate::core::plan::{hex, Plan, Playbook};
use crate::core::rules::Respond;
use crate::shell::folders::Places;
use crate::shell::journal::{Journal, MessageRef, Outbox, State};
use crate::shell::mailbox::{self, Imap, Listed};

/// Messages fetched and decided together: at most this many, and about this many
/// bytes (the RSS a backlog may cost).
const BATCH: usize = 1000;
const BATCH_BYTES: usize = 16 << 20;
/// Decisions are made durable in the journal after this many messages or this long,
/// whichever comes first: a service killed every second must still keep what it
/// decided, and after a restart the recorded plans are carried out, not made again.
const GROUP_COMMIT: usize = 25;
const GROUP_COMMIT_AFTER: std::time::Duration = std::time::Duration::from_millis(200);
/// What sends nothing is filed once this many have been decided (or the pass ends):
/// each UID MOVE costs the server a rescan of the inbox, on Maildir ~18 ms at 10,000
/// messages however few it carries. Waiting costs a plan's memory per message, not
/// its bytes.
const FILE_EVERY: usize = 5000;

/// One pass over the inbox and the state it needs between messages.
pub(super) struct Shell<'a> {
    pub book: &'a Arc<Playbook>,
    pub journal: &'a Journal,
    pub smtp: &'a Smtp,
    pub opts: &'a Options,
    pub caps: mailbox::Caps,
    pub places: &'a Places,
    /// Messages sent by this process whose own copy has not come back yet.
    pub awaiting_copies: &'a mut HashSet<String>,
    /// Message-IDs that appear more than once in the current listing.
    pub repeated_ids: HashSet<String>,
    /// The highest UID the pass's listing knew of (or the server had given out when
    /// the inbox was selected): what came in later is news for the next pass.
    pub listed_up_to: Option<u32>,
    /// Answers decided in this batch and not yet sent: the brakes count them as sent.
    pub pending: std::cell::RefCell<Pending>,
}

/// Answers decided but not yet sent, as the brakes count them.
#[derive(Default)]
pub(super) struct Pending {
    /// Messages with a reply, by (sender, category).
    pub replies: HashMap<(String, String), u32>,
    /// Messages going out (replies and forwards).
    pub outgoing: u32,
}

/// A message decided in a batch whose plan sends mail or writes a draft.
pub(super) struct Acting<'l> {
    pub item: &'l Listed,
    pub plan: Plan,
    pub raw: Vec<u8>,
    /// Its journal key (`message_key`).
    pub key: String,
}

/// Decisions coming back from the deciders, taken in the order the messages came.
struct InOrder<'l> {
    decided: Decided<'l>,
    /// Decided, waiting for the ones before them: (uid, bytes, plan, newly decided).
    ready: BTreeMap<usize, (u32, Vec<u8>, Plan, bool)>,
    /// The next in order, and how many were handed out.
    next: usize,
    sent: usize,
    /// Since the last group commit.
    since: Instant,
}

/// What deciding a fetched batch left to do, once the fetch is over.
#[derive(Default)]
struct Decided<'l> {
    quiet: Vec<Quiet>,
    acting: Vec<Acting<'l>>,
    /// How many of `quiet` and of `acting` are recorded as planned.
    recorded: (usize, usize),
    /// Copies of a Message-ID listed twice: looked at one at a time, after the rest.
    repeated: Vec<(&'l Listed, Vec<u8>)>,
    fetched: HashSet<u32>,
}

/// A message decided and fetched, waiting to be filed with others of its group.
pub(super) struct Quiet {
    pub uid: u32,
    pub size: u32,
    pub plan: Plan,
    /// Its bytes until its decision is recorded; then let go while it waits.
    pub raw: Vec<u8>,
    pub key: String,
}

impl Quiet {
    fn new(at: MessageRef, size: u32, plan: Plan, raw: Vec<u8>) -> Quiet {
        let key = message_key(&plan, Some(&raw), at);
        Quiet {
            uid: at.uid,
            size,
            plan,
            raw,
            key,
        }
    }
}

/// The journal's key for a message: its Message-ID, or for mail without one a digest of
/// its bytes (or its place, when it was too big to download), so that two such messages
/// never share outgoing Message-IDs.
pub(super) fn message_key(plan: &Plan, raw: Option<&[u8]>, at: MessageRef) -> String {
    if let Some(id) = &plan.message_id {
        return id.clone();
    }
    match raw {
        Some(raw) => format!("sha256-{}@triage.invalid", &hex(&Sha256::digest(raw))[..32]),
        None => format!("uid-{}-{}@triage.invalid", at.uidvalidity, at.uid),
    }
}

impl Shell<'_> {
    pub fn config(&self) -> &Config {
        &self.book.config
    }

    /// The IMAP timeout, in seconds.
    pub fn t(&self) -> u64 {
        self.config()
            .imap
            .as_ref()
            .expect("checked")
            .timeout_seconds
    }

    pub async fn drain(&mut self, session: &mut Imap) -> Result<(), Error> {
        let t = self.t();
        let inbox = self.config().folders.inbox.clone();
        let journal = self.journal;
        let mb = mailbox::select(session, &inbox, t).await?;
        let uidvalidity = mb.uid_validity.unwrap_or(0);
        let setting = self.config().limits.circuit_breaker.setting();
        self.opts
            .health
            .breaker(journal.breaker_open(&setting)?.is_some());
        if let Some((v, _)) = journal.folder(&inbox)? {
            if v != uidvalidity {
                warn!("{inbox}: UIDVALIDITY changed from {v} to {uidvalidity}; re-reading it, and mail handled before is recognised by Message-ID");
            }
        }
        // Messages left for a human stay in the inbox; the journal says they are done.
        let started = Instant::now();
        let list = mailbox::listing(session, t).await?;
        let given_out = mb.uid_next.map_or(0, |n| n.saturating_sub(1));
        self.listed_up_to = Some(list.iter().map(|i| i.uid).fold(given_out, u32::max));
        debug!(
            "{inbox}: {} messages listed in {:?}",
            list.len(),
            started.elapsed()
        );
        settle_vanished(journal, &inbox, uidvalidity, &list)?;
        self.repeated_ids = repeated_ids(&list);
        let mut todo = Vec::new();
        let mut own_copies = Vec::new();
        for item in list {
            if self.opts.stopping() {
                return Ok(());
            }
            if self.own_copy(&item)? {
                // Without UIDPLUS a copy stays, marked \Deleted: not marked again. With
                // it, one already marked (a run killed between the STORE and the UID
                // EXPUNGE) is expunged now, not left in the inbox for ever.
                if !item.deleted || self.caps.uidplus {
                    own_copies.push(item.uid);
                }
                continue;
            }
            let at = MessageRef::new(&inbox, uidvalidity, item.uid);
            if self.needs_work(session, at, &item).await? {
                todo.push(item);
            }
        }
        debug!("{} to do, looked up in {:?}", todo.len(), started.elapsed());
        // The receipts are recorded; the copies themselves go in one step.
        mailbox::delete_many(session, &own_copies, self.caps.uidplus, t).await?;
        self.work_through(session, &inbox, uidvalidity, todo)
            .await?;
        journal.set_folder(&inbox, uidvalidity, 0)?;
        Ok(())
    }

    /// Our own copy of a message we sent: the server's receipt, recorded as such.
    fn own_copy(&mut self, item: &Listed) -> Result<bool, Error> {
        let Some(id) = &item.message_id else {
            return Ok(false);
        };
        let ours = format!("<{id}>");
        let Some(state) = self.journal.outbox_state(&ours)? else {
            return Ok(false);
        };
        if matches!(state, Outbox::Committing | Outbox::Sending) {
            self.journal.set_outbox(&ours, None, Outbox::Received)?;
        }
        self.awaiting_copies.remove(&ours);
        debug!(uid = item.uid, "own copy of {ours} received");
        Ok(true)
    }

    /// Whether a listed message still needs deciding or finishing.
    async fn needs_work(
        &mut self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
    ) -> Result<bool, Error> {
        match self.journal.state(at.uidvalidity, at.uid)? {
            Some(state) if state.is_final() => return Ok(false),
            Some(_) => {}
            None => {
                if self.seen_elsewhere(session, at, item).await? {
                    return Ok(false);
                }
            }
        }
        Ok(!(self.opts.shadow && self.journal.shadowed(at.uidvalidity, at.uid)?))
    }

    /// A message this journal knows by Message-ID from another UID: a restored copy
    /// carries its final state over; another message reusing the Message-ID (a broken
    /// mailer, a script) is left for a human, never skipped and never answered by
    /// guesswork. True when the message needs nothing more.
    pub async fn seen_elsewhere(
        &mut self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
    ) -> Result<bool, Error> {
        let journal = self.journal;
        let Some(id) = &item.message_id else {
            return Ok(false);
        };
        let Some((state, same)) = journal.seen_before(id, item.size)? else {
            return Ok(false);
        };
        if !state.is_final() {
            return Ok(false);
        }
        if same {
            journal.advance(
                at.uidvalidity,
                at.uid,
                Some(id),
                state,
                None,
                "handled before under another UID",
            )?;
            info!(
                uid = at.uid,
                "{id}: handled before under another UID; left as it is"
            );
            return Ok(true);
        }
        let reason = format!(
            "another message with the Message-ID <{id}> was handled before, with a different size ({} bytes here)",
            item.size
        );
        let plan = Plan::for_human(Some(id.clone()), reason.clone(), self.config());
        journal.advance(
            at.uidvalidity,
            at.uid,
            Some(id),
            State::Planned,
            Some(&plan),
            &reason,
        )?;
        journal.set_size(at.uidvalidity, at.uid, item.size)?;
        if self.opts.shadow {
            self.record_shadow(at, &plan)?;
        } else {
            self.leave_for_human(session, at, id, &plan, reason, None)
                .await?;
        }
        Ok(true)
    }

    /// Shadow mode: the decision recorded, nothing done.
    pub fn record_shadow(&self, at: MessageRef, plan: &Plan) -> Result<(), Error> {
        self.journal.audit(at, plan, "shadow", "")?;
        self.opts.health.message(plan.category.as_str(), "shadow");
        info!(uid = at.uid, category = %plan.category, respond = ?plan.respond, "shadow: {}", plan.reason);
        Ok(())
    }

    /// Decides the messages in batches: one UID FETCH per batch, each message decided as
    /// it arrives; what sends nothing (filed, or left for a human) recorded in group
    /// commits and flagged or moved with one UID STORE / UID MOVE per folder for every
    /// `FILE_EVERY` of them, and for the rest at the end.
    async fn work_through(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        todo: Vec<Listed>,
    ) -> Result<(), Error> {
        let limit = self.config().limits.max_message_bytes;
        let mut unfiled: Vec<Quiet> = Vec::new();
        for chunk in batches(&todo, limit) {
            if self.opts.stopping() {
                break;
            }
            if self.opts.shadow {
                for item in chunk {
                    let at = MessageRef::new(inbox, uidvalidity, item.uid);
                    self.handle(session, at, item, None).await?;
                }
                continue;
            }
            let quiet = self
                .work_through_batch(session, inbox, uidvalidity, chunk)
                .await?;
            unfiled.extend(quiet);
            if unfiled.len() >= FILE_EVERY {
                self.file_unfiled(session, inbox, uidvalidity, &mut unfiled)
                    .await?;
            }
        }
        // Also when stopping: what was decided is filed before the service goes.
        self.file_unfiled(session, inbox, uidvalidity, &mut unfiled)
            .await
    }

    async fn file_unfiled(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        unfiled: &mut Vec<Quiet>,
    ) -> Result<(), Error> {
        if unfiled.is_empty() {
            return Ok(());
        }
        let (quiet, started) = (std::mem::take(unfiled), Instant::now());
        let n = quiet.len();
        self.file_quietly(session, inbox, uidvalidity, quiet)
            .await?;
        debug!("{n} messages filed in {:?}", started.elapsed());
        Ok(())
    }

    /// One batch fetched, decided and its answers sent; what sends nothing comes back
    /// recorded as planned, to be filed with the next batches'.
    async fn work_through_batch(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        chunk: &[Listed],
    ) -> Result<Vec<Quiet>, Error> {
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        let started = Instant::now();
        let decided = self.decide_batch(session, uidvalidity, chunk).await?;
        debug!(
            "{} messages fetched and decided in {:?}",
            chunk.len(),
            started.elapsed()
        );
        let Decided {
            mut quiet,
            recorded,
            acting,
            repeated,
            fetched,
        } = decided;
        self.record_decided(uidvalidity, &quiet[recorded.0..], &acting[recorded.1..])?;
        // Oversized (or gone meanwhile): the one-at-a-time path says why.
        for item in chunk.iter().filter(|i| !fetched.contains(&i.uid)) {
            if self.opts.stopping() {
                break;
            }
            self.handle(session, at(item.uid), item, None).await?;
        }
        let answered = self.answer_all(session, inbox, uidvalidity, acting).await;
        self.pending.take();
        answered?;
        for (item, raw) in repeated {
            if self.opts.stopping() {
                break;
            }
            if self
                .handled_earlier_in_pass(session, at(item.uid), item)
                .await?
            {
                continue;
            }
            let plan = self.plan_for(at(item.uid), &raw)?;
            if acts(&plan) {
                self.handle(session, at(item.uid), item, Some((plan, raw)))
                    .await?;
            } else {
                quiet.push(Quiet::new(at(item.uid), item.size, plan, raw));
                self.record_decided(uidvalidity, &quiet[quiet.len() - 1..], &[])?;
            }
        }
        for q in &mut quiet {
            q.raw = Vec::new();
        }
        Ok(quiet)
    }

    /// The batch fetched and decided as it arrives (by the deciders, while the fetch goes
    /// on), the brakes applied in arrival order, decisions recorded by group.
    async fn decide_batch<'l>(
        &self,
        session: &mut Imap,
        uidvalidity: u32,
        chunk: &'l [Listed],
    ) -> Result<Decided<'l>, Error> {
        let limit = self.config().limits.max_message_bytes;
        let by_uid: HashMap<u32, &Listed> = chunk
            .iter()
            .filter(|i| i.size as usize <= limit)
            .map(|i| (i.uid, i))
            .collect();
        let wanted: Vec<u32> = chunk
            .iter()
            .map(|i| i.uid)
            .filter(|u| by_uid.contains_key(u))
            .collect();
        let mut order = InOrder {
            decided: Decided::default(),
            ready: BTreeMap::new(),
            next: 0,
            sent: 0,
            since: Instant::now(),
        };
        let deciders = Deciders::start(self.book);
        let result = mailbox::fetch_each(session, &wanted, self.t(), |uid, raw| {
            if self.opts.stopping() {
                return Ok(());
            }
            let item = by_uid[&uid];
            order.decided.fetched.insert(uid);
            if item
                .message_id
                .as_ref()
                .is_some_and(|id| self.repeated_ids.contains(id))
            {
                order.decided.repeated.push((item, raw));
                return Ok(());
            }
            let seq = order.sent;
            order.sent += 1;
            match self.stored_plan(uidvalidity, uid)? {
                Some(plan) => {
                    order.ready.insert(seq, (uid, raw, plan, false));
                }
                None => deciders.submit(seq, uid, raw),
            }
            for (seq, uid, raw, plan) in deciders.ready() {
                order.ready.insert(seq, (uid, raw, plan, true));
            }
            self.take_in_order(&mut order, &by_uid, uidvalidity)
        })
        .await?;
        result?;
        for (seq, uid, raw, plan) in deciders.finish() {
            order.ready.insert(seq, (uid, raw, plan, true));
        }
        self.take_in_order(&mut order, &by_uid, uidvalidity)?;
        // A decider that died leaves its messages for the next pass, said here.
        if order.next < order.sent {
            warn!(
                "{} message(s) of this batch were not decided; the next pass takes them",
                order.sent - order.next
            );
        }
        Ok(order.decided)
    }

    /// Decisions taken in the order the messages came: brakes applied to new ones, each
    /// sorted into quiet or acting, recorded by count and time (group commit).
    fn take_in_order<'l>(
        &self,
        order: &mut InOrder<'l>,
        by_uid: &HashMap<u32, &'l Listed>,
        uidvalidity: u32,
    ) -> Result<(), Error> {
        while let Some((uid, raw, mut plan, new)) = order.ready.remove(&order.next) {
            order.next += 1;
            if new {
                self.restrain(&mut plan)?;
                plan.made_in_shadow = self.opts.shadow;
            }
            let item = by_uid[&uid];
            let decided = &mut order.decided;
            let at = MessageRef::new(&self.config().folders.inbox, uidvalidity, uid);
            let key = message_key(&plan, Some(&raw), at);
            if acts(&plan) {
                self.count_pending(&plan);
                decided.acting.push(Acting {
                    item,
                    plan,
                    raw,
                    key,
                });
            } else {
                decided.quiet.push(Quiet {
                    uid,
                    size: item.size,
                    plan,
                    raw,
                    key,
                });
            }
            let (q, a) = decided.recorded;
            let (quiet, acting) = (&decided.quiet[q..], &decided.acting[a..]);
            if quiet.len() + acting.len() >= GROUP_COMMIT
                || order.since.elapsed() >= GROUP_COMMIT_AFTER
            {
                self.record_decided(uidvalidity, quiet, acting)?;
                decided.recorded = (decided.quiet.len(), decided.acting.len());
                order.since = Instant::now();
            }
        }
        Ok(())
    }

    /// Decisions made durable: after a restart they are carried out, not made again.
    fn record_decided(
        &self,
        uidvalidity: u32,
        quiet: &[Quiet],
        acting: &[Acting],
    ) -> Result<(), Error> {
        let quiet = quiet
            .iter()
            .map(|q| (q.uid, q.size, q.key.as_str(), &q.plan, q.raw.as_slice()));
        let acting = acting.iter().map(|a| {
            let Acting { item, key, .. } = a;
            (item.uid, item.size, key.as_str(), &a.plan, a.raw.as_slice())
        });
        self.record_group_planned(uidvalidity, quiet.chain(acting))
    }

    /// The brakes of the plans decided after this one count its answers as sent.
    fn count_pending(&self, plan: &Plan) {
        if plan.respond != Respond::Auto {
            return;
        }
        let mut pending = self.pending.borrow_mut();
        pending.outgoing += plan.outgoing.len() as u32;
        let replies = plan
            .outgoing
            .iter()
            .any(|o| o.kind == crate::core::plan::Kind::Reply);
        if let (true, Some(from)) = (replies, &plan.from) {
            let key = (from.clone(), plan.category.as_str().to_string());
            *pending.replies.entry(key).or_insert(0) += 1;
        }
    }

    /// A copy handled earlier in this same pass (same Message-ID, listed more than once)
    /// is known now.
    async fn handled_earlier_in_pass(
        &mut self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
    ) -> Result<bool, Error> {
        Ok(self.journal.state(at.uidvalidity, at.uid)?.is_none()
            && self.seen_elsewhere(session, at, item).await?)
    }

    /// The plan made before a crash, executed as it was; else a new decision, with the
    /// brakes that need history applied once. A plan made in shadow mode is not carried
    /// out live: its brakes counted no answers (a backlog shadowed, then gone live,
    /// would otherwise all be answered at once).
    pub fn plan_for(&self, at: MessageRef, raw: &[u8]) -> Result<Plan, Error> {
        if let Some(plan) = self.stored_plan(at.uidvalidity, at.uid)? {
            return Ok(plan);
        }
        let mut plan = self.book.decide(raw);
        self.restrain(&mut plan)?;
        plan.made_in_shadow = self.opts.shadow;
        Ok(plan)
    }

    /// The plan recorded before a crash, when it is to be carried out as it was.
    fn stored_plan(&self, uidvalidity: u32, uid: u32) -> Result<Option<Plan>, Error> {
        let plan = self.journal.plan(uidvalidity, uid)?;
        Ok(plan.filter(|p| self.opts.shadow || !p.made_in_shadow))
    }
}

/// The to-do list in batches of at most BATCH messages and about BATCH_BYTES (messages
/// over the size limit are not downloaded and count nothing).
fn batches(todo: &[Listed], limit: usize) -> Vec<&[Listed]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, item) in todo.iter().enumerate() {
        let size = item.size as usize;
        let size = if size > limit { 0 } else { size };
        if i > start && (i - start >= BATCH || bytes + size > BATCH_BYTES) {
            out.push(&todo[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < todo.len() {
        out.push(&todo[start..]);
    }
    out
}

/// A plan that sends mail or writes drafts.
fn acts(plan: &Plan) -> bool {
    matches!(plan.respond, Respond::Auto | Respond::Draft) && !plan.outgoing.is_empty()
}

/// Message-IDs listed more than once: only those need a second look when their turn
/// comes (a copy earlier in this same pass may have been handled by then).
fn repeated_ids(list: &[Listed]) -> HashSet<String> {
    let mut ids: HashMap<&String, u32> = HashMap::new();
    for id in list.iter().filter_map(|item| item.message_id.as_ref()) {
        *ids.entry(id).or_insert(0) += 1;
    }
    ids.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| id.clone())
        .collect()
}

/// A message whose last step was moving it out of the inbox, killed before the journal
/// heard of the move, is no longer listed: its filing happened. Record that.
fn settle_vanished(
    journal: &Journal,
    inbox: &str,
    uidvalidity: u32,
    list: &[Listed],
) -> Result<(), Error> {
    let present: HashSet<u32> = list.iter().map(|l| l.uid).collect();
    for (uid, state, plan) in journal.unfinished(uidvalidity)? {
        let Some(plan) = plan.filter(|_| !present.contains(&uid)) else {
            continue;
        };
        let nothing_to_send = plan.respond != Respond::Auto || plan.outgoing.is_empty();
        let (to, reason) = if state >= State::Sent || nothing_to_send {
            let to = if plan.original.human {
                State::Human
            } else {
                State::Filed
            };
            (to, plan.reason.clone())
        } else {
            (
                State::Human,
                "the message left the inbox before its answer was sent".to_string(),
            )
        };
        let outcome = if to == State::Human {
            "left for human"
        } else {
            "filed"
        };
        let at = MessageRef::new(inbox, uidvalidity, uid);
        journal.conclude(
            at,
            plan.message_id.as_deref(),
            to,
            &plan,
            &reason,
            outcome,
            "recorded after a restart",
            None,
        )?;
        info!(uid, "{outcome} (recorded after a restart)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(sizes: &[u32]) -> Vec<Listed> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| Listed {
                uid: i as u32 + 1,
                size,
                message_id: None,
                deleted: false,
            })
            .collect()
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes_and_lose_nothing() {
        let limit = 25 << 20;
        let many = listed(&vec![1000; 2500]);
        let b = batches(&many, limit);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );

        // 6 MiB each: two fit in 16 MiB, a third does not; one over the size limit
        // (never downloaded) costs nothing.
        let big = listed(&[6 << 20, 6 << 20, 6 << 20, 30 << 20, 1]);
        let b = batches(&big, limit);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), [2, 3]);

        // One message bigger than a batch still gets a batch of its own.
        let huge = listed(&[20 << 20, 20 << 20]);
        assert_eq!(batches(&huge, limit).len(), 2);
        assert!(batches(&[], limit).is_empty());
    }
}
