//! The imperative shell: IMAP, SMTP, the journal, metrics and sign-in. It executes plans
//! made by [`crate::core`] and is the only place that retries.

pub mod backoff;
pub mod clock;
pub mod consent;
pub mod crm;
pub mod document_reader;
pub mod document_server;
pub mod folders;
pub mod health;
pub mod journal;
pub mod mailbox;
pub mod oauth;
pub mod outbox;
pub mod reload;
pub mod review_site;
pub mod service;
