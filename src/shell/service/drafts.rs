//! Drafts for a person: written to Drafts exactly once, then followed until a person
//! sends them (the copy in Sent: `approved`, by whom, edited or not) or deletes them
//! (gone from Drafts unsent after `drafts.discard_after_minutes`: `discarded`).

use std::collections::BTreeSet;

use lettre::Message;
use tracing::{error, info, warn};

use super::answering::InHand;
use super::inbox::Shell;
use super::Error;
use crate::core::message::Mail;
use crate::core::plan::{Kind, Outgoing, Plan};
use crate::core::threading::{self, answer_mark};
use crate::shell::journal::{MessageRef, Outbox};
use crate::shell::mailbox::{self, quoted_id, Imap, Trouble};
use crate::shell::outbox;

/// Drafts followed per pass; the rest wait for the next one.
const FOLLOWED_PER_PASS: u32 = 50;

impl Shell<'_> {
    /// Each outgoing message of a draft plan APPENDed to Drafts with `\Draft`, once:
    /// `drafting` before the APPEND, `drafted` after; after a crash in between, the
    /// Drafts folder says whether it is there. True when other folders were examined.
    pub async fn write_drafts(
        &mut self,
        session: &mut Imap,
        job: InHand<'_>,
        mail: &Mail,
    ) -> Result<bool, Error> {
        let InHand { at, key, plan } = job;
        let Some(folder) = self.places.drafts.clone() else {
            warn!(uid = at.uid, "no Drafts folder was set up at start (drafting began with a reload): restart the service; the message is left for a person");
            return Ok(false);
        };
        let (book, t) = (self.book, self.t());
        let domain = &book.config.desk.message_id_domain;
        let mut examined = false;
        for (i, out) in plan.outgoing.iter().enumerate() {
            let msg_id = threading::message_id_for(key, i, out, domain);
            match self.journal.outbox_state(&msg_id)? {
                Some(Outbox::Drafted | Outbox::Approved | Outbox::Discarded) => continue,
                Some(Outbox::Drafting) => {
                    examined = true;
                    if mailbox::has_message_id(session, &folder, &msg_id, t).await? {
                        self.journal.record_drafted(
                            &msg_id,
                            key,
                            at,
                            plan,
                            out,
                            &detail(&msg_id, out),
                        )?;
                        continue;
                    }
                }
                _ => {}
            }
            let note = plan.draft_note.as_deref().unwrap_or("");
            let built = outbox::compose_draft(self.config(), mail, out, &msg_id, note);
            let message: Message = match built {
                Ok(m) => m,
                Err(e) => {
                    error!(uid = at.uid, "cannot write the draft: {e}");
                    continue;
                }
            };
            self.journal
                .set_outbox(&msg_id, Some(key), Outbox::Drafting)?;
            match mailbox::append(session, &folder, &message.formatted(), "\\Draft \\Seen", t).await
            {
                Ok(()) => {}
                // The message is left for a person all the same, without its draft.
                Err(Trouble::Refused(w)) => {
                    error!(uid = at.uid, "{w}");
                    self.journal
                        .set_outbox(&msg_id, Some(key), Outbox::Failed)?;
                    continue;
                }
                Err(broken) => return Err(broken.into()),
            }
            self.journal
                .record_drafted(&msg_id, key, at, plan, out, &detail(&msg_id, out))?;
            self.opts.health.draft("drafted");
            info!(uid = at.uid, "draft {msg_id} written to {folder}");
        }
        Ok(examined)
    }

    /// Looks for what became of the drafts waiting for a person: Sent is examined once
    /// for all of them, Drafts once for those unsent long enough to count as discarded.
    pub async fn follow_drafts(&mut self, session: &mut Imap) -> Result<(), Error> {
        let Some(drafts) = self.places.drafts.clone() else {
            return Ok(());
        };
        let mut waiting = Vec::new();
        for (draft_id, key, minutes) in self.journal.waiting_drafts(FOLLOWED_PER_PASS)? {
            waiting.extend(self.waiting_draft(draft_id, &key, minutes)?);
        }
        if !waiting.is_empty() {
            let t = self.t();
            mailbox::examine(session, &self.places.sent_lookup, t).await?;
            let mut unsent = Vec::new();
            for draft in waiting {
                match mailbox::search(session, &draft.sent_query(), t)
                    .await?
                    .last()
                {
                    Some(&uid) => self.approved(session, &draft, uid).await?,
                    None => unsent.push(draft),
                }
            }
            let discard_after = self.config().drafts.discard_after_minutes as f64;
            unsent.retain(|d| d.minutes >= discard_after);
            if !unsent.is_empty() {
                mailbox::examine(session, &drafts, t).await?;
            }
            for draft in unsent {
                if !mailbox::holds_message_id(session, &draft.id, t).await? {
                    self.discarded(&draft, &drafts)?;
                }
            }
            let inbox = self.config().folders.inbox.clone();
            mailbox::select(session, &inbox, t).await?;
        }
        let waiting = self.journal.drafts_waiting()?;
        self.opts.health.drafts_waiting(waiting);
        Ok(())
    }

    /// A draft the journal says waits, with the message and plan it belongs to.
    fn waiting_draft(&self, id: String, key: &str, minutes: f64) -> Result<Option<Waiting>, Error> {
        let Some((uidvalidity, uid, Some(plan))) = self.journal.place_of(key)? else {
            return Ok(None);
        };
        let domain = &self.book.config.desk.message_id_domain;
        let out = (plan.outgoing.iter().enumerate())
            .find(|(i, o)| threading::message_id_for(key, *i, o, domain).eq_ignore_ascii_case(&id))
            .map(|(_, o)| o.clone());
        Ok(out.map(|out| Waiting {
            id,
            minutes,
            uidvalidity,
            uid,
            plan,
            out,
        }))
    }

    /// A person sent it: who, when, and what they changed, on record.
    async fn approved(
        &mut self,
        session: &mut Imap,
        draft: &Waiting,
        found: u32,
    ) -> Result<(), Error> {
        let raw = mailbox::fetch(session, found, self.t())
            .await?
            .unwrap_or_default();
        let what = approval(
            &raw,
            &draft.out,
            &draft.id,
            draft.plan.draft_note.as_deref(),
        );
        let inbox = self.config().folders.inbox.clone();
        let at = draft.at(&inbox);
        self.journal
            .settle_draft(&draft.id, Outbox::Approved, at, &draft.plan, &what)?;
        self.opts.health.draft("approved");
        info!(uid = draft.uid, "draft {} approved: {what}", draft.id);
        Ok(())
    }

    /// Gone from Drafts unsent for long enough: nothing was sent for the message.
    fn discarded(&mut self, draft: &Waiting, drafts: &str) -> Result<(), Error> {
        let what = format!("deleted from {drafts} unsent; nothing was sent for this message");
        let inbox = self.config().folders.inbox.clone();
        self.journal.settle_draft(
            &draft.id,
            Outbox::Discarded,
            draft.at(&inbox),
            &draft.plan,
            &what,
        )?;
        self.opts.health.draft("discarded");
        info!(uid = draft.uid, "draft {} discarded", draft.id);
        Ok(())
    }
}

/// A draft waiting for a person, with what is needed to recognise it sent.
struct Waiting {
    id: String,
    minutes: f64,
    uidvalidity: u32,
    uid: u32,
    plan: Plan,
    out: Outgoing,
}

impl Waiting {
    fn at<'a>(&self, inbox: &'a str) -> MessageRef<'a> {
        MessageRef::new(inbox, self.uidvalidity, self.uid)
    }

    /// Its copy in Sent: a client may keep the draft's Message-ID or give a new one; a
    /// reply keeps In-Reply-To, the original's.
    fn sent_query(&self) -> String {
        let by_id = format!("HEADER Message-ID {}", quoted_id(&self.id));
        match (self.out.kind, &self.plan.message_id) {
            (Kind::Reply, Some(original)) => {
                format!("OR {by_id} HEADER In-Reply-To {}", quoted_id(original))
            }
            _ => by_id,
        }
    }
}

fn detail(msg_id: &str, out: &Outgoing) -> String {
    format!(
        "{msg_id} in Drafts, to {} cc {}",
        out.to.join(","),
        out.cc.join(",")
    )
}

/// Who sent the draft, when, and whether its text or its recipients were changed. The
/// note for the person is expected to go; anything else changed is an edit.
fn approval(raw: &[u8], draft: &Outgoing, draft_id: &str, note: Option<&str>) -> String {
    let Ok(sent) = Mail::parse(raw) else {
        return "sent (the copy in Sent cannot be read)".into();
    };
    let who = (sent.sender.as_ref().or(sent.from.as_ref()))
        .map(|m| m.address.clone())
        .unwrap_or_else(|| "(no From)".into());
    let when = sent.date.clone().unwrap_or_else(|| "(no Date)".into());
    let squeeze = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut written = squeeze(&sent.text);
    if let Some(note) = note {
        written = squeeze(&written.replace(&squeeze(note), ""));
    }
    let body = squeeze(&draft.body);
    let marked = squeeze(&format!("{body} {}", answer_mark(draft_id)));
    let text = if written == marked || written == body {
        "text as drafted"
    } else {
        "text edited"
    };
    let people = |list: &mut dyn Iterator<Item = String>| -> BTreeSet<String> {
        list.map(|a| a.to_lowercase()).collect()
    };
    let now = people(&mut sent.to.iter().chain(&sent.cc).map(|m| m.address.clone()));
    let then = people(&mut draft.to.iter().chain(&draft.cc).cloned());
    let recipients = if now == then {
        "recipients as drafted".to_string()
    } else {
        let now: Vec<String> = now.into_iter().collect();
        format!("recipients changed to {}", now.join(", "))
    };
    format!("sent by {who} on {when}: {text}, {recipients}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Outgoing {
        Outgoing {
            kind: Kind::Reply,
            to: vec!["alice@reseller.example".into()],
            cc: vec!["rep.one@example.com".into()],
            template: "t".into(),
            subject: "Re: PO".into(),
            attachments: Vec::new(),
            attachment_index: Vec::new(),
            attachment_sha256: Vec::new(),
            body: "Thank you for your order.\n\nPartner Help Desk".into(),
            in_reply_to: None,
            references: Vec::new(),
        }
    }

    fn sent(cc: &str, text: &str) -> Vec<u8> {
        format!(
            "From: Desk <partnersupport@example.com>\r\nTo: alice@reseller.example\r\nCc: {cc}\r\nSubject: Re: PO\r\nDate: Wed, 2 Dec 2026 10:00:00 +0000\r\n\r\n{text}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_note_may_go_anything_else_changed_is_an_edit() {
        let id = "<x.triage@example.com>";
        let note = "[triage] A draft: nothing was sent. Limit.\nCheck it.\n";
        let mark = answer_mark(id);
        let body = "Thank you for your order.\n\nPartner Help Desk";
        let as_drafted = sent("rep.one@example.com", &format!("{body}\n\n{mark}"));
        let said = approval(&as_drafted, &draft(), id, Some(note));
        assert!(
            said.contains("text as drafted, recipients as drafted"),
            "{said}"
        );
        assert!(
            said.starts_with("sent by partnersupport@example.com"),
            "{said}"
        );

        let with_note = sent("rep.one@example.com", &format!("{note}\n{body}\n\n{mark}"));
        assert!(approval(&with_note, &draft(), id, Some(note)).contains("text as drafted"));

        let edited = sent(
            "rep.two@example.com",
            &format!("Hi Alice,\n{body}\n\n{mark}"),
        );
        let said = approval(&edited, &draft(), id, Some(note));
        assert!(said.contains("text edited"), "{said}");
        assert!(
            said.contains("recipients changed to alice@reseller.example, rep.two@example.com"),
            "{said}"
        );
    }
}
