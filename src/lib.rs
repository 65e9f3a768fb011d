//! triage: the partner help desk's shared mailbox, sorted and answered unattended.
//!
//! The decision core is pure: [`message`] reads a message, [`guard`] decides whether it may
//! be answered at all, [`restraint`] whether history (answers already sent, bounces, the
//! circuit breaker) holds it back, [`rules`] classifies it, [`directory`] finds the people, [`templates`]
//! writes the answer, and [`plan`] puts it together as one serializable [`plan::Plan`].
//! The service around it (IMAP, SMTP, journal) only executes plans.

pub mod audit;
pub mod backoff;
pub mod casebook;
pub mod config;
pub mod consent;
pub mod directory;
pub mod documents;
pub mod escape;
pub mod folders;
pub mod guard;
pub mod health;
pub mod journal;
pub mod mailbox;
pub mod message;
pub mod oauth;
pub mod outbox;
pub mod plan;
pub mod problems;
pub mod reload;
pub mod replay;
pub mod restraint;
pub mod rules;
pub mod service;
pub mod templates;
pub mod tnef;
