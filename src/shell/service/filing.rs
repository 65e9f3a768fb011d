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
use crate::shell::mailbox::{self, Imap, Trouble};

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
        inbox: &str,
        uidvalidity: u32,
        mut quiet: Vec<Quiet>,
    ) -> Result<(), Error> {
        if quiet.is_empty() {
            return Ok(());
        }
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        let started = std::time::Instant::now();
        let filed_to = self.move_group(session, inbox, &mut quiet).await?;
        tracing::debug!(
            "{} messages flagged and moved in {:?}",
            quiet.len(),
            started.elapsed()
        );
        let journal = self.journal;
        journal.together(|| {
            for q in &quiet {
                let key = &q.key;
                let plan = &q.plan;
                if plan.original.human {
                    journal.conclude_human(at(q.uid), key, plan, &plan.reason, None)?;
                } else {
                    let folder = filed_to.get(&q.uid).map(String::as_str).unwrap_or(inbox);
                    journal.conclude_filed(at(q.uid), key, plan, folder)?;
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

    /// Flags and moves the group with one command per flag set and per folder; returns
    /// where each message was filed. A refused folder turns its messages over to a person.
    async fn move_group(
        &self,
        session: &mut Imap,
        inbox: &str,
        quiet: &mut [Quiet],
    ) -> Result<HashMap<u32, String>, Error> {
        let mut human = Vec::new();
        let mut by_flags: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        let mut by_folder: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut filed_to: HashMap<u32, String> = HashMap::new();
        for q in quiet.iter() {
            if q.plan.original.human {
                human.push(q.uid);
                continue;
            }
            if let Some(flags) = filing_flags(&q.plan) {
                by_flags.entry(flags).or_default().push(q.uid);
            }
            if let Some(folder) = self.filing_target(&q.plan) {
                filed_to.insert(q.uid, folder.clone());
                by_folder.entry(folder).or_default().push(q.uid);
            }
        }
        for (flags, uids) in &by_flags {
            mailbox::store_many(session, uids, flags, self.t()).await?;
        }
        let mut refused: HashMap<u32, String> = HashMap::new();
        for (folder, uids) in &by_folder {
            if let Some(why) = self.file_into(session, inbox, uids, folder).await? {
                refused.extend(uids.iter().map(|uid| (*uid, why.clone())));
                human.extend(uids);
            }
        }
        for q in quiet.iter_mut() {
            if let Some(why) = refused.remove(&q.uid) {
                q.plan.original.human = true;
                q.plan.reason = why;
            }
        }
        self.set_aside(session, &human).await?;
        Ok(filed_to)
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
        match mailbox::move_many(session, inbox, uids, folder, self.caps, self.t()).await {
            Ok(()) => Ok(None),
            Err(Trouble::Refused(w)) => {
                error!("cannot file {} message(s) to {folder}: {w}", uids.len());
                Ok(Some(format!(
                    "cannot file it to {folder}: {w}; left for a human"
                )))
            }
            Err(broken) => Err(broken.into()),
        }
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

    /// Messages left for a human stay visible: moved to the configured folder, or
    /// flagged in the inbox.
    pub(super) async fn set_aside(&self, session: &mut Imap, uids: &[u32]) -> Result<(), Error> {
        let t = self.t();
        if let Some(folder) = &self.config().folders.human {
            let folder = self.places.resolve(folder);
            let inbox = &self.config().folders.inbox;
            match mailbox::move_many(session, inbox, uids, &folder, self.caps, t).await {
                Ok(()) => return Ok(()),
                // Still visible for a person: flagged in the inbox instead.
                Err(Trouble::Refused(w)) => {
                    error!("cannot move to the human folder {folder}: {w}; flagging in the inbox")
                }
                Err(broken) => return Err(broken.into()),
            }
        }
        Ok(mailbox::store_many(session, uids, "\\Flagged", t).await?)
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
