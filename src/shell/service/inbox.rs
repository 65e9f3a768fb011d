//! One pass over the inbox: what is new, what is our own copy coming back, what was
//! handled before under another UID; then the new messages decided in batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::deciding::{Deciders, Done};
use super::filer::Filer;
use super::filing::Planned;
use super::{Error, Options, Smtp};
use crate::core::config::Config;
use crate::core::message::Mail;
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
/// 500 rather than 25 or 200: fewer commits, each writing its dirty pages (the
/// Message-ID index's scattered leaves among them) to the WAL once (the 10,000 sort,
/// 7 A/B pairs against 200: medians 0.82/0.86 s); the 200 ms bound keeps it prompt.
const GROUP_COMMIT: usize = 500;
const GROUP_COMMIT_AFTER: std::time::Duration = std::time::Duration::from_millis(200);
/// What sends nothing is filed once this many have been decided (or the pass ends):
/// each UID MOVE costs the server a rescan of the inbox, on Maildir ~18 ms at 10,000
/// messages however few it carries. Waiting costs a plan's memory per message, not
/// its bytes.
const FILE_EVERY: usize = 5000;
/// With a second session (`imap.connections: 2`), filed as soon as it is free and
/// this many wait: the server moves while the service decides, and little is left
/// for the end of the pass.
const FILE_SOON: usize = 1000;
/// Messages fetched are looked up in the journal (own copy? repeat?) this many at a
/// time, in one read transaction: a few milliseconds of fetching.
const LOOK_GROUP: usize = 32;

/// One pass over the inbox and the state it needs between messages.
pub(super) struct Shell<'a> {
    pub book: &'a Arc<Playbook>,
    pub journal: &'a Journal,
    pub smtp: &'a Smtp,
    /// How to sign in to IMAP again: a second session files a backlog.
    pub imap_in: &'a crate::shell::oauth::SignIn,
    pub opts: &'a Options,
    pub caps: mailbox::Caps,
    pub places: &'a Places,
    /// Messages sent by this process whose own copy has not come back yet.
    pub awaiting_copies: &'a mut HashSet<String>,
    /// Message-IDs met in this pass: a second copy waits for the first to be handled.
    pub ids_in_pass: std::cell::RefCell<HashSet<String>>,
    /// UIDs of this pass the journal knows, not finished: only these can have a plan
    /// from before (one lookup at listing instead of two per message).
    pub in_journal: HashSet<u32>,
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

/// What a fetched message is, before it is decided.
pub(super) enum Look {
    New,
    /// Our own copy of a message we sent, come back through the server.
    OwnCopy,
    /// Its Message-ID was met before: looked at after the rest of its batch.
    Again,
}

/// A message decided in a batch whose plan sends mail or writes a draft.
pub(super) struct Acting<'l> {
    pub item: &'l Listed,
    pub plan: Plan,
    pub raw: Vec<u8>,
    /// Its journal key (`message_key`).
    pub key: String,
    /// Where its bytes were kept, if the decider kept them.
    pub kept: Option<String>,
}

/// Decisions coming back from the deciders, taken in the order the messages came.
struct InOrder<'l> {
    decided: Decided<'l>,
    /// Decided, waiting for the ones before them.
    ready: BTreeMap<usize, Ready>,
    /// The next in order, and how many were handed out.
    next: usize,
    sent: usize,
    /// Since the last group commit.
    since: Instant,
}

/// A decision waiting for its turn.
struct Ready {
    uid: u32,
    raw: Vec<u8>,
    plan: Plan,
    /// Made now (else carried over from before a restart): the brakes still apply.
    new: bool,
    /// Where its bytes were kept, if the decider kept them.
    kept: Option<String>,
}

impl From<Done> for Ready {
    fn from(d: Done) -> Ready {
        let Done {
            uid,
            raw,
            plan,
            kept,
            ..
        } = d;
        Ready {
            uid,
            raw,
            plan,
            new: true,
            kept,
        }
    }
}

/// What deciding a fetched batch left to do, once the fetch is over.
#[derive(Default)]
struct Decided<'l> {
    quiet: Vec<Quiet>,
    acting: Vec<Acting<'l>>,
    /// How many of `quiet` and of `acting` are recorded as planned.
    recorded: (usize, usize),
    /// Copies of a Message-ID met before (in this pass, or handled under another UID):
    /// looked at one at a time, after the rest.
    repeated: Vec<(Listed, Vec<u8>)>,
    /// Our own copies come back.
    own_copies: Vec<Listed>,
    fetched: HashSet<u32>,
}

/// A message decided and fetched, waiting to be filed with others of its group.
pub(super) struct Quiet {
    pub uid: u32,
    pub size: u32,
    /// Boxed: thousands wait to be filed, and a Vec of them grows by copying.
    pub plan: Box<Plan>,
    /// Its bytes until its decision is recorded; then let go while it waits.
    pub raw: Vec<u8>,
    pub key: String,
    /// Where its bytes were kept, if the decider kept them.
    pub kept: Option<String>,
}

impl Quiet {
    fn new(at: MessageRef, size: u32, plan: Plan, raw: Vec<u8>) -> Quiet {
        let key = message_key(&plan, Some(&raw), at);
        Quiet {
            uid: at.uid,
            size,
            plan: Box::new(plan),
            raw,
            key,
            kept: None,
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
        self.ids_in_pass.borrow_mut().clear();
        self.in_journal.clear();
        let mut todo = Vec::new();
        let known_up_to = journal.highest_uid(uidvalidity)?;
        for item in list {
            if self.opts.stopping() {
                return Ok(());
            }
            let at = MessageRef::new(&inbox, uidvalidity, item.uid);
            if self.needs_work(at, known_up_to)? {
                todo.push(item);
            }
        }
        debug!("{} to do, looked up in {:?}", todo.len(), started.elapsed());
        self.work_through(session, &inbox, uidvalidity, todo)
            .await?;
        journal.set_folder(&inbox, uidvalidity, 0)?;
        Ok(())
    }

    /// Whether a listed message still needs deciding or finishing (what it is, by its
    /// Message-ID, is looked at once it is fetched: `first_look`). Above the highest UID
    /// the journal knows there is nothing to look up.
    fn needs_work(&mut self, at: MessageRef<'_>, known_up_to: Option<u32>) -> Result<bool, Error> {
        let journal = self.journal;
        let recorded = match known_up_to {
            Some(highest) if at.uid <= highest => journal.state(at.uidvalidity, at.uid)?,
            _ => None,
        };
        match recorded {
            Some(state) if state.is_final() => return Ok(false),
            Some(_) => {
                self.in_journal.insert(at.uid);
            }
            None => {}
        }
        Ok(!(self.opts.shadow && journal.shadowed(at.uidvalidity, at.uid)?))
    }

    /// A fetched message, before it is decided: our own copy coming back, a copy of a
    /// Message-ID met before (earlier in this pass, or handled under another UID), or new.
    pub fn first_look(&self, at: MessageRef<'_>, item: &Listed) -> Result<Look, Error> {
        let journal = self.journal;
        let Some(id) = &item.message_id else {
            return Ok(Look::New);
        };
        if journal.outbox_state(&format!("<{id}>"))?.is_some() {
            return Ok(Look::OwnCopy);
        }
        if !self.ids_in_pass.borrow_mut().insert(id.clone()) {
            return Ok(Look::Again);
        }
        if !self.in_journal.contains(&at.uid)
            && journal
                .seen_before(id, item.size)?
                .is_some_and(|(state, _)| state.is_final())
        {
            return Ok(Look::Again);
        }
        Ok(Look::New)
    }

    /// Our own copies come back: the server's receipts recorded, the copies deleted in
    /// one step. Without UIDPLUS a copy stays, marked \Deleted: not marked again, and
    /// the journal keeps its UID so that it is not fetched again. With it, one already
    /// marked (a run killed between the STORE and the UID EXPUNGE) is expunged now.
    pub async fn own_copies_back(
        &mut self,
        session: &mut Imap,
        uidvalidity: u32,
        copies: Vec<Listed>,
    ) -> Result<(), Error> {
        let journal = self.journal;
        let uidplus = self.caps.uidplus;
        journal.together(|| {
            for item in &copies {
                let ours = format!("<{}>", item.message_id.as_deref().unwrap_or_default());
                if let Some(Outbox::Committing | Outbox::Sending) = journal.outbox_state(&ours)? {
                    journal.set_outbox(&ours, None, Outbox::Received)?;
                }
                if !uidplus {
                    let why = "our own copy, left marked \\Deleted (no UIDPLUS)";
                    journal.advance(uidvalidity, item.uid, None, State::Filed, why)?;
                }
            }
            Ok(())
        })?;
        let mut delete = Vec::new();
        for item in copies {
            let ours = format!("<{}>", item.message_id.unwrap_or_default());
            debug!(uid = item.uid, "own copy of {ours} received");
            self.awaiting_copies.remove(&ours);
            if !item.deleted || uidplus {
                delete.push(item.uid);
            }
        }
        mailbox::delete_many(session, &delete, uidplus, self.t()).await?;
        Ok(())
    }

    /// A message handled on its own (shadow mode, over the size limit, or missing from
    /// its batch's fetch): its Message-ID read first, as in a batch.
    pub async fn handle_alone(
        &mut self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
    ) -> Result<(), Error> {
        let t = self.t();
        let raw = if item.size as usize > self.config().limits.max_message_bytes {
            None
        } else {
            Some(
                mailbox::fetch(session, at.uid, t)
                    .await?
                    .unwrap_or_default(),
            )
        };
        let message_id = match &raw {
            Some(raw) => Mail::message_id_of(raw),
            None => mailbox::message_id_alone(session, at.uid, t).await?,
        };
        let item = Listed {
            message_id,
            ..item.clone()
        };
        match self.first_look(at, &item)? {
            Look::OwnCopy => {
                return self
                    .own_copies_back(session, at.uidvalidity, vec![item])
                    .await
            }
            Look::Again if self.handled_earlier_in_pass(session, at, &item).await? => return Ok(()),
            _ => {}
        }
        let prepared = match raw {
            Some(raw) => Some((self.plan_for(at, &raw)?, raw)),
            None => None,
        };
        self.handle(session, at, &item, prepared).await
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
        journal.record_planned((at.uidvalidity, at.uid), id, &plan, item.size, None)?;
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
        let connections = self.config().imap.as_ref().map_or(1, |c| c.connections);
        let mut filer = Filer::new(connections);
        let chunks = batches(&todo, limit);
        let last = chunks.len().saturating_sub(1);
        if todo.len() > FILE_SOON && !self.opts.shadow {
            self.open_early(&mut filer);
        }
        for (n, chunk) in chunks.into_iter().enumerate() {
            if self.opts.stopping() {
                break;
            }
            if self.opts.shadow {
                for item in chunk {
                    let at = MessageRef::new(inbox, uidvalidity, item.uid);
                    self.handle_alone(session, at, item).await?;
                }
                continue;
            }
            let quiet = self
                .work_through_batch(session, inbox, uidvalidity, chunk)
                .await?;
            unfiled.extend(quiet);
            // After the last batch the rest is filed at once (`close_filer`).
            if n < last && filer.due(unfiled.len(), FILE_SOON, FILE_EVERY) {
                let quiet = std::mem::take(&mut unfiled);
                self.file_behind(&mut filer, session, uidvalidity, quiet)
                    .await?;
            }
        }
        // Also when stopping: what was decided is filed before the service goes.
        self.close_filer(filer, session, uidvalidity, unfiled).await
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
            own_copies,
            fetched,
        } = decided;
        self.record_decided(uidvalidity, &quiet[recorded.0..], &acting[recorded.1..])?;
        self.own_copies_back(session, uidvalidity, own_copies)
            .await?;
        // Oversized (or gone meanwhile): the one-at-a-time path says why.
        for item in chunk.iter().filter(|i| !fetched.contains(&i.uid)) {
            if self.opts.stopping() {
                break;
            }
            self.handle_alone(session, at(item.uid), item).await?;
        }
        if !acting.is_empty() && !quiet.is_empty() {
            // Filed before the answers go out: their own copies, delivered into this
            // inbox, then hold its lock again and again (the full job's 332 quiet ones
            // took 3-5 ms before them, up to 620 ms after).
            let now = std::mem::take(&mut quiet);
            self.file_and_record(session, uidvalidity, now, "").await?;
        }
        let answered = self.answer_all(session, inbox, uidvalidity, acting).await;
        self.pending.take();
        answered?;
        for (item, raw) in repeated {
            if self.opts.stopping() {
                break;
            }
            if self
                .handled_earlier_in_pass(session, at(item.uid), &item)
                .await?
            {
                continue;
            }
            let plan = self.plan_for(at(item.uid), &raw)?;
            if acts(&plan) {
                self.handle(session, at(item.uid), &item, Some((plan, raw)))
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
        let keep = self.config().service.keep_messages_days > 0;
        let deciders = Deciders::start(self.book, keep.then(|| self.journal.kept()));
        let mut fetched: Vec<(u32, Vec<u8>)> = Vec::with_capacity(LOOK_GROUP);
        let result = mailbox::fetch_each(session, &wanted, self.t(), |uid, raw| {
            if self.opts.stopping() {
                return Ok(());
            }
            order.decided.fetched.insert(uid);
            fetched.push((uid, raw));
            if fetched.len() >= LOOK_GROUP {
                self.look_at(&mut fetched, &mut order, &deciders, &by_uid, uidvalidity)?;
            }
            for done in deciders.ready() {
                order.ready.insert(done.seq, done.into());
            }
            self.take_in_order(&mut order, &by_uid, uidvalidity)
        })
        .await?;
        result?;
        self.look_at(&mut fetched, &mut order, &deciders, &by_uid, uidvalidity)?;
        for done in deciders.finish() {
            order.ready.insert(done.seq, done.into());
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

    /// The first look at messages fetched, in order, their lookups in one read of the
    /// journal.
    fn look_at<'l>(
        &self,
        fetched: &mut Vec<(u32, Vec<u8>)>,
        order: &mut InOrder<'l>,
        deciders: &Deciders,
        by_uid: &HashMap<u32, &'l Listed>,
        uidvalidity: u32,
    ) -> Result<(), Error> {
        self.journal.reading(|| {
            for (uid, raw) in fetched.drain(..) {
                self.look_at_one(uid, raw, order, deciders, by_uid[&uid], uidvalidity)?;
            }
            Ok(())
        })
    }

    /// One message fetched: an own copy or a repeat set aside, the plan stored before
    /// a restart taken up, or handed to the deciders.
    fn look_at_one<'l>(
        &self,
        uid: u32,
        raw: Vec<u8>,
        order: &mut InOrder<'l>,
        deciders: &Deciders,
        listed: &'l Listed,
        uidvalidity: u32,
    ) -> Result<(), Error> {
        let item = Listed {
            message_id: Mail::message_id_of(&raw),
            ..listed.clone()
        };
        let at = MessageRef::new(&self.config().folders.inbox, uidvalidity, uid);
        match self.first_look(at, &item)? {
            Look::OwnCopy => order.decided.own_copies.push(item),
            Look::Again => order.decided.repeated.push((item, raw)),
            Look::New => {
                let seq = order.sent;
                order.sent += 1;
                let before = match self.in_journal.contains(&uid) {
                    true => self.stored_plan(uidvalidity, uid)?,
                    false => None,
                };
                match before {
                    Some(plan) => {
                        let ready = Ready {
                            uid,
                            raw,
                            plan,
                            new: false,
                            kept: None,
                        };
                        order.ready.insert(seq, ready);
                    }
                    None => deciders.submit(seq, uid, raw),
                }
            }
        }
        Ok(())
    }

    /// Decisions taken in the order the messages came: brakes applied to new ones, each
    /// sorted into quiet or acting, recorded by count and time (group commit).
    fn take_in_order<'l>(
        &self,
        order: &mut InOrder<'l>,
        by_uid: &HashMap<u32, &'l Listed>,
        uidvalidity: u32,
    ) -> Result<(), Error> {
        while let Some(ready) = order.ready.remove(&order.next) {
            let Ready {
                uid,
                raw,
                mut plan,
                new,
                kept,
            } = ready;
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
                    kept,
                });
            } else {
                decided.quiet.push(Quiet {
                    uid,
                    size: item.size,
                    plan: Box::new(plan),
                    raw,
                    key,
                    kept,
                });
            }
            let (q, a) = decided.recorded;
            let (quiet, acting) = (&decided.quiet[q..], &decided.acting[a..]);
            if quiet.len() + acting.len() >= GROUP_COMMIT
                || order.since.elapsed() >= GROUP_COMMIT_AFTER
            {
                self.record_decided(uidvalidity, quiet, acting)?;
                // What sends nothing needs its bytes no more: a batch holds at most a
                // group's, not all of its own, while it waits for the rest.
                for recorded in &mut decided.quiet[q..] {
                    recorded.raw = Vec::new();
                }
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
        let quiet = quiet.iter().map(|q| Planned {
            uid: q.uid,
            size: q.size,
            key: &q.key,
            plan: &q.plan,
            raw: Some(&q.raw),
            kept: q.kept.as_deref(),
        });
        let acting = acting.iter().map(|a| Planned {
            uid: a.item.uid,
            size: a.item.size,
            key: &a.key,
            plan: &a.plan,
            raw: Some(&a.raw),
            kept: a.kept.as_deref(),
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

    /// A copy of a Message-ID met before: handled under another UID (earlier in this
    /// pass, or before), it needs nothing more; or it is another message reusing it.
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
