//! What people use to check the desk's decisions: the audit log and its export, replaying
//! a recorded message against today's rules, and the casebook of expected decisions.

pub mod audit;
pub mod casebook;
pub mod replay;
