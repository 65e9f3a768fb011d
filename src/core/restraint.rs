//! The brakes on automatic answers that depend on what the desk sent before: so many
//! answers per sender and category per period (Sieve vacation's `:days`), a circuit
//! breaker over everything sent, and addresses our mail bounced from. Pure, like the rest
//! of the decision: the service reads the history from the journal and passes it in.

use serde::Serialize;

use crate::core::config::Config;
use crate::core::plan::{Kind, Plan};
use crate::core::rules::Respond;

/// What the journal knows that bears on one plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// Automatic replies already sent to this sender in this category within
    /// `limits.per_sender.hours`.
    pub answers_to_sender: u32,
    /// Automatic messages (replies and forwards) sent within the breaker's window.
    pub sent_recently: u32,
    /// When the breaker is open: since when and why.
    pub breaker_open: Option<String>,
    /// Recipients of this plan whose mail bounced, with the date the block ends.
    pub bounced: Vec<(String, String)>,
}

/// The outcome when the plan may not be carried out as decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brake {
    /// No automatic answer to this message; it is left for a human.
    Held(String),
    /// As Held, and this plan is the one that trips the circuit breaker.
    Tripped(String),
}

/// Applies the brakes to a freshly decided plan. A held plan keeps its category, rule and
/// evidence (the audit shows what would have been sent and why it was not) but sends
/// nothing and leaves the message for a human.
pub fn restrain(plan: &mut Plan, history: &History, config: &Config) -> Option<Brake> {
    let limits = &config.limits;
    if plan.respond != Respond::Auto || plan.outgoing.is_empty() {
        return None;
    }
    let brake = if let Some((addr, until)) = history.bounced.first() {
        Brake::Held(format!(
            "our earlier mail to {addr} bounced; no automatic answer to it until {until}"
        ))
    } else if plan.outgoing.iter().any(|o| o.kind == Kind::Reply)
        && history.answers_to_sender >= limits.per_sender.answers
    {
        Brake::Held(format!(
            "{} already got {} automatic {} answer{} in the last {} h (limit {})",
            plan.from.as_deref().unwrap_or("the sender"),
            history.answers_to_sender,
            plan.category,
            if history.answers_to_sender == 1 {
                ""
            } else {
                "s"
            },
            limits.per_sender.hours,
            limits.per_sender.answers
        ))
    } else if let Some(since) = &history.breaker_open {
        Brake::Held(format!(
            "the circuit breaker is open ({since}); nothing is sent until an operator runs `triage breaker reset`"
        ))
    } else if history.sent_recently + plan.outgoing.len() as u32 > limits.circuit_breaker.answers {
        Brake::Tripped(format!(
            "{} automatic messages in the last {} min would pass the limit of {}",
            history.sent_recently + plan.outgoing.len() as u32,
            limits.circuit_breaker.minutes,
            limits.circuit_breaker.answers
        ))
    } else {
        return None;
    };
    let why = match &brake {
        Brake::Held(w) => w.clone(),
        Brake::Tripped(w) => format!("circuit breaker opened: {w}"),
    };
    let would = plan
        .outgoing
        .iter()
        .map(|o| {
            let kind = o.kind.as_str();
            format!("{kind} to {} ({})", o.to.join(", "), o.template)
        })
        .collect::<Vec<_>>()
        .join("; ");
    plan.evidence.push(format!("held back: {would}"));
    plan.guards.push(why.clone());
    // A draft instead, when the desk wants one; never to an address that bounced.
    if config.drafts.when_held && history.bounced.is_empty() {
        crate::core::plan::make_draft(plan, &why, "", config);
        return Some(brake);
    }
    plan.reason = format!("no automatic answer: {why}");
    plan.respond = Respond::None;
    plan.outgoing.clear();
    plan.keep_documents.clear();
    plan.crm_updates.clear();
    plan.crm_actions.clear();
    plan.original.human = true;
    plan.original.folder = config.folders.human.clone();
    Some(brake)
}
