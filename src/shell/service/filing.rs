//! Where a handled message goes: flagged and filed by its plan's role, or set aside for
//! a person (moved to the human folder, or flagged in the inbox). A folder the server
//! refuses is that message's problem only: it goes to a person with the server's words.

use std::collections::{BTreeMap, HashMap};

use tracing::{error, info};

use super::inbox::{Quiet, Shell};
use super::Error;
use crate::core::plan::Plan;
use crate::core::rules::Respond;
use crate::shell::journal::MessageRef;
use crate::shell::mailbox::{self, Caps, Imap, Trouble};

/// The flags of a message filed with its plan done: answered when something went out.
/// A sort-only rule (`respond: file`) sets none, as Sieve's `fileinto` and imapfilter
/// do: nobody has read or answered it, and the folder's unread count is the person's
/// work list. (Setting \Seen also renamed every Maildir file once more.)
fn filing_flags(plan: &Plan) -> Option<&'static str> {
    if plan.respond == Respond::File {
        None
    } else if plan.outgoing.is_empty() {
        Some("\\Seen")
    } else {
        Some("\\Seen \\Answered")
    }
}

/// A decision to record as planned: the message, its journal key, its plan, its bytes,
/// and where they were kept if a decider kept them.
pub(super) struct Planned<'p> {
    pub uid: u32,
    pub size: u32,
    pub key: &'p str,
    pub plan: &'p Plan,
    /// None for a message too big to download.
    pub raw: Option<&'p [u8]>,
    pub kept: Option<&'p str>,
}

impl Shell<'_> {
    /// Messages whose plan sends nothing, as one batch, recorded as planned before
    /// (`record_group_planned`) and as done here, last, like one message: a kill in
    /// between repeats harmless flags and moves, and what already left the inbox is
    /// settled at the next start.
    pub async fn file_quietly(
        &mut self,
        session: &mut Imap,
        uidvalidity: u32,
        quiet: Vec<Quiet>,
    ) -> Result<(), Error> {
        self.file_and_record(session, uidvalidity, quiet, "").await
    }

    /// The outcomes of a filing carried out: filed where the order said, or left for a
    /// person (by plan, or because the server refused the folder), in one transaction.
    pub(super) fn record_filed(
        &self,
        uidvalidity: u32,
        mut quiet: Vec<Quiet>,
        order: &FilingOrder,
        mut refused: HashMap<u32, String>,
    ) -> Result<(), Error> {
        if quiet.is_empty() {
            return Ok(());
        }
        let inbox = order.inbox.as_str();
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        for q in quiet.iter_mut() {
            if let Some(why) = refused.remove(&q.uid) {
                q.plan.original.human = true;
                q.plan.reason = why;
            }
        }
        let filed_to: HashMap<u32, &str> = order
            .by_folder
            .iter()
            .flat_map(|(folder, uids)| uids.iter().map(move |u| (*u, folder.as_str())))
            .collect();
        let journal = self.journal;
        journal.together(|| {
            for q in &quiet {
                let (key, plan) = (&q.key, &q.plan);
                if plan.original.human {
                    journal.conclude_human(at(q.uid), key, plan, &plan.reason, None)?;
                } else {
                    let folder = filed_to.get(&q.uid).copied().unwrap_or(inbox);
                    // Unchanged since `record_group_planned` stored it (a refusal
                    // changes it, and goes to the branch above).
                    journal.conclude_filed_as_planned(at(q.uid), key, plan, folder)?;
                }
            }
            Ok(())
        })?;
        for q in &quiet {
            let outcome = if q.plan.original.human {
                info!(uid = q.uid, category = %q.plan.category, "left for a human: {}", q.plan.reason);
                "left for human"
            } else {
                info!(uid = q.uid, category = %q.plan.category, "filed: {}", q.plan.reason);
                "filed"
            };
            self.opts.health.message(q.plan.category.as_str(), outcome);
        }
        Ok(())
    }

    /// Decisions made durable in one transaction (one message's too).
    pub(super) fn record_group_planned<'p>(
        &self,
        uidvalidity: u32,
        decided: impl Iterator<Item = Planned<'p>>,
    ) -> Result<(), Error> {
        let journal = self.journal;
        let keep_raw = self.config().service.keep_messages_days > 0;
        journal.together(|| {
            for d in decided {
                journal.record_planned((uidvalidity, d.uid), d.key, d.plan, d.size, d.kept)?;
                if let (true, None, Some(raw)) = (keep_raw, d.kept, d.raw) {
                    journal.keep_raw(uidvalidity, d.uid, raw)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// What filing the group asks of the server, from the plans and the current config.
    pub(super) fn filing_order(&self, quiet: &[Quiet]) -> FilingOrder {
        let mut order = FilingOrder {
            by_flags: BTreeMap::new(),
            by_folder: BTreeMap::new(),
            human: Vec::new(),
            human_folder: self.human_folder(),
            inbox: self.config().folders.inbox.clone(),
            caps: self.caps,
            t: self.t(),
        };
        for q in quiet {
            if q.plan.original.human {
                order.human.push(q.uid);
                continue;
            }
            if let Some(flags) = filing_flags(&q.plan) {
                order.by_flags.entry(flags).or_default().push(q.uid);
            }
            if let Some(folder) = self.filing_target(&q.plan) {
                order.by_folder.entry(folder).or_default().push(q.uid);
            }
        }
        order
    }

    /// Flags and files a handled message by its plan's role. Some(reason) when the
    /// server refused the folder: the message then goes to a person.
    pub async fn file_answered(
        &self,
        session: &mut Imap,
        at: MessageRef<'_>,
        key: &str,
        plan: &Plan,
    ) -> Result<Option<String>, Error> {
        if let Some(flags) = filing_flags(plan) {
            mailbox::store(session, at.uid, flags, self.t()).await?;
        }
        let target = self.filing_target(plan);
        if let Some(folder) = &target {
            if let Some(why) = self
                .file_into(session, at.mailbox, &[at.uid], folder)
                .await?
            {
                return Ok(Some(why));
            }
        }
        let folder = target.as_deref().unwrap_or(at.mailbox);
        self.journal.conclude_filed(at, key, plan, folder)?;
        self.opts.health.message(plan.category.as_str(), "filed");
        info!(uid = at.uid, category = %plan.category, "filed: {}", plan.reason);
        Ok(None)
    }

    /// Moves messages to their filing folder. Some(reason) when the server refuses the
    /// folder: those messages are then left for a person, and the rest go on.
    pub(super) async fn file_into(
        &self,
        session: &mut Imap,
        inbox: &str,
        uids: &[u32],
        folder: &str,
    ) -> Result<Option<String>, Error> {
        Ok(file_into(session, inbox, uids, folder, self.caps, self.t()).await?)
    }

    /// Where the original goes now, by its plan's role (the rule's own folder, else its
    /// category's), with the current config and the server's names: a config fix also
    /// applies to plans made before it.
    pub(super) fn filing_target(&self, plan: &Plan) -> Option<String> {
        let rule_folder = plan
            .rule
            .as_ref()
            .and_then(|name| self.book.rules.rules.iter().find(|r| &r.name == name))
            .and_then(|r| r.then.folder.clone());
        let by_category = || {
            self.config()
                .folders
                .by_category
                .get(plan.category.as_str())
                .cloned()
        };
        let logical = rule_folder.or_else(by_category)?;
        Some(self.places.resolve(&logical))
    }

    /// Where messages for a person go, in the server's names; None: flagged in the inbox.
    fn human_folder(&self) -> Option<String> {
        let folder = self.config().folders.human.as_ref()?;
        Some(self.places.resolve(folder))
    }

    pub(super) async fn set_aside(&self, session: &mut Imap, uids: &[u32]) -> Result<(), Error> {
        let (inbox, folder) = (&self.config().folders.inbox, self.human_folder());
        Ok(set_aside(session, inbox, uids, folder.as_deref(), self.caps, self.t()).await?)
    }

    /// Sets the message aside for a person and records why (with the SMTP server's own
    /// words when it refused an answer).
    pub async fn leave_for_human(
        &self,
        session: &mut Imap,
        at: MessageRef<'_>,
        key: &str,
        plan: &Plan,
        reason: String,
        smtp_error: Option<String>,
    ) -> Result<(), Error> {
        // Flag or move first, record after: a kill in between repeats a harmless step.
        self.set_aside(session, &[at.uid]).await?;
        let error = smtp_error.as_deref();
        self.journal.conclude_human(at, key, plan, &reason, error)?;
        self.opts
            .health
            .message(plan.category.as_str(), "left for human");
        info!(uid = at.uid, category = %plan.category, "left for a human: {reason}");
        Ok(())
    }
}

/// A group's filing as the server is asked for it: one UID STORE per flag set, one
/// UID MOVE per folder, the rest set aside for a person. Owned, so that a session of
/// its own can carry it out while the next messages are fetched and decided.
pub(super) struct FilingOrder {
    by_flags: BTreeMap<&'static str, Vec<u32>>,
    by_folder: BTreeMap<String, Vec<u32>>,
    human: Vec<u32>,
    human_folder: Option<String>,
    inbox: String,
    caps: Caps,
    t: u64,
}

impl FilingOrder {
    /// Flags, moves, sets aside. Returns the messages whose folder the server refused,
    /// with its words: they were set aside for a person instead.
    ///
    /// `on_filed` gets each folder's messages as soon as the server has moved them.
    pub async fn carry_out(
        &self,
        session: &mut Imap,
        mut on_filed: impl FnMut(&[u32]),
    ) -> Result<HashMap<u32, String>, Trouble> {
        let (inbox, caps, t) = (self.inbox.as_str(), self.caps, self.t);
        let stores: Vec<(&str, &[u32])> = self
            .by_flags
            .iter()
            .map(|(flags, uids)| (*flags, uids.as_slice()))
            .collect();
        let moves: Vec<(&str, &[u32])> = self
            .by_folder
            .iter()
            .map(|(folder, uids)| (folder.as_str(), uids.as_slice()))
            .collect();
        let on_moved = |i: usize| on_filed(moves[i].1);
        let filed = flag_and_file(session, inbox, &stores, &moves, caps, t, on_moved).await?;
        let mut refused: HashMap<u32, String> = HashMap::new();
        let mut human = self.human.clone();
        for ((_, uids), why) in moves.iter().zip(filed) {
            if let Some(why) = why {
                refused.extend(uids.iter().map(|uid| (*uid, why.clone())));
                human.extend(*uids);
            }
        }
        let folder = self.human_folder.as_deref();
        set_aside(session, inbox, &human, folder, caps, t).await?;
        Ok(refused)
    }
}

/// Flags, then moves by folder: sent together where the server moves
/// (`store_and_move_at_once`, which meets the inbox's lock less often), a refused move
/// tried again alone once its folder is made (`move_after_refusal`); one command at a
/// time where it copies.
/// Per folder, in order: None (filed) or why not (its messages then go to a person).
pub(super) async fn flag_and_file(
    session: &mut Imap,
    inbox: &str,
    stores: &[(&str, &[u32])],
    moves: &[(&str, &[u32])],
    caps: Caps,
    t: u64,
    on_moved: impl FnMut(usize),
) -> Result<Vec<Option<String>>, Trouble> {
    if !caps.r#move {
        for (flags, uids) in stores {
            mailbox::store_many(session, uids, flags, t).await?;
        }
        let mut filed = Vec::new();
        for (folder, uids) in moves {
            filed.push(file_into(session, inbox, uids, folder, caps, t).await?);
        }
        return Ok(filed);
    }
    let answers = mailbox::store_and_move_at_once(session, stores, moves, t, on_moved).await?;
    let mut filed = Vec::new();
    for ((folder, uids), answer) in moves.iter().zip(answers) {
        filed.push(match answer {
            Ok(()) => None,
            Err(Trouble::Refused(_)) => {
                let again = mailbox::move_after_refusal(session, uids, folder, t).await;
                for_person(again, uids.len(), folder)?
            }
            // Throttled or cut off: the session ends, as with one command at a time.
            Err(broken) => return Err(broken),
        });
    }
    Ok(filed)
}

/// Moves messages to their filing folder. Some(reason) when the server refuses the
/// folder: those messages are then left for a person, and the rest go on.
async fn file_into(
    session: &mut Imap,
    inbox: &str,
    uids: &[u32],
    folder: &str,
    caps: Caps,
    t: u64,
) -> Result<Option<String>, Trouble> {
    let moved = mailbox::move_many(session, inbox, uids, folder, caps, t).await;
    for_person(moved, uids.len(), folder)
}

/// A move's result as filing sees it: None when done, the reason for the person when the
/// server refused the folder; a broken session stays an error.
fn for_person(
    moved: Result<(), Trouble>,
    n: usize,
    folder: &str,
) -> Result<Option<String>, Trouble> {
    match moved {
        Ok(()) => Ok(None),
        Err(Trouble::Refused(w)) => {
            error!("cannot file {n} message(s) to {folder}: {w}");
            Ok(Some(format!(
                "cannot file it to {folder}: {w}; left for a human"
            )))
        }
        Err(broken) => Err(broken),
    }
}

/// Messages left for a human stay visible: moved to the human folder, or flagged in
/// the inbox.
async fn set_aside(
    session: &mut Imap,
    inbox: &str,
    uids: &[u32],
    folder: Option<&str>,
    caps: Caps,
    t: u64,
) -> Result<(), Trouble> {
    if let Some(folder) = folder {
        match mailbox::move_many(session, inbox, uids, folder, caps, t).await {
            Ok(()) => return Ok(()),
            // Still visible for a person: flagged in the inbox instead.
            Err(Trouble::Refused(w)) => {
                error!("cannot move to the human folder {folder}: {w}; flagging in the inbox")
            }
            Err(broken) => return Err(broken),
        }
    }
    mailbox::store_many(session, uids, "\\Flagged", t).await
}
