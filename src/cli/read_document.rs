//! `triage read-document KIND` (internal): the child the service starts to read one
//! document's text under rlimits. Bytes on stdin, text on stdout; exit 3 when it cannot.
//! The child sets its own limits before it reads a byte of the document: the parent
//! then starts it with posix_spawn, without a `pre_exec` hook that forces a fork of the
//! whole service (a fork per document was most of a backlog's system time).

use std::io::{Read, Write};

use triage::core::documents::{text_of, Kind};

use super::Failure;

pub fn execute(kind: &str, cpu: Option<u64>, memory: Option<u64>) -> Result<(), Failure> {
    let Some(kind) = Kind::parse(kind) else {
        return Err(Failure::Invalid(format!("unknown document kind {kind:?}")));
    };
    if let Err(e) = limit(cpu, memory) {
        eprintln!("cannot set the document reader's limits: {e}");
        return Err(Failure::Said(3));
    }
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

/// The CPU-time and address-space limits on this process, before any untrusted byte.
// The one unsafe block in triage, audited: setrlimit on our own process, with values
// we own; it touches no memory of ours.
#[allow(unsafe_code)]
fn limit(cpu: Option<u64>, memory: Option<u64>) -> std::io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let l = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: a plain system call with a valid pointer to a local struct.
        if unsafe { libc::setrlimit(resource, &l) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    if let Some(cpu) = cpu {
        set(libc::RLIMIT_CPU, cpu, cpu + 1)?;
    }
    if let Some(memory) = memory {
        set(libc::RLIMIT_AS, memory, memory)?;
    }
    Ok(())
}
