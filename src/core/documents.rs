//! The documents partners attach, read as text so that rules and extractors can look at
//! them: the PDF text layer, DOCX and ODT (zipped XML), XLSX and ODS spreadsheets, and
//! winmail.dat (TNEF) unpacked into the attachments Outlook wrapped in it.
//!
//! Parsing a stranger's PDF or ZIP can take forever or all memory (PDF bombs, zip bombs),
//! and parsers can panic. So the service and `triage classify` read each document in a
//! child process with a CPU-time, memory and wall-clock limit: forked for it by a kept
//! `triage-read-document serve` ([`super::document_server`]), or else started for it
//! (`triage-read-document`, or `triage read-document` where that small binary is not
//! installed):
//! whatever happens there, the message is left for a human with the reason and the
//! service goes on. The reading itself ([`text_of`]) is plain code, used by that child
//! and by tests.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::document_server::{Ending, Servers};

/// The kinds of document read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pdf,
    Docx,
    Odt,
    Spreadsheet,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pdf => "pdf",
            Kind::Docx => "docx",
            Kind::Odt => "odt",
            Kind::Spreadsheet => "spreadsheet",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [Kind::Pdf, Kind::Docx, Kind::Odt, Kind::Spreadsheet]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// What a document is, from its name and declared type (partners' mailers often
    /// send everything as application/octet-stream).
    pub fn of(name: &str, content_type: &str) -> Option<Kind> {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
        let ct = content_type.to_ascii_lowercase();
        match ext.as_deref() {
            Some("pdf") => return Some(Kind::Pdf),
            Some("docx") => return Some(Kind::Docx),
            Some("odt") => return Some(Kind::Odt),
            Some("xlsx") | Some("xlsm") | Some("ods") => return Some(Kind::Spreadsheet),
            _ => {}
        }
        if ct == "application/pdf" {
            Some(Kind::Pdf)
        } else if ct.ends_with("wordprocessingml.document") {
            Some(Kind::Docx)
        } else if ct == "application/vnd.oasis.opendocument.text" {
            Some(Kind::Odt)
        } else if ct.ends_with("spreadsheetml.sheet")
            || ct == "application/vnd.oasis.opendocument.spreadsheet"
        {
            Some(Kind::Spreadsheet)
        } else {
            None
        }
    }
}

/// Largest text (and largest single XML part inside a DOCX/ODT) read from one document:
/// fields are on the first pages, and a zip bomb stops here.
pub const MAX_TEXT: u64 = 8 << 20;

/// The document's text. An Err says why it cannot be read, in words for the plan.
pub fn text_of(kind: Kind, bytes: &[u8]) -> Result<String, String> {
    let text = match kind {
        Kind::Pdf => pdf(bytes)?,
        Kind::Docx => zipped_xml(bytes, &DOCX)?,
        Kind::Odt => zipped_xml(bytes, &ODT)?,
        Kind::Spreadsheet => spreadsheet(bytes)?,
    };
    if text.trim().is_empty() {
        return Err(match kind {
            Kind::Pdf => "the PDF has no text layer (a scan?)".into(),
            _ => "the document has no text".into(),
        });
    }
    Ok(text)
}

fn pdf(bytes: &[u8]) -> Result<String, String> {
    // lopdf opens an encrypted PDF with the empty user password when it can; one that
    // needs a password is named as such.
    pdf_extract::extract_text_from_mem(bytes).map_err(|e| {
        let e = e.to_string();
        if e.to_ascii_lowercase().contains("encrypt") || e.to_ascii_lowercase().contains("password")
        {
            "the PDF is encrypted".to_string()
        } else {
            format!("the PDF cannot be read ({e})")
        }
    })
}

/// DOCX and ODT: the text nodes of one XML part, a line per paragraph. `text` empty means
/// every text node counts (ODT keeps text directly in paragraphs and spans).
/// Where a ZIP-and-XML word processor keeps its text, and the elements that shape it.
struct Layout {
    part: &'static str,
    paragraph: &'static str,
    /// The element holding text runs; empty: all text inside paragraphs counts.
    text: &'static str,
    tab: &'static str,
    cell: &'static str,
    row: &'static str,
}

const DOCX: Layout = Layout {
    part: "word/document.xml",
    paragraph: "w:p",
    text: "w:t",
    tab: "w:tab",
    cell: "w:tc",
    row: "w:tr",
};

const ODT: Layout = Layout {
    part: "content.xml",
    paragraph: "text:p",
    text: "",
    tab: "text:tab",
    cell: "table:table-cell",
    row: "table:table-row",
};

/// The text of a DOCX or ODT. A table row comes out as one line, its cells separated by
/// tabs, so that "Customer Name | Acme Corp" reads as a labelled field.
#[allow(
    clippy::too_many_lines,
    reason = "one event loop over the XML; each arm is a line or two"
)]
fn zipped_xml(bytes: &[u8], layout: &Layout) -> Result<String, String> {
    let Layout {
        part,
        paragraph,
        text,
        tab,
        cell,
        row,
    } = *layout;
    use quick_xml::events::Event;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("the document is not a readable ZIP container ({e})"))?;
    let mut entry = zip
        .by_name(part)
        .map_err(|_| format!("the document has no {part}"))?;
    if entry.encrypted() {
        return Err("the document is encrypted".into());
    }
    if entry.size() > MAX_TEXT * 8 {
        return Err(format!(
            "the document's {part} would unpack to {} MB (a zip bomb?)",
            entry.size() >> 20
        ));
    }
    let mut xml = Vec::new();
    (&mut entry)
        .take(MAX_TEXT * 8)
        .read_to_end(&mut xml)
        .map_err(|e| format!("the document cannot be unpacked ({e})"))?;
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut out = String::new();
    let mut inside_text = text.is_empty();
    let mut cells = 0usize;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if !text.is_empty() && e.name().into_inner() == text => {
                inside_text = true
            }
            Ok(Event::End(e)) if !text.is_empty() && e.name().into_inner() == text => {
                inside_text = false
            }
            Ok(Event::Start(e)) if e.name().into_inner() == cell => cells += 1,
            Ok(Event::End(e)) if e.name().into_inner() == cell => {
                cells = cells.saturating_sub(1);
                out.push('\t');
            }
            Ok(Event::End(e)) if e.name().into_inner() == row => out.push('\n'),
            Ok(Event::End(e))
                if e.name().into_inner() == paragraph || e.name().into_inner() == "text:h" =>
            {
                out.push(if cells > 0 { ' ' } else { '\n' });
            }
            Ok(Event::Empty(e)) if e.name().into_inner() == tab => out.push('\t'),
            Ok(Event::Empty(e))
                if e.name().into_inner() == "w:br"
                    || e.name().into_inner() == "text:line-break" =>
            {
                out.push('\n')
            }
            // Text arrives split at entity references, each its own event.
            Ok(Event::Text(t)) if inside_text => out.push_str(&t),
            Ok(Event::GeneralRef(r)) if inside_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else {
                    out.push_str(match &*r {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("the document's XML is damaged ({e})")),
            _ => {}
        }
        if out.len() as u64 > MAX_TEXT {
            break;
        }
        buf.clear();
    }
    Ok(out)
}

fn spreadsheet(bytes: &[u8]) -> Result<String, String> {
    use calamine::Reader;
    let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| format!("the spreadsheet cannot be read ({e})"))?;
    let mut out = String::new();
    for name in book.sheet_names() {
        let Ok(range) = book.worksheet_range(&name) else {
            continue;
        };
        for row in range.rows() {
            let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
            // "Customer Name | Acme" reads as the labelled line partners type.
            let line = cells
                .iter()
                .filter(|c| !c.is_empty())
                .cloned()
                .collect::<Vec<_>>();
            match line.as_slice() {
                [] => {}
                [label, value, rest @ ..]
                    if label.trim_end().ends_with([':', '：']) || rest.is_empty() =>
                {
                    let label = label.trim_end().trim_end_matches([':', '：']);
                    out.push_str(&format!("{label}: {value}"));
                    for r in rest {
                        out.push('\t');
                        out.push_str(r);
                    }
                    out.push('\n');
                }
                cells => {
                    out.push_str(&cells.join("\t"));
                    out.push('\n');
                }
            }
            if out.len() as u64 > MAX_TEXT {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// The attachments Outlook wrapped in a winmail.dat: (file name, bytes).
pub fn unpack_tnef(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let found = crate::core::tnef::read(bytes)
        .map_err(|e| format!("winmail.dat cannot be unpacked ({e})"))?;
    Ok(found.into_iter().map(|f| (f.name, f.bytes)).collect())
}

/// Is this attachment a winmail.dat?
pub fn is_tnef(name: &str, content_type: &str, bytes: &[u8]) -> bool {
    content_type.eq_ignore_ascii_case("application/ms-tnef")
        || content_type.eq_ignore_ascii_case("application/vnd.ms-tnef")
        || name.eq_ignore_ascii_case("winmail.dat")
        || bytes.starts_with(&[0x78, 0x9f, 0x3e, 0x22])
}

/// Limits for reading one document.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub seconds: u64,
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            seconds: 10,
            memory_bytes: 512 << 20,
        }
    }
}

/// The document reader's own binary, looked for beside the running one.
const READER: &str = "triage-read-document";

/// How documents are read: in this process (tests, fuzzing), or in a child process under
/// limits (the service, `classify`).
#[derive(Debug, Clone)]
pub enum Reader {
    InProcess,
    Child {
        program: PathBuf,
        limits: Limits,
        /// Fork servers of `program`, kept between documents.
        servers: Servers,
    },
}

impl Reader {
    /// CPU seconds one message's documents may take together.
    pub fn budget(&self) -> u64 {
        match self {
            Reader::InProcess => u64::MAX,
            Reader::Child { limits, .. } => limits.seconds,
        }
    }

    /// The small `triage-read-document` installed beside the running binary as the
    /// child, else the running `triage` binary itself (`triage read-document`).
    pub fn child(limits: Limits) -> Reader {
        match std::env::current_exe() {
            Ok(program) => Reader::child_of(program, limits),
            Err(_) => Reader::InProcess,
        }
    }

    /// Documents read by `program` (`triage` or `triage-read-document` beside it).
    pub fn child_of(program: PathBuf, limits: Limits) -> Reader {
        Reader::Child {
            program,
            limits,
            servers: Servers::default(),
        }
    }

    /// The program started and the arguments before the kind.
    pub(super) fn command(program: &std::path::Path) -> Command {
        let small = program.with_file_name(READER);
        if small.is_file() {
            return Command::new(small);
        }
        let mut cmd = Command::new(program);
        cmd.arg("read-document");
        cmd
    }

    /// Fork servers started so far (none in process).
    pub fn servers_started(&self) -> usize {
        match self {
            Reader::InProcess => 0,
            Reader::Child { servers, .. } => servers.started(),
        }
    }

    pub fn read(&self, kind: Kind, bytes: &[u8]) -> Result<String, String> {
        self.read_within(kind, bytes, u64::MAX)
    }

    /// As [`Reader::read`], with at most `seconds` of CPU (what is left of the message's
    /// budget), never more than the configured limit.
    pub fn read_within(&self, kind: Kind, bytes: &[u8], seconds: u64) -> Result<String, String> {
        match self {
            Reader::InProcess => {
                std::panic::catch_unwind(|| text_of(kind, bytes)).unwrap_or_else(|_| {
                    Err("the document reader failed on it (a malformed document)".into())
                })
            }
            Reader::Child {
                program,
                limits,
                servers,
            } => {
                let limits = Limits {
                    seconds: limits.seconds.min(seconds).max(1),
                    ..*limits
                };
                let ending = servers
                    .read(program, limits, kind, bytes)
                    .unwrap_or_else(|| read_in_child(program, limits, kind, bytes));
                ending.into_result(limits)
            }
        }
    }
}

/// The document read by `triage read-document` in a child process, which sets its own
/// CPU and memory limits before it reads the document.
fn read_in_child(program: &std::path::Path, limits: Limits, kind: Kind, bytes: &[u8]) -> Ending {
    let mut cmd = Reader::command(program);
    cmd.arg(kind.as_str())
        .arg(format!("--cpu-seconds={}", limits.seconds))
        .arg(format!("--memory-bytes={}", limits.memory_bytes))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Ending::Cannot(format!("the document reader did not start ({e})")),
    };
    // Feed stdin from a thread: a child that stops reading must not block us.
    let mut stdin = child.stdin.take().expect("piped");
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let (finished, reading) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_TEXT + 1).read_to_end(&mut out);
        let _ = finished.send(());
        out
    });
    // CPU is limited in the child; this catches one that waits instead of working.
    let deadline =
        Instant::now() + Duration::from_secs(limits.seconds) + Duration::from_millis(500);
    // The end of its output is when a reader is done: waited for, not polled (polling
    // every few milliseconds cost more than reading a typical PO).
    let _ = reading.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => break None,
        }
    };
    let _ = feeder.join();
    let out = reader.join().unwrap_or_default();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    match status {
        None => Ending::Late,
        Some(s) if s.success() => Ending::Text(String::from_utf8_lossy(&out).into_owned()),
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            match s.signal() {
                Some(libc::SIGXCPU) | Some(libc::SIGKILL) => Ending::OverCpu,
                Some(_) => Ending::Crashed,
                None => Ending::Cannot(err.lines().last().unwrap_or("").to_string()),
            }
        }
    }
}
