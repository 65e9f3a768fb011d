//! The decision core: bytes + playbook → [`plan::Plan`], with no network, no journal, no
//! clock of its own. The one process it may start is the sandboxed document reader
//! ([`documents::Reader`]), handed in by the caller.

pub mod config;
pub mod directory;
pub mod documents;
pub mod escape;
pub mod guard;
pub mod message;
pub mod plan;
pub mod problems;
pub mod restraint;
pub mod rules;
pub mod templates;
pub mod threading;
pub mod tnef;
