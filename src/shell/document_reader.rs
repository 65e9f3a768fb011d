//! The document reader's own process: bytes on stdin, text on stdout, exit 3 with the
//! reason on stderr when it cannot. It sets its own CPU-time and memory limits before
//! it reads a byte of the document, so the service starts it with posix_spawn, without
//! a `pre_exec` hook that forces a fork of the whole service.
//!
//! Run as `triage-read-document` (a small binary of its own: starting it costs a
//! fraction of starting the whole service) or,
//! where that is not installed, as `triage read-document`. With the kind `serve` it is
//! the fork server instead ([`super::document_server`]): started once, a child per
//! document, so that a backlog does not start a program per document.

use std::io::{Read, Write};

use crate::core::documents::{text_of, Kind};

/// Exit status when the document cannot be read (the reason on stderr).
pub const CANNOT: i32 = 3;

/// Reads one document of `kind` under the limits; the process's exit status.
pub fn run(kind: &str, cpu: Option<u64>, memory: Option<u64>) -> i32 {
    if kind == "serve" {
        return super::document_server::serve();
    }
    let Some(kind) = Kind::parse(kind) else {
        eprintln!("unknown document kind {kind:?}");
        return 2;
    };
    if let Err(e) = limit(cpu, memory) {
        eprintln!("cannot set the document reader's limits: {e}");
        return CANNOT;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the document: {e}");
        return CANNOT;
    }
    match text_of(kind, &bytes) {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Err(why) => {
            eprintln!("{why}");
            CANNOT
        }
    }
}

/// `KIND --cpu-seconds=N --memory-bytes=N`, as [`crate::core::documents`] starts it.
pub fn run_with_args(args: impl Iterator<Item = String>) -> i32 {
    let (mut kind, mut cpu, mut memory) = (None, None, None);
    for arg in args {
        let number = |v: &str| v.parse::<u64>().ok();
        if let Some(v) = arg.strip_prefix("--cpu-seconds=") {
            cpu = number(v);
        } else if let Some(v) = arg.strip_prefix("--memory-bytes=") {
            memory = number(v);
        } else if kind.is_none() && !arg.starts_with('-') {
            kind = Some(arg);
        } else {
            eprintln!("unexpected argument {arg:?}");
            return 2;
        }
    }
    match kind {
        Some(kind) => run(&kind, cpu, memory),
        None => {
            eprintln!("usage: triage-read-document KIND [--cpu-seconds=N] [--memory-bytes=N]");
            2
        }
    }
}

/// The CPU-time and address-space limits on this process, before any untrusted byte.
// Audited unsafe (the fork server's are in document_server.rs): setrlimit on our own
// process, with values we own; it touches no memory of ours.
#[allow(unsafe_code)]
pub(super) fn limit(cpu: Option<u64>, memory: Option<u64>) -> std::io::Result<()> {
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
