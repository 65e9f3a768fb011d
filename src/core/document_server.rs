//! Documents read through a fork server: `triage-read-document serve`, started once per
//! decider and kept, forks a fresh child for each document; the child sets its own CPU
//! and memory limits, reads the document, answers and exits. Each document still has a
//! process and limits of its own, and the server never parses a byte of one.
//!
//! Why not start the reader for each document: starting a program is most of the cost.
//! The dynamic loader probes the CPU's features and caches with CPUID, which on a VM
//! traps to the hypervisor: in a 1,000-message backlog with ~800 documents, the loader
//! and libgcc's probing were 30 % of the service's `perf` samples, reading the documents
//! 4 %. A fork of the small server inherits what was probed. Any trouble with a server (it cannot start, it dies, it
//! answers nonsense or late) and the document is read the old way, by a reader started
//! for it; the server is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::documents::{Kind, Limits, MAX_TEXT};

/// Idle servers kept: one per decider, a few more for `classify` and replays.
const KEEP: usize = 4;
/// Largest document a server accepts (the service's messages are smaller still).
pub const MAX_DOCUMENT: usize = 256 << 20;

/// How reading one document ended, as the server tells it and as a started reader's
/// exit says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Text(String),
    /// The reader said why it cannot read the document.
    Cannot(String),
    /// Killed at its CPU limit.
    OverCpu,
    /// Killed by another signal: most often the memory limit.
    Crashed,
    /// Still running at the wall-clock deadline, killed.
    Late,
    /// Ended without an answer.
    Failed,
}

impl Ending {
    /// The word on the wire (see [`Servers`]).
    pub fn word(&self) -> &'static str {
        match self {
            Ending::Text(_) => "text",
            Ending::Cannot(_) => "cannot",
            Ending::OverCpu => "cpu",
            Ending::Crashed => "crashed",
            Ending::Late => "late",
            Ending::Failed => "failed",
        }
    }

    fn from_wire(word: &str, payload: Vec<u8>) -> Option<Ending> {
        let text = || String::from_utf8_lossy(&payload).into_owned();
        Some(match word {
            "text" => Ending::Text(text()),
            "cannot" => Ending::Cannot(text()),
            "cpu" => Ending::OverCpu,
            "crashed" => Ending::Crashed,
            "late" => Ending::Late,
            "failed" => Ending::Failed,
            _ => return None,
        })
    }

    /// The text, or why not in words for the plan.
    pub fn into_result(self, limits: Limits) -> Result<String, String> {
        match self {
            Ending::Text(text) => Ok(text),
            Ending::Cannot(why) if !why.trim().is_empty() => Err(why.trim().to_string()),
            Ending::Cannot(_) | Ending::Failed => Err("the document reader failed on it".into()),
            Ending::OverCpu => Err(format!(
                "reading the document used more than {} s of CPU (cut off)",
                limits.seconds
            )),
            Ending::Crashed => Err(format!(
                "the document reader crashed on it (memory limit {} MB?)",
                limits.memory_bytes >> 20
            )),
            Ending::Late => Err(format!(
                "reading the document took longer than {} s (cut off)",
                limits.seconds
            )),
        }
    }
}

/// One request as the server reads it: `KIND CPU-SECONDS MEMORY-BYTES LENGTH\n`, then
/// LENGTH bytes of document. None for anything else.
pub fn parse_request(line: &[u8]) -> Option<(Kind, Limits, usize)> {
    let line = std::str::from_utf8(line).ok()?.strip_suffix('\n')?;
    let mut words = line.split(' ');
    let kind = Kind::parse(words.next()?)?;
    let seconds = words.next()?.parse().ok()?;
    let memory_bytes = words.next()?.parse().ok()?;
    let len: usize = words.next()?.parse().ok()?;
    if words.next().is_some() || len > MAX_DOCUMENT {
        return None;
    }
    Some((
        kind,
        Limits {
            seconds,
            memory_bytes,
        },
        len,
    ))
}

/// The answer's header: `WORD LENGTH\n`, then LENGTH bytes (text or reason).
pub fn answer_header(ending: &Ending) -> (String, &[u8]) {
    let payload = match ending {
        Ending::Text(s) | Ending::Cannot(s) => s.as_bytes(),
        _ => &[],
    };
    (format!("{} {}\n", ending.word(), payload.len()), payload)
}

/// The servers of one playbook's reader, shared by its clones (the deciders').
#[derive(Clone, Default)]
pub struct Servers {
    idle: Arc<Mutex<Vec<Server>>>,
    started: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Servers")
    }
}

impl Servers {
    /// The document read by an idle server or a new one; None when no server could
    /// read it (the caller starts a reader for it).
    pub fn read(&self, program: &Path, limits: Limits, kind: Kind, bytes: &[u8]) -> Option<Ending> {
        if bytes.len() > MAX_DOCUMENT {
            return None;
        }
        let idle = self.idle.lock().ok()?.pop();
        let mut server = match idle {
            Some(server) => server,
            None => {
                self.started.fetch_add(1, Ordering::Relaxed);
                Server::start(program)?
            }
        };
        let ending = server.ask(limits, kind, bytes).ok()?;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP {
                idle.push(server);
            }
        }
        Some(ending)
    }

    /// How many servers were started (tests: one serves document after document).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

/// One server process and the socket that is its stdin and stdout.
struct Server {
    child: Child,
    stream: UnixStream,
}

impl Server {
    fn start(program: &Path) -> Option<Server> {
        let (ours, theirs) = UnixStream::pair().ok()?;
        let out = theirs.try_clone().ok()?;
        let mut cmd = super::documents::Reader::command(program);
        cmd.arg("serve")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(out)))
            .stderr(Stdio::null());
        let child = cmd.spawn().ok()?;
        // Our copies of its ends closed: its death is an end of file here.
        drop(cmd);
        Some(Server {
            child,
            stream: ours,
        })
    }

    /// One document asked for and answered; any error leaves this server unusable.
    fn ask(&mut self, limits: Limits, kind: Kind, bytes: &[u8]) -> std::io::Result<Ending> {
        // The server kills a reader at its deadline; this catches a server that hangs.
        let wait = Duration::from_secs(limits.seconds) + Duration::from_secs(2);
        self.stream.set_write_timeout(Some(wait))?;
        self.stream.set_read_timeout(Some(wait))?;
        let header = format!(
            "{} {} {} {}\n",
            kind.as_str(),
            limits.seconds,
            limits.memory_bytes,
            bytes.len()
        );
        self.stream.write_all(header.as_bytes())?;
        self.stream.write_all(bytes)?;
        let mut answer = BufReader::new(&self.stream);
        let mut line = Vec::new();
        (&mut answer).take(64).read_until(b'\n', &mut line)?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad answer");
        let line = std::str::from_utf8(&line).map_err(|_| bad())?;
        let (word, len) = line.trim_end().split_once(' ').ok_or_else(bad)?;
        let len: u64 = len.parse().map_err(|_| bad())?;
        // The text as read, cut at MAX_TEXT + 1 bytes; a cut character may grow a little.
        if len > MAX_TEXT + 16 {
            return Err(bad());
        }
        let mut payload = vec![0; len as usize];
        answer.read_exact(&mut payload)?;
        Ending::from_wire(word, payload).ok_or_else(bad)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
