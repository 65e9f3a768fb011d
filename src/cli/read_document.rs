//! `triage read-document KIND` (internal): the child the service starts to read one
//! document's text under rlimits. Bytes on stdin, text on stdout; exit 3 when it cannot.

use std::io::{Read, Write};

use triage::core::documents::{text_of, Kind};

use super::Failure;

pub fn execute(kind: &str) -> Result<(), Failure> {
    let Some(kind) = Kind::parse(kind) else {
        return Err(Failure::Invalid(format!("unknown document kind {kind:?}")));
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the document: {e}");
        return Err(Failure::Said(3));
    }
    match text_of(kind, &bytes) {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
        Err(why) => {
            eprintln!("{why}");
            Err(Failure::Said(3))
        }
    }
}
