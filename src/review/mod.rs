//! What people use to check the desk's decisions: the audit log and its export, replaying
//! a recorded message against today's rules, the casebook of expected decisions, and the
//! review pages.

pub mod audit;
pub mod casebook;
pub mod pages;
pub mod replay;
