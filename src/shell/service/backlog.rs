//! A batch's answers together: each message's answers go out over one of several SMTP
//! connections at once (`smtp.connections`), each still exactly once through its own
//! outbox row; their copies go to Sent in one MULTIAPPEND where the server offers it;
//! the originals are filed with one UID STORE / UID MOVE per folder. Only answers never
//! started before go this way: drafts, CRM steps and anything a crash interrupted take
//! the one-at-a-time path, which knows how to settle them.

use std::collections::BTreeMap;

use futures::StreamExt;
use lettre::Message;
use tracing::{debug, error, info};

use super::answering::{copy_refused, parse_for_attachments, Answer, Sending};
use super::filing::flag_and_file;
use super::inbox::{Acting, Shell};
use super::{kept_documents, Error};
use crate::core::plan::Plan;
use crate::core::rules::Respond;
use crate::core::threading;
use crate::shell::journal::{MessageRef, Outbox, State};
use crate::shell::mailbox::{self, Imap, Listed, Trouble};

/// Messages answered together: their answers in flight at once, their Sent copies in
/// one command. Bounded so that a kill leaves little half done.
const GROUP: usize = 50;
/// Groups sent and waiting for their copies in Sent, and how many of them are copied
/// together: bounds memory while SMTP and IMAP each go at their pace.
const QUEUED: usize = 2;
const MERGED: usize = 3;
/// Copies for Sent are APPENDed in commands of about this many bytes.
const APPEND_BYTES: usize = 4 << 20;

/// A message whose answers can go out together with others'.
pub(super) struct Fresh<'l> {
    pub item: &'l Listed,
    pub plan: Plan,
    pub key: String,
    /// Parsed again when its answers are written (not all of a batch at once).
    pub raw: Vec<u8>,
}

/// What sending one message's answers came to.
struct Outcome {
    sending: Sending,
    /// The answers that went out: Message-ID, the message for Sent, reply or forward.
    sent: Vec<(String, Message, &'static str)>,
}

impl Shell<'_> {
    /// The messages of a batch whose plans send mail: those never started go together,
    /// the rest one at a time.
    pub(super) async fn answer_all(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        acting: Vec<Acting<'_>>,
    ) -> Result<(), Error> {
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        let mut fresh = Vec::new();
        for Acting {
            item,
            plan,
            raw,
            key,
            ..
        } in acting
        {
            if self.opts.stopping() {
                return Ok(());
            }
            if self.never_started(&key, &plan)? {
                fresh.push(Fresh {
                    item,
                    plan,
                    key,
                    raw,
                });
                continue;
            }
            self.handle(session, at(item.uid), item, Some((plan, raw)))
                .await?;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let (failed, copies) = self
            .send_and_file(session, inbox, uidvalidity, fresh)
            .await?;
        if self.config().smtp.as_ref().is_some_and(|c| c.self_copy) {
            self.awaiting_copies.extend(copies);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Groups are sent one after another without waiting for IMAP; whatever groups have
    /// been sent meanwhile get their copies saved in Sent together, on the IMAP session,
    /// at the same time. The originals are filed once all are sent: a move waits for
    /// the inbox's lock, which the own copies being delivered hold again and again.
    /// Returns the first SMTP failure (sending stops there) and the Message-IDs sent.
    async fn send_and_file(
        &self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        mut fresh: Vec<Fresh<'_>>,
    ) -> Result<(Option<Error>, Vec<String>), Error> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<(Fresh, Outcome)>>(QUEUED);
        let copying_failed = std::cell::Cell::new(false);
        let sending = async {
            let (mut failed, mut copies) = (None, Vec::new());
            while !fresh.is_empty() && !self.opts.stopping() && !copying_failed.get() {
                let rest = fresh.split_off(fresh.len().min(GROUP));
                let group = std::mem::replace(&mut fresh, rest);
                let (done, error) = self.send_group(inbox, uidvalidity, group).await?;
                for (_, o) in &done {
                    copies.extend(o.sent.iter().map(|(id, ..)| id.clone()));
                }
                // A closed channel: copying failed and its error is the one returned.
                if tx.send(done).await.is_err() || error.is_some() {
                    failed = error;
                    break;
                }
            }
            drop(tx);
            Ok::<_, Error>((failed, copies))
        };
        let copying = async {
            let mut settled = Vec::new();
            while let Some(mut done) = rx.recv().await {
                for _ in 1..MERGED {
                    match rx.try_recv() {
                        Ok(more) => done.extend(more),
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                if let Err(e) = self.copy_group_to_sent(session, &mut done).await {
                    copying_failed.set(true);
                    rx.close();
                    return Err(e);
                }
                debug!(
                    "{} messages: copies in Sent after {:?}",
                    done.len(),
                    started.elapsed()
                );
                // Only what filing needs is kept meanwhile.
                for (f, o) in &mut done {
                    f.raw = Vec::new();
                    o.sent = Vec::new();
                }
                settled.extend(done);
            }
            Ok(settled)
        };
        let (sent, settled) = tokio::join!(sending, copying);
        let settled = settled?;
        let (n, started) = (settled.len(), std::time::Instant::now());
        self.file_group(session, inbox, uidvalidity, settled)
            .await?;
        debug!("{n} messages answered: filed in {:?}", started.elapsed());
        sent
    }

    /// A plain automatic answer, no CRM step, nothing of it ever sent or started.
    fn never_started(&self, key: &str, plan: &Plan) -> Result<bool, Error> {
        if plan.respond != Respond::Auto || plan.outgoing.is_empty() {
            return Ok(false);
        }
        if self.config().crm.is_some() && !plan.crm_actions.is_empty() {
            return Ok(false);
        }
        // Decided and recorded is fine; any copy of it further on takes the careful path.
        let journal = self.journal;
        if journal
            .state_by_message_id(key)?
            .is_some_and(|s| s >= State::Sending)
        {
            return Ok(false);
        }
        let domain = &self.config().desk.message_id_domain;
        for (i, out) in plan.outgoing.iter().enumerate() {
            let msg_id = threading::message_id_for(key, i, out, domain);
            if journal.outbox_state(&msg_id)?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One group recorded as being sent and sent at once. A transient SMTP failure of one
    /// message comes back with the others' outcomes; its outbox rows say what the next
    /// pass must settle.
    async fn send_group<'l>(
        &self,
        inbox: &str,
        uidvalidity: u32,
        group: Vec<Fresh<'l>>,
    ) -> Result<(Vec<(Fresh<'l>, Outcome)>, Option<Error>), Error> {
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        // Recorded as planned when decided; now as being sent.
        let journal = self.journal;
        journal.together(|| {
            for f in &group {
                let (uid, key) = (f.item.uid, Some(f.key.as_str()));
                journal.advance(uidvalidity, uid, key, State::Sending, &f.plan.reason)?;
            }
            Ok(())
        })?;
        let started = std::time::Instant::now();
        let parallel = self
            .config()
            .smtp
            .as_ref()
            .map_or(1, |c| c.connections as usize);
        let outcomes: Vec<Result<Outcome, Error>> = futures::stream::iter(&group)
            .map(|f| self.send_fresh(at(f.item.uid), f))
            .buffered(parallel)
            .collect()
            .await;
        let mut failed = None;
        let mut done = Vec::new();
        for (f, outcome) in group.into_iter().zip(outcomes) {
            match outcome {
                Ok(o) => done.push((f, o)),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        debug!(
            "{} messages' answers sent in {:?}",
            done.len(),
            started.elapsed()
        );
        Ok((done, failed))
    }

    /// One message's answers in order, each recorded as it goes; its documents kept
    /// once all went out.
    async fn send_fresh(&self, at: MessageRef<'_>, f: &Fresh<'_>) -> Result<Outcome, Error> {
        let mut sending = Sending::default();
        let mut sent = Vec::new();
        let Some(mail) = parse_for_attachments(&f.raw) else {
            // decide() already sends unreadable mail to a human; belt and braces.
            sending.human_reason = Some("the message cannot be read".into());
            return Ok(Outcome { sending, sent });
        };
        let domain = &self.config().desk.message_id_domain;
        for (i, out) in f.plan.outgoing.iter().enumerate() {
            let answer = Answer {
                out,
                msg_id: threading::message_id_for(&f.key, i, out, domain),
                what: out.kind.as_str(),
                before: None,
            };
            let message = match self.compose(&mail, &answer) {
                Ok(m) => m,
                Err(e) => {
                    sending.human_reason = Some(format!("cannot write the {}: {e}", answer.what));
                    break;
                }
            };
            let Some(said) = self
                .submit(at, &f.key, &message, &answer, &mut sending)
                .await?
            else {
                break;
            };
            let detail = answer.detail(&format!("; the server said {said}"));
            self.journal
                .record_sent(&answer.msg_id, &f.key, at, &f.plan, out, &detail)?;
            sent.push((answer.msg_id, message, answer.what));
        }
        if sending.human_reason.is_none() {
            if let Err(e) = kept_documents::keep(self.config(), &mail, &f.plan) {
                error!(uid = at.uid, "{e}");
                self.opts.health.error("documents");
                sending.human_reason = Some(format!(
                    "the answer went out, but a document could not be kept for the CRM: {e}"
                ));
            }
            self.journal.advance(
                at.uidvalidity,
                at.uid,
                Some(&f.key),
                State::Sent,
                &f.plan.reason,
            )?;
        }
        Ok(Outcome { sending, sent })
    }

    /// The copies of everything sent, in Sent with a few commands.
    async fn copy_group_to_sent(
        &self,
        session: &mut Imap,
        done: &mut [(Fresh<'_>, Outcome)],
    ) -> Result<(), Error> {
        let mut start = 0;
        while start < done.len() {
            // Commands of about APPEND_BYTES: the group's copies are not all in memory
            // twice at once.
            let (mut end, mut formatted, mut bytes) = (start, Vec::new(), 0);
            while end < done.len() && (end == start || bytes < APPEND_BYTES) {
                for (_, m, _) in &done[end].1.sent {
                    let raw = m.formatted();
                    bytes += raw.len();
                    formatted.push(raw);
                }
                end += 1;
            }
            self.copy_to_sent_together(session, &mut done[start..end], &formatted)
                .await?;
            start = end;
        }
        Ok(())
    }

    /// One APPEND (MULTIAPPEND) of these messages' copies; recorded as filed. A refusal
    /// means their answers went out without copies: each message to a person.
    async fn copy_to_sent_together(
        &self,
        session: &mut Imap,
        done: &mut [(Fresh<'_>, Outcome)],
        formatted: &[Vec<u8>],
    ) -> Result<(), Error> {
        if let Some(sent) = self.places.sent.as_ref().filter(|_| !formatted.is_empty()) {
            let bytes: Vec<&[u8]> = formatted.iter().map(Vec::as_slice).collect();
            let journal = self.journal;
            journal.together(|| {
                for (_, o) in done.iter() {
                    for (id, ..) in &o.sent {
                        journal.set_outbox(id, None, Outbox::Appending)?;
                    }
                }
                Ok(())
            })?;
            match mailbox::append_many(session, sent, &bytes, "\\Seen", self.caps, self.t()).await {
                Ok(()) => {}
                Err(Trouble::Refused(w)) => {
                    error!("{w}");
                    for (_, o) in done.iter_mut() {
                        let why = match o.sent.as_slice() {
                            [] => continue,
                            [(_, _, what)] => copy_refused(what, &w),
                            more => format!(
                                "the {} answers went out, but their copies could not be saved: {w}",
                                more.len()
                            ),
                        };
                        o.sending.human_reason.get_or_insert(why);
                    }
                    return Ok(());
                }
                Err(broken) => return Err(broken.into()),
            }
        }
        let journal = self.journal;
        journal.together(|| {
            for (f, o) in done.iter() {
                for (id, ..) in &o.sent {
                    journal.set_outbox(id, Some(&f.key), Outbox::Filed)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The originals: flagged and filed by folder, or set aside for a person with the
    /// reason; then every outcome recorded in one transaction.
    async fn file_group(
        &self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        done: Vec<(Fresh<'_>, Outcome)>,
    ) -> Result<(), Error> {
        let mut human: Vec<(&Fresh, String, Option<String>)> = Vec::new();
        let mut by_folder: BTreeMap<String, Vec<&Fresh>> = BTreeMap::new();
        let mut answered = Vec::new();
        for (f, o) in &done {
            if let Some(reason) = o.sending.human_reason.clone() {
                human.push((f, reason, o.sending.smtp_error.clone()));
            } else if f.plan.original.human {
                human.push((f, f.plan.reason.clone(), None));
            } else {
                answered.push(f.item.uid);
                let folder = self.filing_target(&f.plan).unwrap_or_else(|| inbox.into());
                by_folder.entry(folder).or_default().push(f);
            }
        }
        let filed = self
            .flag_and_file_answered(session, inbox, &answered, by_folder, &mut human)
            .await?;
        let uids: Vec<u32> = human.iter().map(|(f, ..)| f.item.uid).collect();
        if !uids.is_empty() {
            self.set_aside(session, &uids).await?;
        }
        let at = |uid| MessageRef::new(inbox, uidvalidity, uid);
        let journal = self.journal;
        journal.together(|| {
            for (f, folder) in &filed {
                journal.conclude_filed(at(f.item.uid), &f.key, &f.plan, folder)?;
            }
            for (f, reason, smtp_error) in &human {
                let error = smtp_error.as_deref();
                journal.conclude_human(at(f.item.uid), &f.key, &f.plan, reason, error)?;
            }
            Ok(())
        })?;
        for (f, _) in &filed {
            self.opts.health.message(f.plan.category.as_str(), "filed");
            info!(uid = f.item.uid, category = %f.plan.category, "filed: {}", f.plan.reason);
        }
        for (f, reason, _) in &human {
            let category = f.plan.category.as_str();
            self.opts.health.message(category, "left for human");
            info!(uid = f.item.uid, category, "left for a human: {reason}");
        }
        Ok(())
    }

    /// The answered originals flagged and moved by folder in one go; those whose folder
    /// the server refused join `human`. Returns the filed ones with their folder.
    async fn flag_and_file_answered<'f>(
        &self,
        session: &mut Imap,
        inbox: &str,
        answered: &[u32],
        mut by_folder: BTreeMap<String, Vec<&'f Fresh<'f>>>,
        human: &mut Vec<(&'f Fresh<'f>, String, Option<String>)>,
    ) -> Result<Vec<(&'f Fresh<'f>, String)>, Error> {
        // Those filed in the inbox itself only get their flags.
        let mut filed: Vec<(&Fresh, String)> = by_folder
            .remove(inbox)
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f, inbox.to_string()))
            .collect();
        let targets: Vec<(String, Vec<&Fresh>)> = by_folder.into_iter().collect();
        let uids: Vec<Vec<u32>> = targets
            .iter()
            .map(|(_, fs)| fs.iter().map(|f| f.item.uid).collect())
            .collect();
        let moves: Vec<(&str, &[u32])> = targets
            .iter()
            .zip(&uids)
            .map(|((folder, _), uids)| (folder.as_str(), uids.as_slice()))
            .collect();
        let started = std::time::Instant::now();
        let stores = [("\\Seen \\Answered", answered)];
        let outcome =
            flag_and_file(session, inbox, &stores, &moves, self.caps, self.t(), |_| {}).await?;
        debug!(
            "{} answered originals flagged and filed into {} folders in {:?}",
            answered.len(),
            moves.len(),
            started.elapsed()
        );
        for ((folder, fs), refused) in targets.into_iter().zip(outcome) {
            match refused {
                Some(why) => human.extend(fs.into_iter().map(|f| (f, why.clone(), None))),
                None => filed.extend(fs.into_iter().map(|f| (f, folder.clone()))),
            }
        }
        Ok(filed)
    }
}
