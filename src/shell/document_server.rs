//! `triage-read-document serve`: the fork server of [`crate::core::document_server`].
//! Requests come on stdin, answers go to stdout (one socket). For each document a child
//! is forked; it closes the socket, sets its CPU and memory limits, reads, writes its
//! answer to a pipe and exits. The server kills it at the wall-clock deadline and tells
//! how it ended. The server itself parses only its request lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::core::document_server::{answer_header, parse_request, Ending};
use crate::core::documents::{text_of, Kind, Limits, MAX_TEXT};

/// A child's first byte: what follows is the text, or why it cannot be read.
const TEXT: u8 = b'T';
const CANNOT: u8 = b'C';

/// Serves until stdin ends; the process's exit status.
pub fn serve() -> i32 {
    probe_cpu_features();
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = std::io::stdout().lock();
    loop {
        let mut line = Vec::new();
        match (&mut input).take(128).read_until(b'\n', &mut line) {
            Ok(0) => return 0,
            Ok(_) => {}
            Err(_) => return 1,
        }
        let Some((kind, limits, len)) = parse_request(&line) else {
            return 2;
        };
        let mut bytes = vec![0; len];
        if input.read_exact(&mut bytes).is_err() {
            return 1;
        }
        let ending = read_forked(kind, limits, &bytes);
        drop(bytes);
        let (header, payload) = answer_header(&ending);
        let sent = output
            .write_all(header.as_bytes())
            .and_then(|()| output.write_all(payload))
            .and_then(|()| output.flush());
        if sent.is_err() {
            return 1;
        }
    }
}

/// Runs Rust's CPU feature detection once, here, so that every child inherits its
/// result: otherwise each child's first zip CRC or memchr probes with CPUID again, which
/// on a VM traps to the hypervisor (15 % of the children's `perf` samples in the
/// 1,000-message full job).
fn probe_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::arch::is_x86_feature_detected!("pclmulqdq");
}

/// One document read by a child forked for it, killed at the deadline.
// Audited unsafe: pipe2 and fork in this single-threaded server, so the child may run
// any code the server could; waitpid and kill on that child only.
#[allow(unsafe_code)]
fn read_forked(kind: Kind, limits: Limits, bytes: &[u8]) -> Ending {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Ending::Failed;
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (from_child, to_server) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: this process has one thread (the server never starts another).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Ending::Failed;
    }
    if pid == 0 {
        drop(from_child);
        child(kind, limits, bytes, to_server);
    }
    drop(to_server);
    let deadline =
        Instant::now() + Duration::from_secs(limits.seconds) + Duration::from_millis(500);
    let mut from_child = std::fs::File::from(from_child);
    let (out, late) = collect(&mut from_child, deadline);
    drop(from_child);
    if late {
        // SAFETY: kill of our own child, not yet waited for (its pid is not reused).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid pointer to a local.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Ending::Failed;
        }
    }
    ending(status, late, out)
}

/// How the child ended, from its wait status and what it wrote.
fn ending(status: i32, late: bool, out: Vec<u8>) -> Ending {
    if late {
        return Ending::Late;
    }
    if libc::WIFSIGNALED(status) {
        return match libc::WTERMSIG(status) {
            libc::SIGXCPU | libc::SIGKILL => Ending::OverCpu,
            _ => Ending::Crashed,
        };
    }
    let said = || String::from_utf8_lossy(&out[1..]).into_owned();
    match out.first() {
        Some(&TEXT) => Ending::Text(said()),
        Some(&CANNOT) => Ending::Cannot(said()),
        _ => Ending::Failed,
    }
}

/// The child's answer, up to its first byte and MAX_TEXT + 1 bytes of text, until it
/// closes the pipe or the deadline passes (true).
fn collect(from_child: &mut std::fs::File, deadline: Instant) -> (Vec<u8>, bool) {
    let cap = MAX_TEXT as usize + 2;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while out.len() < cap {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, true);
        }
        let mut poll = libc::pollfd {
            fd: from_child.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        if !wait_readable(&mut poll, ms) {
            continue;
        }
        let want = buf.len().min(cap - out.len());
        match from_child.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (out, false)
}

#[allow(unsafe_code)]
fn wait_readable(poll: &mut libc::pollfd, ms: i32) -> bool {
    // SAFETY: poll on one valid pollfd we own.
    unsafe { libc::poll(poll, 1, ms) > 0 }
}

/// The forked child: the service's socket closed, limits set, the document read, the
/// answer written; never returns.
#[allow(unsafe_code)]
fn child(kind: Kind, limits: Limits, bytes: &[u8], to_server: OwnedFd) -> ! {
    // SAFETY: closing our copies of stdin and stdout (the socket to the service), which
    // nothing in this child uses: a reader gone wrong cannot talk to the service.
    unsafe {
        libc::close(0);
        libc::close(1);
    }
    let answer =
        match super::document_reader::limit(Some(limits.seconds), Some(limits.memory_bytes)) {
            Err(e) => Err(format!("cannot set the document reader's limits: {e}")),
            Ok(()) => std::panic::catch_unwind(|| text_of(kind, bytes)).unwrap_or_else(|_| {
                Err("the document reader failed on it (a malformed document)".into())
            }),
        };
    let (first, said) = match &answer {
        Ok(text) => (TEXT, text.as_bytes()),
        Err(why) => (CANNOT, why.as_bytes()),
    };
    let mut pipe = std::fs::File::from(to_server);
    // A reader past MAX_TEXT finds the pipe closed: what the server has is enough.
    let _ = pipe.write_all(&[first]).and_then(|()| pipe.write_all(said));
    drop(pipe);
    // SAFETY: ends this child without running the server's exit handlers or buffers.
    unsafe { libc::_exit(0) }
}
