//! A partner's message, parsed once into what the rest of the decision needs.
//!
//! mail-parser does the MIME work (charsets, RFC 2047/2231, HTML to text). What we add is
//! the help-desk reading of it: which part of the body is the partner's *new* text, as
//! opposed to quoted history, forwarded headers and signatures, so that a keyword that only
//! appears in an old message of the thread does not decide the category.

use std::sync::LazyLock;

use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders, PartType};
use regex::Regex;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    pub fn domain(&self) -> &str {
        domain_of(&self.address)
    }
}

pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    /// Decoded text for text/* documents (plain, CSV): fields may only be written there.
    pub text: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub message_id: Option<String>,
    pub from: Option<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub sender: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub subject: String,
    pub date: Option<String>,
    /// The whole body as text (HTML converted), quoted history included.
    pub text: String,
    /// Only what the partner wrote in this message.
    pub new_text: String,
    pub attachments: Vec<Attachment>,
    /// Top-level headers in order, names as written, values unfolded and trimmed.
    pub headers: Vec<(String, String)>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Top-level Content-Type, e.g. `multipart/report`.
    pub content_type: String,
    pub size: usize,
    /// What a delivery status notification (RFC 3464) says, when the message is one.
    pub delivery_report: Option<DeliveryReport>,
    /// Ways the message is malformed. mail-parser reads almost anything; what it had to
    /// guess at is listed here, and such mail gets no automatic answer.
    pub damage: Vec<String>,
    /// Attached documents that could not be read as text, with the reason; filled by
    /// [`crate::documents`] before the decision.
    pub unreadable: Vec<String>,
    /// Why the attached documents were not read at all (an unverified or unknown sender).
    pub not_read: Option<String>,
}

/// Deeper MIME nesting than this is not mail a person's client writes.
const MAX_NESTING: usize = 12;
/// RFC 5322 §2.1.1: a line is at most 998 characters.
const MAX_LINE: usize = 998;

/// The parts of a bounce that matter: which recipients failed, and which message it was.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Final-Recipient addresses with `Action: failed`, lower case.
    pub failed: Vec<String>,
    /// Message-IDs of the returned message (or its returned headers).
    pub original_ids: Vec<String>,
}

/// Parsing failed in a way that leaves nothing to decide on.
#[derive(Debug, Clone)]
pub struct Unreadable(pub String);

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn recipients(&self) -> impl Iterator<Item = &Mailbox> {
        self.to.iter().chain(self.cc.iter())
    }

    /// The Message-ID as `parse` reads it, from the header alone (no body decoded): the
    /// shell recognises its own copies, restored copies and repeats by it before a
    /// message is decided. Every header field is parsed as `parse` parses it: a damaged
    /// field can swallow the next one (a Date ending `+000A` takes the Message-ID line
    /// with it), and the two must agree on that.
    pub fn message_id_of(raw: &[u8]) -> Option<String> {
        MessageParser::default()
            .parse_headers(raw)?
            .message_id()
            .map(str::to_string)
    }

    pub fn parse(raw: &[u8]) -> Result<Mail, Unreadable> {
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(Unreadable("the message is empty".into()));
        }
        let parsed = MessageParser::default()
            .parse(raw)
            .ok_or_else(|| Unreadable("no message headers could be read".into()))?;
        let headers: Vec<(String, String)> = parsed
            .headers_raw()
            .map(|(n, v)| (n.to_string(), unfold(v)))
            .collect();
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("from")) {
            return Err(Unreadable("the message has no From header".into()));
        }

        let text = body_text(&parsed);
        let new_text = new_text(&text);
        let mut attachments = Vec::new();
        for part in parsed.attachments() {
            collect_attachment(part, &mut attachments);
        }
        let subject = fold_widths(parsed.subject().unwrap_or("").trim());
        let content_type = parsed
            .content_type()
            .map(|ct| match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_string(),
            })
            .unwrap_or_else(|| "text/plain".into())
            .to_ascii_lowercase();

        Ok(Mail {
            message_id: parsed.message_id().map(|s| s.to_string()),
            from: first(parsed.from()),
            reply_to: all(parsed.reply_to()),
            sender: first(parsed.sender()),
            to: all(parsed.to()),
            cc: all(parsed.cc()),
            subject,
            date: parsed.date().map(|d| d.to_rfc3339()),
            text,
            new_text,
            attachments,
            headers,
            in_reply_to: ids(parsed.in_reply_to()),
            references: ids(parsed.references()),
            delivery_report: (content_type == "multipart/report").then(|| delivery_report(&parsed)),
            damage: damage(raw, &parsed),
            unreadable: Vec::new(),
            not_read: None,
            content_type,
            size: raw.len(),
        })
    }
}

/// What is wrong with the message's form, in words for the person who gets it.
#[allow(
    clippy::too_many_lines,
    reason = "one flat list of independent checks, each a few lines; read top to bottom"
)]
fn damage(raw: &[u8], parsed: &mail_parser::Message<'_>) -> Vec<String> {
    let mut found = Vec::new();
    if raw.contains(&0) {
        found.push("NUL bytes in the message".to_string());
    }
    let header_end = memchr::memmem::find(raw, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(raw, b"\n\n"))
        .unwrap_or(raw.len());
    if let Some(longest) = raw[..header_end]
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .filter(|&n| n > MAX_LINE + 1)
    {
        found.push(format!(
            "a header line of {longest} bytes (the limit is {MAX_LINE})"
        ));
    }
    // Depth of the MIME tree, walked without recursion: hostile mail nests deeply.
    let mut depth = vec![0usize; parsed.parts.len()];
    let mut deepest = 0;
    for (i, part) in parsed.parts.iter().enumerate() {
        if let PartType::Multipart(children) = &part.body {
            for &c in children {
                let d = depth[i] + 1;
                if let Some(slot) = depth.get_mut(c as usize) {
                    *slot = d;
                    deepest = deepest.max(d);
                }
            }
        }
    }
    if deepest > MAX_NESTING {
        found.push(format!(
            "MIME parts nested {deepest} levels deep (more than {MAX_NESTING})"
        ));
    }
    // RFC 5322 allows one From; two (or two authors in one) is how a sender gets one
    // address verified and another read.
    let from_headers = parsed
        .headers_raw()
        .filter(|(n, _)| n.eq_ignore_ascii_case("from"))
        .count();
    let authors = parsed.from().map_or(0, |a| a.iter().count());
    if from_headers > 1 || authors > 1 {
        found.push(format!(
            "{} From headers with {authors} addresses (a message has one author)",
            from_headers
        ));
    }
    let delimiters = delimiter_lines(raw);
    let mut problems = 0;
    let mut unknown_charsets = Vec::new();
    for part in &parsed.parts {
        if part.is_encoding_problem {
            problems += 1;
        }
        if let Some(ct) = part.content_type() {
            if let Some(b) = ct.attribute("boundary") {
                let b_bytes = b.as_bytes();
                let close = [b_bytes, b"--"].concat();
                if !delimiters.contains(b_bytes) && !delimiters.contains(close.as_slice()) {
                    found.push(format!("multipart boundary {b:?} never appears"));
                } else if !delimiters.contains(close.as_slice()) {
                    found.push(format!(
                        "truncated: the closing boundary of {b:?} is missing"
                    ));
                }
            }
            if ct.ctype().eq_ignore_ascii_case("text") {
                if let Some(cs) = ct.attribute("charset") {
                    // UTF-8 has no decoder in the map: mail-parser reads it (and any
                    // charset it does not know) as UTF-8.
                    let utf8 = ["utf-8", "utf8", "us-ascii"]
                        .iter()
                        .any(|u| cs.eq_ignore_ascii_case(u));
                    let known = utf8
                        || mail_parser::decoders::charsets::map::charset_decoder(cs.as_bytes())
                            .is_some();
                    if !known {
                        unknown_charsets.push(cs.to_string());
                    }
                }
            }
        }
    }
    if problems > 0 {
        found.push(format!(
            "{problems} part{} could not be decoded (bad base64 or quoted-printable, or cut short)",
            if problems == 1 { "" } else { "s" }
        ));
    }
    let undecodable = parsed.text_bodies().any(|p| match &p.body {
        PartType::Text(t) | PartType::Html(t) => t.contains('\u{FFFD}'),
        _ => false,
    });
    if undecodable {
        found.push(if unknown_charsets.is_empty() {
            "bytes in the text that its charset cannot decode".to_string()
        } else {
            format!(
                "text in an unknown charset ({}) that does not read as UTF-8",
                unknown_charsets.join(", ")
            )
        });
    }
    found
}

/// What follows `--` on every line that starts with it (RFC 2046 §5.1.1 delimiters, trailing
/// white space dropped), found in one pass: each part's boundary is then a set lookup, not
/// a search of the whole message per part. Only the lines that start with `--` are
/// looked at (`\n--` found by memmem): a base64 body's many lines are skipped whole.
fn delimiter_lines(raw: &[u8]) -> std::collections::HashSet<&[u8]> {
    let first = raw.starts_with(b"--").then_some(0);
    let others = memchr::memmem::find_iter(raw, b"\n--").map(|at| at + 1);
    first
        .into_iter()
        .chain(others)
        .map(|start| {
            let rest = &raw[start + 2..];
            let line = &rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())];
            line.iter()
                .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'))
                .map_or(&line[..0], |i| &line[..=i])
        })
        .collect()
}

/// Reads the machine-readable parts of a bounce. Lenient on purpose: MTAs differ, and a
/// report we cannot read only means no address gets blocked.
fn delivery_report(parsed: &mail_parser::Message<'_>) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    for part in &parsed.parts {
        let ct = part
            .content_type()
            .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")))
            .unwrap_or_default()
            .to_ascii_lowercase();
        match (ct.as_str(), &part.body) {
            (_, PartType::Message(m)) => {
                report
                    .original_ids
                    .extend(m.message_id().map(str::to_string));
            }
            ("message/delivery-status" | "message/global-delivery-status", _) => {
                let text = String::from_utf8_lossy(part.contents());
                // Per-recipient blocks are separated by blank lines.
                for block in text.replace("\r\n", "\n").split("\n\n") {
                    let field = |name: &str| {
                        block.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_string())
                        })
                    };
                    let failed = field("Action").is_some_and(|a| a.eq_ignore_ascii_case("failed"));
                    if let (true, Some(rcpt)) = (failed, field("Final-Recipient")) {
                        let addr = rcpt.rsplit(';').next().unwrap_or("").trim();
                        let addr = addr.trim_matches(['<', '>']).to_lowercase();
                        if addr.contains('@') {
                            report.failed.push(addr);
                        }
                    }
                }
            }
            ("text/rfc822-headers" | "message/global-headers", _) => {
                let text = String::from_utf8_lossy(part.contents());
                for line in text.lines() {
                    if let Some((k, v)) = line.split_once(':') {
                        if k.trim().eq_ignore_ascii_case("Message-ID") {
                            report
                                .original_ids
                                .push(v.trim().trim_matches(['<', '>']).to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    report.failed.sort();
    report.failed.dedup();
    report
}

fn unfold(v: &str) -> String {
    v.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn mailbox(addr: &mail_parser::Addr<'_>) -> Option<Mailbox> {
    let address = addr.address()?.trim().to_lowercase();
    if !address.contains('@') {
        return None;
    }
    Some(Mailbox {
        name: addr
            .name()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
        address,
    })
}

fn all(address: Option<&Address<'_>>) -> Vec<Mailbox> {
    address
        .map(|a| a.iter().filter_map(mailbox).collect())
        .unwrap_or_default()
}

fn first(address: Option<&Address<'_>>) -> Option<Mailbox> {
    all(address).into_iter().next()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => vec![t.to_string()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// All text bodies joined. An HTML-only body is converted here rather than by
/// mail-parser's `body_text`, which keeps block elements on one line: we need Outlook's
/// reply header and `<blockquote>` history on lines of their own to tell them apart.
fn body_text(parsed: &mail_parser::Message<'_>) -> String {
    let mut out = String::new();
    for part in parsed.text_bodies() {
        let t = match &part.body {
            PartType::Html(html) => html_text(html),
            PartType::Text(text) => text.to_string(),
            _ => continue,
        };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&t);
    }
    fold_widths(&out.replace("\r\n", "\n"))
}

/// Text as a search box sees it: full-width letters and digits as Japanese input methods
/// write them (`Ｑ－１００２３４`) become ASCII, half-width katakana full-width, the
/// ideographic and no-break spaces plain spaces, and invisible characters (zero-width
/// space, soft hyphen, byte-order mark) go. Only these forms are folded, so that every
/// other letter stays what it was.
pub fn fold_widths(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let needs =
        |c: char| matches!(c, '\u{ff00}'..='\u{ffef}' | '\u{3000}' | '\u{a0}') || is_invisible(c);
    if !s.chars().any(needs) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    // A run of width forms is folded together: a half-width voiced mark joins its kana.
    let mut run = String::new();
    for c in s.chars() {
        if matches!(c, '\u{ff00}'..='\u{ffef}') {
            run.push(c);
            continue;
        }
        out.extend(run.nfkc());
        run.clear();
        match c {
            '\u{3000}' | '\u{a0}' => out.push(' '),
            c if is_invisible(c) => {}
            c => out.push(c),
        }
    }
    out.extend(run.nfkc());
    out
}

fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{ad}'
    )
}

static HTML_BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)<(?:/?(?:div|tr|li|h[1-6]|table|p)(?-u:\b)[^>]*|(?:hr|blockquote)(?-u:\b)[^>]*|[^>]*(?-u:\b)(?:id|class)\s*=\s*.?(?:divRplyFwdMsg|gmail_quote|moz-cite-prefix|OutlookMessageHeader)[^>]*)>")
        .expect("html block pattern")
});

/// A table cell, and the block tags inside one (Outlook wraps each cell's text in `<p>`).
static TABLE_CELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)<t[dh](?-u:\b)[^>]*>(.*?)</t[dh]\s*>").expect("table cell pattern")
});
static CELL_BLOCK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)</?(?:p|div|br|span)(?-u:\b)[^>]*>").expect("cell block pattern")
});
/// Stands for the end of a table cell until the text is made, then becomes a tab: a row
/// "Customer Name | Acme Corp" reads as one line, as a labelled field.
const CELL_END: char = '\u{e000}';

pub fn html_text(html: &str) -> String {
    let cells = TABLE_CELL.replace_all(html, |c: &regex::Captures<'_>| {
        format!(
            "<span>{} {CELL_END}</span>",
            CELL_BLOCK.replace_all(&c[1], " ")
        )
    });
    let marked = HTML_BLOCK.replace_all(&cells, |c: &regex::Captures<'_>| {
        let tag = c[0].to_ascii_lowercase();
        let history = tag.starts_with("<hr")
            || tag.starts_with("<blockquote")
            || [
                "divrplyfwdmsg",
                "gmail_quote",
                "moz-cite-prefix",
                "outlookmessageheader",
            ]
            .iter()
            .any(|k| tag.contains(k));
        if history {
            format!("<br>{HISTORY_RULE}<br>{}", &c[0])
        } else {
            format!("<br>{}", &c[0])
        }
    });
    let text = mail_parser::decoders::html::html_to_text(&marked);
    let text = text
        .replace(&format!(" {CELL_END}"), "\t")
        .replace(CELL_END, "\t");
    // Collapse the blank lines that block elements leave behind.
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_start());
        out.push('\n');
    }
    out
}

/// Extensions of programs, scripts, macro documents, disk images and active web content:
/// what a partner's PO or PoE never is, and what the desk must not pass on to its people.
const RISKY_EXTENSIONS: &[&str] = &[
    "exe", "com", "scr", "pif", "bat", "cmd", "msi", "msp", "dll", "cpl", "jar", "js", "jse",
    "vbs", "vbe", "wsf", "wsh", "ps1", "psm1", "hta", "lnk", "reg", "iso", "img", "vhd", "vhdx",
    "docm", "dotm", "xlsm", "xltm", "xlam", "pptm", "potm", "ppam", "sh", "appx", "msix", "apk",
    "app", "dmg", "pkg",
];

/// Web pages: harmless as a footer (Exchange's `ATT00001.htm`), risky with script in them.
const WEB_EXTENSIONS: &[&str] = &["html", "htm", "xhtml", "shtml", "svg", "mht", "mhtml"];

fn has_script(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 20)]).to_ascii_lowercase();
    [
        "<script",
        "javascript:",
        "onload=",
        "onerror=",
        "onclick=",
        "<iframe",
        "<form",
    ]
    .iter()
    .any(|k| text.contains(k))
}

/// Attachments that are programs or active content, by name (the last extension, so
/// `PO.pdf.exe` counts) or by their first bytes (a Windows or Linux program, a script),
/// in words for the plan.
pub fn risky_attachments(mail: &Mail) -> Vec<String> {
    mail.attachments
        .iter()
        .filter_map(|a| {
            let ext = a
                .name
                .rsplit_once('.')
                .map(|(_, e)| e.trim().to_ascii_lowercase());
            let by_name = ext.as_deref().is_some_and(|e| {
                RISKY_EXTENSIONS.contains(&e)
                    || (WEB_EXTENSIONS.contains(&e) && has_script(&a.bytes))
            });
            let magic = a.bytes.starts_with(b"MZ")
                || a.bytes.starts_with(b"\x7fELF")
                || a.bytes.starts_with(b"#!");
            (by_name || magic).then(|| {
                let what = if magic {
                    "a program"
                } else {
                    "a program or active content"
                };
                format!("{} is {what}", a.name)
            })
        })
        .collect()
}

/// A line that marks where quoted history starts in converted HTML.
const HISTORY_RULE: &str = "________________________________";

fn collect_attachment(part: &mail_parser::MessagePart<'_>, out: &mut Vec<Attachment>) {
    let content_type = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase();
    // Logos and pictures pasted into a signature are not documents the partner sent.
    let inline_picture = content_type.starts_with("image/")
        && part.content_id().is_some()
        && !part
            .content_disposition()
            .is_some_and(|cd| cd.is_attachment());
    if inline_picture {
        return;
    }
    let name = match part.attachment_name() {
        Some(n) if !n.trim().is_empty() => sanitize_name(n),
        _ => match &part.body {
            PartType::Message(m) => {
                let subject = m.subject().unwrap_or("message");
                format!("{}.eml", sanitize_name(subject))
            }
            _ => format!("attachment-{}", out.len() + 1),
        },
    };
    let text = match &part.body {
        PartType::Text(t) => Some(t.to_string()),
        _ => None,
    };
    out.push(Attachment {
        name,
        content_type,
        bytes: part.contents().to_vec(),
        text,
    });
}

/// File names come from the sender: keep them readable but never a path, never a
/// disguise (bidi overrides turn `fdp.exe` into what looks like `exe.pdf`), and short
/// enough for any file system once a ` (2)` goes in.
pub fn sanitize_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !crate::core::escape::is_invisible(*c))
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return "attachment".into();
    }
    bound_name(cleaned, MAX_NAME_BYTES)
}

/// Bytes a kept file name may take; 255 is the usual limit, the rest is room for ` (99)`.
pub const MAX_NAME_BYTES: usize = 200;

/// Cut at a character boundary to `max` bytes, keeping a short extension.
pub fn bound_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.len() <= 10 && !e.contains(' ') => (s, format!(".{e}")),
        _ => (name, String::new()),
    };
    let mut cut = max.saturating_sub(ext.len() + 1);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{ext}", stem[..cut].trim_end())
}

/// `name`, or `name (2).ext`, `name (3).ext` … whichever `taken` does not hold yet.
pub fn unique_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_string();
    }
    (2..)
        .map(|n| numbered(name, n))
        .find(|candidate| !taken(candidate))
        .expect("some number is free")
}

/// `name (n).ext`.
fn numbered(name: &str, n: usize) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

/// Hands out names unique among themselves, as [`unique_name`] would, in linear time:
/// a message with thousands of attachments of one name must not cost their square.
#[derive(Default)]
pub struct UniqueNames {
    taken: std::collections::HashSet<String>,
    /// The last number given to each name.
    last: std::collections::HashMap<String, usize>,
}

impl UniqueNames {
    pub fn give(&mut self, name: &str) -> String {
        if self.taken.insert(name.to_string()) {
            return name.to_string();
        }
        let mut n = self.last.get(name).copied().unwrap_or(1);
        loop {
            n += 1;
            let candidate = numbered(name, n);
            if self.taken.insert(candidate.clone()) {
                self.last.insert(name.to_string(), n);
                return candidate;
            }
        }
    }
}

/// Lines that start quoted history in the mail clients partners use, in the desk's languages.
/// Where a legal disclaimer starts: its words ("any purchase order or quotation …") are
/// boilerplate under every message, not what the partner asks.
static DISCLAIMER_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*[*_\s]*(?:
            (?:confidentiality|privacy|legal)\s+(?:notice|statement|disclaimer)
          | confidentiality\s*:
          | disclaimer\s*:?
          | (?:privileged\s+(?:and|&)\s+)?confidential(?:ity)?\s*[:\-–]
          | this\s+(?:e-?mail|message|communication|transmission)(?:\s+and\s+(?:any|its)\s+(?:\w+\s+){0,3}?)?\s*
            (?:(?:is|are)\s+(?:strictly\s+|legally\s+|solely\s+|only\s+)?(?:confidential|privileged|intended)
              | (?:may\s+contain|contains?)\s+(?:confidential|privileged|proprietary|legally))
          | (?:diese|die(?:se)?)\s+(?:e-?mail|nachricht)(?-u:\b).{0,80}(?-u:\b)vertraulich
          | (?:ce|le\s+pr[ée]sent)\s+(?:message|courriel|e-?mail)(?-u:\b).{0,80}(?-u:\b)confidenti
          | (?:esta|a\s+presente)\s+(?:mensagem|e-?mail)(?-u:\b).{0,80}(?-u:\b)confidencia
          | この(?:電子)?メール.{0,40}(?:機密|秘密|守秘)
        )",
    )
    .expect("disclaimer pattern")
});

static HISTORY_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*(?:
            -{2,}\s*(?:original\s+message|forwarded\s+message|ursprüngliche\s+nachricht|weitergeleitete\s+nachricht
                |message\s+d'origine|message\s+transféré|mensagem\s+original|mensagem\s+encaminhada|元のメッセージ|転送されたメッセージ)\s*-{2,}
          | _{10,}
          | (?:on|am|le|em|el)\s.+(?:wrote|schrieb|a\s+écrit|escreveu|escribió)\s*:
          | .+(?:のメッセージ|が書きました)\s*[:：]?
          | begin\s+forwarded\s+message:
        )\s*$",
    )
    .expect("history pattern")
});

/// The first line of an Outlook-style header block ("From: … / Sent: …").
static OUTLOOK_FROM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?(?:from|von|de|差出人|送信者)\s*\*?\s*[:：]").expect("from pattern")
});
static OUTLOOK_NEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\s*\*?(?:sent|date|to|subject|gesendet|datum|an|betreff|envoyé|date|à|objet|enviado|enviada|data|para|assunto|送信日時|日付|宛先|件名)\s*\*?\s*[:：]")
        .expect("next pattern")
});

/// The partner's new text: everything before the quoted history, without `>` lines and
/// without the signature.
pub fn new_text(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if *line == "-- " || line.trim_end() == "--" {
            break;
        }
        if HISTORY_START.is_match(line) || DISCLAIMER_START.is_match(line) {
            break;
        }
        if OUTLOOK_FROM.is_match(line)
            && lines[i + 1..]
                .iter()
                .take(3)
                .any(|l| OUTLOOK_NEXT.is_match(l))
        {
            break;
        }
        if line.trim_start().starts_with('>') {
            continue;
        }
        out.push(line);
    }
    out.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line-by-line reading `delimiter_lines` replaced, kept as its oracle.
    fn delimiter_lines_by_line(raw: &[u8]) -> std::collections::HashSet<&[u8]> {
        let mut found = std::collections::HashSet::new();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', raw).chain(std::iter::once(raw.len())) {
            let line = &raw[start..end];
            start = end + 1;
            if let Some(rest) = line.strip_prefix(b"--") {
                let trimmed = rest
                    .iter()
                    .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'))
                    .map_or(&rest[..0], |i| &rest[..=i]);
                found.insert(trimmed);
            }
        }
        found
    }

    #[test]
    fn delimiter_lines_are_the_lines_that_start_with_two_hyphens() {
        let pieces: [&[u8]; 12] = [
            b"--", b"-", b"\n", b"\r\n", b"b1", b" \t", b"--b2--", b"x", b"\n--", b"\r", b"--\n",
            b"",
        ];
        // Every sequence of up to five pieces (12^5 messages), and a real one.
        let mut raw = Vec::new();
        let mut n = 0u32;
        while n < 12u32.pow(5) {
            raw.clear();
            let mut k = n;
            for _ in 0..5 {
                raw.extend_from_slice(pieces[(k % 12) as usize]);
                k /= 12;
            }
            assert_eq!(
                delimiter_lines(&raw),
                delimiter_lines_by_line(&raw),
                "{:?}",
                String::from_utf8_lossy(&raw)
            );
            n += 1;
        }
        let case = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cases/en-quote-request-ops-copied.eml"
        ))
        .unwrap();
        assert_eq!(delimiter_lines(&case), delimiter_lines_by_line(&case));
    }

    #[test]
    fn the_message_id_read_alone_is_the_one_the_decision_reads() {
        let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
        let mut files: Vec<_> = std::fs::read_dir(&cases).unwrap().flatten().collect();
        files.extend(std::fs::read_dir(cases.join("clients")).unwrap().flatten());
        let mut checked = 0;
        for f in files
            .iter()
            .filter(|f| f.path().extension().is_some_and(|e| e == "eml"))
        {
            let raw = std::fs::read(f.path()).unwrap();
            let Ok(mail) = Mail::parse(&raw) else {
                continue;
            };
            assert_eq!(Mail::message_id_of(&raw), mail.message_id, "{:?}", f.path());
            checked += 1;
        }
        assert!(checked > 100, "only {checked} cases read");
        // Shapes a sender controls: folded, repeated, without angle brackets, none.
        for (raw, id) in [
            (
                "From: a@b.c\r\nMessage-ID:\r\n <x.1@b.c>\r\n\r\nhi",
                Some("x.1@b.c"),
            ),
            (
                "Message-ID: <one@b.c>\nFrom: a@b.c\nMessage-ID: <two@b.c>\n\nhi",
                None,
            ),
            ("From: a@b.c\nMessage-Id: bare@b.c\n\nhi", None),
            (
                "From: a@b.c\nSubject: none\n\nMessage-ID: <in-body@b.c>\n",
                None,
            ),
        ] {
            let parsed = Mail::parse(raw.as_bytes()).unwrap().message_id;
            assert_eq!(Mail::message_id_of(raw.as_bytes()), parsed, "{raw:?}");
            if let Some(id) = id {
                assert_eq!(parsed.as_deref(), Some(id));
            }
        }
        assert_eq!(Mail::message_id_of(b""), None);
    }

    #[test]
    fn quoted_history_is_not_new_text() {
        let text = "Please send the quote.\n\nOn Mon, 3 Nov 2026 at 10:00, Bob <b@x.com> wrote:\n> here is the PO\n";
        assert_eq!(new_text(text), "Please send the quote.");
        let outlook = "Wo steht unsere Bestellung?\n\nVon: Max <m@x.de>\nGesendet: Montag\nAn: y\nBetreff: Angebot\nbitte Angebot";
        assert_eq!(new_text(outlook), "Wo steht unsere Bestellung?");
        let fr = "Merci.\nLe lun. 3 nov. 2026 à 10:00, Paul <p@x.fr> a écrit :\n> devis";
        assert_eq!(new_text(fr), "Merci.");
        let sig = "Hello\n-- \nJohn\nPurchase Order Dept";
        assert_eq!(new_text(sig), "Hello");
        let inline = "Hi\n> old quote text\nnew line";
        assert_eq!(new_text(inline), "Hi\nnew line");
        let legal = "Can't log in.\nAlice\n\nCONFIDENTIALITY: This e-mail and any purchase order are confidential.";
        assert_eq!(new_text(legal), "Can't log in.\nAlice");
        let de = "Wo steht die Bestellung?\n\nDiese E-Mail enthält vertrauliche Informationen.";
        assert_eq!(new_text(de), "Wo steht die Bestellung?");
        let asked = "This message is about our confidential pricing, please send a quote.";
        assert_eq!(
            new_text(asked),
            asked,
            "a sentence that mentions confidentiality is not a disclaimer"
        );
    }

    #[test]
    fn programs_and_active_pages_are_risky_a_footer_is_not() {
        let mail = |name: &str, bytes: &[u8]| {
            let mut m = Mail::parse(b"From: a@b.example\r\nSubject: x\r\n\r\nhi\r\n").unwrap();
            m.attachments.push(Attachment {
                name: name.into(),
                content_type: "application/octet-stream".into(),
                bytes: bytes.to_vec(),
                text: None,
            });
            risky_attachments(&m)
        };
        assert_eq!(mail("PO.pdf.exe", b"MZ\x90").len(), 1);
        assert_eq!(mail("PO.pdf", b"MZ\x90").len(), 1, "a program by its bytes");
        assert_eq!(mail("Order.XLSM", b"PK").len(), 1);
        assert_eq!(mail("PO.html", b"<p>x</p><SCRIPT>y</script>").len(), 1);
        assert!(mail("ATT00001.htm", b"<p>Sent via the list</p>").is_empty());
        assert!(mail("PO.pdf", b"%PDF-1.4").is_empty());
    }

    #[test]
    fn width_forms_read_as_a_search_box_reads_them() {
        assert_eq!(
            fold_widths("見積番号：Ｑ－１００２３４"),
            "見積番号:Q-100234"
        );
        assert_eq!(fold_widths("ｶﾞｲﾄﾞ"), "ガイド");
        assert_eq!(
            fold_widths("quo\u{200b}te\u{3000}please\u{a0}now"),
            "quote please now"
        );
        assert_eq!(fold_widths("Müller ſ"), "Müller ſ");
    }

    #[test]
    fn attachment_names_are_bounded_plain_and_unique() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("PO_Acme_\u{202E}fdp.exe"), "PO_Acme_fdp.exe");
        assert_eq!(sanitize_name("a\u{200F}b\u{2066}c.pdf"), "abc.pdf");
        let long = format!("{}.pdf", "注文書".repeat(40)); // 360 bytes
        let cut = sanitize_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with("~.pdf"), "{cut}");
        let ascii = format!("{}.xlsx", "x".repeat(300));
        assert!(sanitize_name(&ascii).ends_with(".xlsx"));
        let taken = ["PO.pdf".to_string(), "PO (2).pdf".to_string()];
        assert_eq!(
            unique_name("PO.pdf", |n| taken.iter().any(|t| t == n)),
            "PO (3).pdf"
        );
        let mut names = UniqueNames::default();
        let given: Vec<String> = ["PO.pdf", "PO.pdf", "PO (2).pdf", "PO.pdf"]
            .iter()
            .map(|n| names.give(n))
            .collect();
        assert_eq!(
            given,
            ["PO.pdf", "PO (2).pdf", "PO (2) (2).pdf", "PO (3).pdf"]
        );
        assert_eq!(
            unique_name("PoE.pdf", |n| taken.iter().any(|t| t == n)),
            "PoE.pdf"
        );
    }
}
