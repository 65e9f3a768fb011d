//! triage: the partner help desk's shared mailbox, sorted and answered unattended.
//!
//! Two halves, and the line between them is the [`core::plan::Plan`]:
//!
//! - [`core`] decides, with no I/O: raw bytes + the playbook (config, rules, directory,
//!   templates) → a plan. [`core::message`] reads the message, [`core::guard`] says whether
//!   it may be answered at all (machine mail, our own thread, verified sender),
//!   [`core::rules`] classifies it, [`core::directory`] finds the partner and the people,
//!   [`core::templates`] writes the answer, [`core::plan`] puts it together, and
//!   [`core::restraint`] holds it back when history (answers already sent, bounces, the
//!   circuit breaker) says so.
//! - [`shell`] carries plans out and is the only place that talks to the world or retries:
//!   [`shell::service`] takes the inbox pass (fetch → plan → journal → send → file) over
//!   [`shell::mailbox`] (IMAP) and [`shell::outbox`] (SMTP), with [`shell::journal`] making
//!   every answer exactly-once across crashes.
//! - [`review`] is for the people who read what it did: the audit log, replay, the casebook.
//!
//! The commands (`triage run`, `classify`, `check`, `audit`, …) live in `src/cli/`, one
//! file each.

pub mod core;
pub mod review;
pub mod shell;
