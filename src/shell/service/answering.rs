//! A message whose plan sends mail, exactly once across crashes: its plan recorded, each
//! answer sent (or, after a crash, found to have gone out already), recorded as sent,
//! its copy put in Sent, the documents kept, and the original filed or set aside.

use std::time::Duration;

use lettre::Message;
use tracing::{error, info, warn};

use super::filing::Planned;
use super::inbox::{message_key, Shell};
use super::{kept_documents, Error};
use crate::core::message::Mail;
use crate::core::plan::{Outgoing, Plan};
use crate::core::rules::Respond;
use crate::core::threading;
use crate::shell::journal::{MessageRef, Outbox, State};
use crate::shell::mailbox::{self, Imap, Listed, Trouble};
use crate::shell::outbox::{self, Refusal};

/// After a crash, the copy in Sent may still be landing: the server finishes an APPEND
/// it had whole when the connection dropped, and a MULTIAPPEND shows its messages only
/// once all are saved. A copy whose APPEND had begun (`appending`) and is missing is
/// looked for again until this many seconds after then, before it is appended again.
const COPY_SETTLES_SECONDS: f64 = 2.0;

/// How sending went, for what happens to the original afterwards.
#[derive(Default)]
pub(super) struct Sending {
    /// Why the message goes to a person after all (a refusal, a document not kept).
    pub human_reason: Option<String>,
    /// The SMTP server's own words when it refused an answer, for the audit record.
    pub smtp_error: Option<String>,
    /// Settling a crash examined other folders: the inbox is selected again.
    left_inbox: bool,
    /// A Sent folder refused a copy: everything went out, but a person should know.
    copy_refused: Option<String>,
}

/// The message being handled: where it is, its journal key and its plan.
#[derive(Clone, Copy)]
pub(super) struct InHand<'a> {
    pub at: MessageRef<'a>,
    pub key: &'a str,
    pub plan: &'a Plan,
}

/// One outgoing message of a plan, with what the journal knows of it.
pub(super) struct Answer<'a> {
    pub out: &'a Outgoing,
    pub msg_id: String,
    /// "reply" or "forward", as people read it in the log.
    pub what: &'static str,
    /// Its outbox row before this attempt: None when it never started.
    pub before: Option<Outbox>,
}

impl Answer<'_> {
    /// The audit record's detail for an answer that went out: where, and `then`.
    pub fn detail(&self, then: &str) -> String {
        let out = self.out;
        let (to, cc) = (out.to.join(","), out.cc.join(","));
        format!("{} to {to} cc {cc}{then}", self.msg_id)
    }
}

/// Why a message goes to a person when its answer went out but Sent refused the copy.
pub(super) fn copy_refused(what: &str, words: &str) -> String {
    format!("the {what} went out, but its copy could not be saved: {words}")
}

impl Shell<'_> {
    /// One message, start to end: plan, record, send what it says, file or set aside.
    pub async fn handle(
        &mut self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
        prepared: Option<(Plan, Vec<u8>)>,
    ) -> Result<(), Error> {
        let (plan, raw) = match prepared {
            Some((plan, raw)) => (plan, Some(raw)),
            None => self.fetch_and_plan(session, at, item).await?,
        };
        let key = message_key(&plan, raw.as_deref(), at);
        let planned = Planned {
            uid: at.uid,
            size: item.size,
            key: &key,
            plan: &plan,
            raw: raw.as_deref(),
            kept: None,
        };
        self.record_group_planned(at.uidvalidity, std::iter::once(planned))?;
        if self.opts.shadow {
            return self.record_shadow(at, &plan);
        }
        let mail = raw.as_deref().and_then(parse_for_attachments);
        let mut sending = Sending::default();
        if plan.respond == Respond::Draft {
            if let Some(mail) = &mail {
                let job = InHand {
                    at,
                    key: &key,
                    plan: &plan,
                };
                sending.left_inbox = self.write_drafts(session, job, mail).await?;
            }
            return self.finish(session, at, &key, &plan, sending).await;
        }
        if plan.respond == Respond::Auto && !self.answered_elsewhere(at, &key)? {
            let Some(mail) = &mail else {
                // decide() already sends unreadable mail to a human; belt and braces.
                let reason = "the message cannot be read".to_string();
                return self
                    .leave_for_human(session, at, &key, &plan, reason, None)
                    .await;
            };
            let job = InHand {
                at,
                key: &key,
                plan: &plan,
            };
            self.send_answers(session, job, mail, &mut sending).await?;
        }
        self.finish(session, at, &key, &plan, sending).await
    }

    /// Oversized mail is decided from its size alone, never downloaded.
    async fn fetch_and_plan(
        &self,
        session: &mut Imap,
        at: MessageRef<'_>,
        item: &Listed,
    ) -> Result<(Plan, Option<Vec<u8>>), Error> {
        let config = self.config();
        let limit = config.limits.max_message_bytes;
        if item.size as usize > limit {
            let why = format!(
                "message is {} bytes, over the limit of {limit} bytes",
                item.size
            );
            return Ok((Plan::for_human(item.message_id.clone(), why, config), None));
        }
        let raw = mailbox::fetch(session, at.uid, self.t())
            .await?
            .unwrap_or_default();
        Ok((self.plan_for(at, &raw)?, Some(raw)))
    }

    /// The same message under another UID (mailbox rebuilt, copied back) was answered.
    fn answered_elsewhere(&self, at: MessageRef, key: &str) -> Result<bool, Error> {
        let journal = self.journal;
        Ok(journal
            .state_by_message_id(key)?
            .is_some_and(|s| s >= State::Sent)
            && journal
                .state(at.uidvalidity, at.uid)?
                .is_some_and(|s| s < State::Sending))
    }

    /// Every outgoing message of the plan in order; a refusal stops the rest and sends
    /// the message to a person. Its documents are kept once all went out; with a CRM
    /// configured, they are kept and the CRM steps done first, so that a step the CRM
    /// refuses (a registration no longer Approved) stops the answers that announce it.
    async fn send_answers(
        &mut self,
        session: &mut Imap,
        job: InHand<'_>,
        mail: &Mail,
        sending: &mut Sending,
    ) -> Result<(), Error> {
        let InHand { at, key, plan } = job;
        self.journal.advance(
            at.uidvalidity,
            at.uid,
            Some(key),
            State::Sending,
            &plan.reason,
        )?;
        let crm_first = self.config().crm.is_some() && !plan.crm_actions.is_empty();
        if crm_first {
            self.keep_and_record(job, mail, sending, "nothing was sent")
                .await?;
        }
        let book = self.book;
        let domain = &book.config.desk.message_id_domain;
        for (i, out) in plan.outgoing.iter().enumerate() {
            if sending.human_reason.is_some() {
                break;
            }
            let msg_id = threading::message_id_for(key, i, out, domain);
            let before = self.journal.outbox_state(&msg_id)?;
            let what = out.kind.as_str();
            let answer = Answer {
                out,
                msg_id,
                what,
                before,
            };
            if !self.send_one(session, job, mail, &answer, sending).await? {
                break;
            }
        }
        if sending.human_reason.is_none() {
            if !crm_first {
                self.keep_and_record(job, mail, sending, "the answer went out")
                    .await?;
            }
            self.journal
                .advance(at.uidvalidity, at.uid, Some(key), State::Sent, &plan.reason)?;
        }
        // Everything went out and is recorded as such; only a Sent copy is missing.
        sending.human_reason = sending.human_reason.take().or(sending.copy_refused.take());
        Ok(())
    }

    /// The documents kept, then the CRM steps; a document that cannot be written (a full
    /// disk, a name the file system refuses) or a step the CRM refuses is this message's
    /// problem, for a person, with `so_far` saying what already happened.
    async fn keep_and_record(
        &mut self,
        job: InHand<'_>,
        mail: &Mail,
        sending: &mut Sending,
        so_far: &str,
    ) -> Result<(), Error> {
        let InHand { at, key, plan } = job;
        if let Err(e) = kept_documents::keep(self.config(), mail, plan) {
            error!(uid = at.uid, "{e}");
            self.opts.health.error("documents");
            sending.human_reason = Some(format!(
                "{so_far}, but a document could not be kept for the CRM: {e}"
            ));
            return Ok(());
        }
        let Some(crm) = &self.config().crm else {
            return Ok(());
        };
        let documents = &self.config().service.documents;
        match crate::shell::crm::carry_out(crm, documents, self.journal, key, at, plan).await {
            Ok(()) => {}
            Err(crate::shell::crm::Error::Journal(e)) => return Err(e.into()),
            Err(e) => {
                error!(uid = at.uid, "{e}");
                self.opts.health.error("crm");
                sending.human_reason =
                    Some(format!("{so_far}, but a CRM step was not carried out: {e}"));
            }
        }
        Ok(())
    }

    /// One answer: sent (or found sent before a crash), recorded, copied to Sent. False
    /// when the rest of the plan must not go out.
    async fn send_one(
        &mut self,
        session: &mut Imap,
        job: InHand<'_>,
        mail: &Mail,
        answer: &Answer<'_>,
        sending: &mut Sending,
    ) -> Result<bool, Error> {
        let InHand { at, key, plan } = job;
        let what = answer.what;
        match answer.before {
            Some(Outbox::Filed) => return Ok(true),
            Some(Outbox::Failed) => {
                sending.human_reason = Some(format!(
                    "the SMTP server refused the {what} before a restart"
                ));
                return Ok(false);
            }
            _ => {}
        }
        let message = match self.compose(mail, answer) {
            Ok(m) => m,
            Err(e) => {
                sending.human_reason = Some(format!("cannot write the {what}: {e}"));
                return Ok(false);
            }
        };
        // `sent`: accepted and recorded before a restart; only its Sent copy may be
        // missing. `sending`: killed before the final dot, so the server discarded it.
        // Only `committing` (or `received`) may have gone out.
        let recorded = matches!(answer.before, Some(Outbox::Sent | Outbox::Appending));
        let mut send_now = matches!(answer.before, None | Some(Outbox::Sending));
        let mut note = "";
        if !recorded && !send_now {
            sending.left_inbox = true;
            let accepted = answer.before == Some(Outbox::Received)
                || self.went_out(session, &answer.msg_id).await?;
            if accepted {
                info!(
                    uid = at.uid,
                    "{}: sent before the restart (its copy is here)", answer.msg_id
                );
                note = " (confirmed after a restart)";
            } else {
                info!(
                    uid = at.uid,
                    "{}: not sent before the restart; sending now", answer.msg_id
                );
                send_now = true;
            }
        }
        let mut server_said = String::new();
        if send_now {
            match self.submit(at, key, &message, answer, sending).await? {
                Some(said) => server_said = format!("; the server said {said}"),
                None => return Ok(false),
            }
            if self.config().smtp.as_ref().is_some_and(|c| c.self_copy) {
                self.awaiting_copies.insert(answer.msg_id.clone());
            }
        }
        if !recorded {
            let (out, msg_id) = (answer.out, &answer.msg_id);
            let detail = answer.detail(&format!("{note}{server_said}"));
            self.journal
                .record_sent(msg_id, key, at, plan, out, &detail)?;
        }
        self.copy_to_sent(session, at, &message, answer, send_now, sending)
            .await?;
        self.journal
            .set_outbox(&answer.msg_id, Some(key), Outbox::Filed)?;
        Ok(true)
    }

    /// The answer as it will be sent.
    pub(super) fn compose(&self, mail: &Mail, answer: &Answer) -> Result<Message, String> {
        outbox::compose(self.config(), mail, answer.out, &answer.msg_id)
    }

    /// The SMTP exchange, recorded before (`sending`) and at its point of no return
    /// (`committing`). False when the server refused it for good.
    pub(super) async fn submit(
        &self,
        at: MessageRef<'_>,
        key: &str,
        message: &Message,
        answer: &Answer<'_>,
        sending: &mut Sending,
    ) -> Result<Option<String>, Error> {
        let (journal, msg_id, what, out) = (self.journal, &answer.msg_id, answer.what, answer.out);
        let smtp_cfg = self.config().smtp.as_ref().expect("checked");
        journal.set_outbox(msg_id, Some(key), Outbox::Sending)?;
        let self_copy = smtp_cfg
            .self_copy
            .then_some(self.config().desk.address.as_str());
        let commit = || {
            journal
                .set_outbox(msg_id, Some(key), Outbox::Committing)
                .map_err(|e| e.to_string())
        };
        let said = match self.smtp.send(message, self_copy, commit).await {
            Ok(said) => {
                self.opts.health.smtp(true);
                self.opts.health.sent(what);
                said
            }
            Err(Refusal::Permanent(e)) => {
                self.opts.health.error("smtp_refused");
                error!(uid = at.uid, "SMTP refused the {what} to {:?}: {e}", out.to);
                sending.human_reason = Some(format!(
                    "SMTP refused the {what} to {} (cc {}): {e}",
                    out.to.join(", "),
                    out.cc.join(", ")
                ));
                sending.smtp_error = Some(e);
                journal.set_outbox(msg_id, Some(key), Outbox::Failed)?;
                return Ok(None);
            }
            // Left `sending` (nothing went out) or `committing` (the next session looks
            // for the receipt before sending again).
            Err(Refusal::Transient(e)) => {
                self.opts.health.smtp(false);
                return Err(Error::Smtp(e));
            }
        };
        Ok(Some(said))
    }

    /// The copy in Sent, as a person's reply would leave one. After a restart it may be
    /// there already, unless we just found it missing and sent. A server that files what
    /// it sends by itself (Gmail) gets no APPEND.
    async fn copy_to_sent(
        &self,
        session: &mut Imap,
        at: MessageRef<'_>,
        message: &Message,
        answer: &Answer<'_>,
        sent_now: bool,
        sending: &mut Sending,
    ) -> Result<(), Error> {
        let Some(sent) = &self.places.sent else {
            return Ok(());
        };
        let t = self.t();
        let restarted = answer.before.is_some();
        // A copy whose APPEND had begun may still be landing; one never started is not.
        let window = match answer.before {
            Some(Outbox::Appending) => COPY_SETTLES_SECONDS,
            _ => 0.0,
        };
        let filed_before =
            restarted && !sent_now && self.turns_up(session, sent, &answer.msg_id, window).await?;
        sending.left_inbox |= restarted;
        if filed_before {
            return Ok(());
        }
        self.journal
            .set_outbox(&answer.msg_id, None, Outbox::Appending)?;
        match mailbox::append(session, sent, &message.formatted(), "\\Seen", t).await {
            Ok(()) => Ok(()),
            // The answer went out; only its copy is missing: a person should know, and
            // the next message goes on.
            Err(Trouble::Refused(w)) => {
                error!(uid = at.uid, "{w}");
                sending.copy_refused = Some(copy_refused(answer.what, &w));
                Ok(())
            }
            Err(broken) => Err(broken.into()),
        }
    }

    /// Whether `folder` holds `msg_id`, looked for again until `window` seconds after
    /// its outbox row last changed (a restarted service does not wait the whole window
    /// again; by this clock it waits at most the window).
    async fn turns_up(
        &self,
        session: &mut Imap,
        folder: &str,
        msg_id: &str,
        window: f64,
    ) -> Result<bool, Error> {
        let t = self.t();
        let age = self.journal.outbox_age_seconds(msg_id)?.unwrap_or(0.0);
        let left = (window - age.max(0.0)).max(0.0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(left);
        loop {
            if mailbox::has_message_id(session, folder, msg_id, t).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The original filed by its plan's role, or set aside for a person with the reason.
    async fn finish(
        &self,
        session: &mut Imap,
        at: MessageRef<'_>,
        key: &str,
        plan: &Plan,
        sending: Sending,
    ) -> Result<(), Error> {
        let mut human_reason = sending.human_reason;
        if sending.left_inbox {
            // Settling a crash examined other folders; filing works on the inbox.
            mailbox::select(session, at.mailbox, self.t()).await?;
        }
        if !plan.original.human && human_reason.is_none() {
            match self.file_answered(session, at, key, plan).await? {
                None => return Ok(()),
                Some(why) => human_reason = Some(why),
            }
        }
        let reason = human_reason.unwrap_or_else(|| plan.reason.clone());
        self.leave_for_human(session, at, key, plan, reason, sending.smtp_error)
            .await
    }

    /// After a crash in `committing`: a copy in Sent, or our own copy come back to the
    /// inbox, means the server accepted the message. The own copy may still be on its
    /// way, so it is waited for, counting from when the message went `committing`.
    async fn went_out(&self, session: &mut Imap, msg_id: &str) -> Result<bool, Error> {
        let config = self.config();
        let t = self.t();
        if mailbox::has_message_id(session, &self.places.sent_lookup, msg_id, t).await? {
            return Ok(true);
        }
        let smtp_cfg = config.smtp.as_ref().expect("checked");
        if !smtp_cfg.self_copy {
            return Ok(false);
        }
        let window = smtp_cfg.self_copy_wait_seconds as f64;
        self.turns_up(session, &config.folders.inbox, msg_id, window)
            .await
    }

    /// `--once` leaves the inbox as it found it, less what it handled: it waits for the
    /// own copies of what it sent (self_copy_wait_seconds) and removes them.
    pub async fn collect_own_copies(&mut self, session: &mut Imap) -> Result<(), Error> {
        let wait = self
            .config()
            .smtp
            .as_ref()
            .expect("checked")
            .self_copy_wait_seconds;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        while !self.awaiting_copies.is_empty() && !self.opts.stopping() {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    "the own copies of {} sent messages did not come back within {wait} s; is smtp.self_copy right for this server?",
                    self.awaiting_copies.len()
                );
                self.awaiting_copies.clear();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.drain(session).await?;
        }
        Ok(())
    }
}

/// The plan's attachment positions count winmail.dat's files, not winmail.dat, so the
/// message is parsed again for its attachments. A parser panic here (decide() already
/// caught it once) must not stop the service either: the message then has no mail.
pub(super) fn parse_for_attachments(raw: &[u8]) -> Option<Mail> {
    std::panic::catch_unwind(|| {
        let mut m = Mail::parse(raw).ok()?;
        crate::core::plan::unwrap_attachments(&mut m);
        Some(m)
    })
    .ok()
    .flatten()
}
