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
use crate::core::plan::{Kind, Outgoing};
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
            let config = self.config();
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                outbox::compose_draft(config, mail, out, &msg_id, note)
            }));
            let message: Message = match built.unwrap_or_else(|_| Err("internal error".into())) {
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

    /// Looks for what became of the drafts waiting for a person.
    pub async fn follow_drafts(&mut self, session: &mut Imap) -> Result<(), Error> {
        let Some(folder) = self.places.drafts.clone() else {
            return Ok(());
        };
        let waiting = self.journal.waiting_drafts(FOLLOWED_PER_PASS)?;
        for (draft_id, key, minutes) in &waiting {
            self.follow_one(session, &folder, draft_id, key, *minutes)
                .await?;
        }
        self.opts
            .health
            .drafts_waiting(self.journal.drafts_waiting()?);
        if !waiting.is_empty() {
            let inbox = self.config().folders.inbox.clone();
            mailbox::select(session, &inbox, self.t()).await?;
        }
        Ok(())
    }

    /// One draft: sent (approved), or gone unsent long enough (discarded), or still
    /// waiting.
    async fn follow_one(
        &mut self,
        session: &mut Imap,
        drafts: &str,
        draft_id: &str,
        key: &str,
        minutes: f64,
    ) -> Result<(), Error> {
        let t = self.t();
        let Some((uidvalidity, uid, Some(plan))) = self.journal.place_of(key)? else {
            return Ok(());
        };
        let inbox = self.config().folders.inbox.clone();
        let at = MessageRef {
            mailbox: &inbox,
            uidvalidity,
            uid,
        };
        let domain = &self.book.config.desk.message_id_domain;
        let Some(out) = (plan.outgoing.iter().enumerate())
            .find(|(i, o)| {
                threading::message_id_for(key, *i, o, domain).eq_ignore_ascii_case(draft_id)
            })
            .map(|(_, o)| o.clone())
        else {
            return Ok(());
        };
        // A client may keep the draft's Message-ID or give a new one; a reply keeps
        // In-Reply-To, the original's.
        let mut query = format!("HEADER Message-ID {}", quoted_id(draft_id));
        if let (Kind::Reply, Some(original)) = (out.kind, &plan.message_id) {
            query = format!("OR {query} HEADER In-Reply-To {}", quoted_id(original));
        }
        let sent = self.places.sent_lookup.clone();
        if let Some(&found) = mailbox::search(session, &sent, &query, t).await?.last() {
            let raw = mailbox::fetch(session, found, t).await?.unwrap_or_default();
            let what = approval(&raw, &out, draft_id, plan.draft_note.as_deref());
            self.journal
                .settle_draft(draft_id, Outbox::Approved, at, &plan, &what)?;
            self.opts.health.draft("approved");
            info!(uid, "draft {draft_id} approved: {what}");
            return Ok(());
        }
        let discard_after = self.config().drafts.discard_after_minutes as f64;
        if minutes < discard_after || mailbox::has_message_id(session, drafts, draft_id, t).await? {
            return Ok(());
        }
        let what = format!("deleted from {drafts} unsent; nothing was sent for this message");
        self.journal
            .settle_draft(draft_id, Outbox::Discarded, at, &plan, &what)?;
        self.opts.health.draft("discarded");
        info!(uid, "draft {draft_id} discarded");
        Ok(())
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
