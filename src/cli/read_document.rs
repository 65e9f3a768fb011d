//! `triage read-document KIND` (internal): the document reader run by the service's own
//! binary, where the small `triage-read-document` is not installed beside it.

use super::Failure;

pub fn execute(kind: &str, cpu: Option<u64>, memory: Option<u64>) -> Result<(), Failure> {
    // The reader said why on stderr.
    match triage::shell::document_reader::run(kind, cpu, memory) {
        0 => Ok(()),
        status => Err(Failure::Said(u8::try_from(status).unwrap_or(1))),
    }
}
