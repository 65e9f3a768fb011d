//! The brakes that need the journal's memory, applied once when a plan is made: bounces
//! (only for mail the journal shows we sent), answers per sender, the circuit breaker.
//! And the audit log's retention.

use tracing::{error, info, warn};

use super::inbox::Shell;
use super::Error;
use crate::core::config::Config;
use crate::core::plan::Plan;
use crate::core::restraint::{self, Brake, History};
use crate::core::rules::Respond;
use crate::core::threading;
use crate::shell::journal::Journal;

impl Shell<'_> {
    /// The plan is then recorded as held or not.
    pub fn restrain(&self, plan: &mut Plan) -> Result<(), Error> {
        let limits = &self.config().limits;
        if !plan.bounced.is_empty() {
            self.confirm_bounce(plan)?;
        }
        if !plan.bounced.is_empty() && !self.opts.shadow {
            let bounce = plan.message_id.as_deref().unwrap_or("");
            self.journal
                .block_bounced(&plan.bounced, limits.bounce_block_days, bounce)?;
            warn!(
                "our mail to {} bounced: no automatic answer to it for {} days",
                plan.bounced.join(", "),
                limits.bounce_block_days
            );
        }
        if plan.respond != Respond::Auto {
            return Ok(());
        }
        let history = self.history(plan)?;
        let breaker_was_open = history.breaker_open.is_some();
        match restraint::restrain(plan, &history, self.config()) {
            Some(Brake::Tripped(why)) => {
                self.opts.health.breaker(true);
                if !self.opts.shadow {
                    self.journal
                        .open_breaker(&limits.circuit_breaker.setting(), &why)?;
                }
                error!("CIRCUIT BREAKER OPEN: {why}. Nothing is sent automatically until an operator runs `triage breaker reset` (or changes limits.circuit_breaker); messages are still decided, recorded and left for a human.");
            }
            Some(Brake::Held(why)) if breaker_was_open => error!("circuit breaker open: {why}"),
            Some(Brake::Held(why)) => warn!("held back: {why}"),
            None => {}
        }
        Ok(())
    }

    /// What the journal remembers that the brakes ask about.
    fn history(&self, plan: &Plan) -> Result<History, Error> {
        let limits = &self.config().limits;
        let journal = self.journal;
        let recipients = plan.outgoing.iter().flat_map(|o| o.to.iter().chain(&o.cc));
        // Answers decided earlier in this batch and not sent yet count as sent.
        let pending = self.pending.borrow();
        let answers_to_sender = match &plan.from {
            Some(from) => {
                let category = plan.category.as_str();
                let key = (from.clone(), category.to_string());
                journal.answers_to_sender(from, category, limits.per_sender.hours)?
                    + pending.replies.get(&key).copied().unwrap_or(0)
            }
            None => 0,
        };
        Ok(History {
            answers_to_sender,
            sent_recently: journal.sent_recently(limits.circuit_breaker.minutes)?
                + pending.outgoing,
            breaker_open: journal.breaker_open(&limits.circuit_breaker.setting())?,
            bounced: journal.bounced(recipients)?,
        })
    }

    /// A bounce blocks only addresses the journal shows we wrote to in the message it is
    /// about: a DSN naming other people, or a Message-ID we never sent, blocks nobody.
    fn confirm_bounce(&self, plan: &mut Plan) -> Result<(), Error> {
        let recipients = self.recipients_of(&plan.bounce_of)?;
        let (kept, dropped): (Vec<String>, Vec<String>) = std::mem::take(&mut plan.bounced)
            .into_iter()
            .partition(|a| recipients.contains(a));
        if !dropped.is_empty() {
            let them = if dropped.len() == 1 { "it" } else { "them" };
            let why = format!(
                "the delivery report names {} but the journal shows no mail of ours to {them} in the message it is about: nobody blocked for {them}",
                dropped.join(", "),
            );
            warn!("{why}");
            if kept.is_empty() {
                plan.reason = format!("{why}; left for a human");
            }
            plan.guards.push(why);
        }
        plan.bounced = kept;
        Ok(())
    }

    /// Everyone (To and Cc, lower case) our messages with these Message-IDs went to.
    fn recipients_of(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        let domain = &self.config().desk.message_id_domain;
        let mut recipients = Vec::new();
        for id in ids {
            let angled = format!("<{id}>");
            let Some(key) = self.journal.sent_answer_original(&angled)? else {
                continue;
            };
            for stored in self.journal.plans_by_key(&key)? {
                for (i, out) in stored.outgoing.iter().enumerate() {
                    if threading::message_id_for(&key, i, out, domain).eq_ignore_ascii_case(&angled)
                    {
                        recipients.extend(out.to.iter().chain(&out.cc).map(|a| a.to_lowercase()));
                    }
                }
            }
        }
        Ok(recipients)
    }
}

/// Retention of the audit log (`service.audit_retention_days`) and of the messages'
/// bytes kept for replay (`service.keep_messages_days`).
pub(super) fn expire_audit(journal: &Journal, config: &Config) -> Result<(), Error> {
    let days = config.service.audit_retention_days;
    let n = journal.expire_audit(days)?;
    if n > 0 {
        info!("audit log: {n} records older than {days} days deleted");
    }
    let keep = config.service.keep_messages_days;
    let n = journal.expire_raw(keep)?;
    if n > 0 {
        info!("{n} messages' bytes older than {keep} days forgotten (no replay for them)");
    }
    Ok(())
}
