//! Decision time on crafted shapes of hostile mail at 0.1, 1, 5 and 24 MB (just under the 25 MiB limit):
//! `cargo bench --bench hostile`. Work on untrusted input must be linear in its size, so
//! the per-MB figure of each shape should stay flat as the size grows. It reports; it
//! does not assert (speed is measured in benchmarks, never in timed tests).

use std::path::PathBuf;
use std::time::Instant;

use triage::core::config::Config;
use triage::core::plan::Playbook;

const HEAD: &str = "From: Alex <alex@reseller.example>\nTo: partnersupport@example.com\nAuthentication-Results: mx.example.com; dmarc=pass header.from=reseller.example\nSubject: Quote request Q-100234\nMessage-ID: <hostile@reseller.example>\nMIME-Version: 1.0\n";

/// Many sibling parts, each with a boundary parameter of its own.
fn boundary_parts(size: usize) -> Vec<u8> {
    let mut s = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"top\"\n\n");
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!("--top\nContent-Type: multipart/alternative; boundary=\"b{i}\"\n\n--b{i}\nContent-Type: text/plain\n\nquote please\n--b{i}--\n"));
        i += 1;
    }
    s.push_str("--top--\n");
    s.into_bytes()
}

/// Multiparts nested as deep as the size allows, then padding.
fn deep_nesting(size: usize) -> Vec<u8> {
    let depth = 200;
    let mut s = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"d0\"\n\n");
    for d in 1..depth {
        s.push_str(&format!(
            "--d{}\nContent-Type: multipart/mixed; boundary=\"d{d}\"\n\n",
            d - 1
        ));
    }
    s.push_str(&format!("--d{}\nContent-Type: text/plain\n\n", depth - 1));
    let line = "quote request for the renewal of Acme Corp, please send\n";
    while s.len() < size {
        s.push_str(line);
    }
    for d in (0..depth).rev() {
        s.push_str(&format!("--d{d}--\n"));
    }
    s.into_bytes()
}

/// message/rfc822 inside message/rfc822, each carrying the rest.
fn nested_messages(size: usize) -> Vec<u8> {
    let depth = 100;
    let pad_line = "Bitte um ein Angebot fuer Acme Corp.\n";
    let mut inner = String::from("From: x@y.example\nSubject: inner\n\n");
    while inner.len() < size {
        inner.push_str(pad_line);
    }
    for d in 0..depth {
        inner = format!("From: x{d}@y.example\nSubject: fwd {d}\nContent-Type: multipart/mixed; boundary=\"m{d}\"\n\n--m{d}\nContent-Type: message/rfc822\n\n{inner}\n--m{d}--\n");
    }
    format!("{HEAD}{inner}").into_bytes()
}

/// One long header line and a body of one long line.
fn long_lines(size: usize) -> Vec<u8> {
    let half = size / 2;
    format!(
        "{HEAD}X-Long: {}\nContent-Type: text/plain\n\n{}\n",
        "a".repeat(half),
        "quote ".repeat(half / 6)
    )
    .into_bytes()
}

/// HTML with deeply nested blocks and quoted-history markers.
fn html_blocks(size: usize) -> Vec<u8> {
    let mut s = format!("{HEAD}Content-Type: text/html; charset=utf-8\n\n<html><body>");
    while s.len() < size {
        s.push_str("<div class=\"gmail_quote\"><blockquote><p>quote Q-100234</p><table><tr><td>x</td></tr></table>");
    }
    s.into_bytes()
}

/// Many small attachments with long names.
fn many_attachments(size: usize) -> Vec<u8> {
    let mut s = format!("{HEAD}Content-Type: multipart/mixed; boundary=\"a\"\n\n--a\nContent-Type: text/plain\n\nPO attached\n");
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!("--a\nContent-Type: application/octet-stream; name=\"PO_{i}_{}.bin\"\nContent-Disposition: attachment\nContent-Transfer-Encoding: base64\n\nUE8gMTIzNDU2Nzg5MA==\n", "x".repeat(200)));
        i += 1;
    }
    s.push_str("--a--\n");
    s.into_bytes()
}

/// Thousands of distinct ids of every kind, as a flood of quote numbers would be.
fn many_ids(size: usize) -> Vec<u8> {
    let mut s = format!("{HEAD}Content-Type: text/plain\n\n");
    let mut i = 0u64;
    while s.len() < size {
        s.push_str(&format!(
            "Quote: Q-{:07} Opportunity: 006{:012} Deal ID: DR-2026-{:05} PO: PO-{i}\n",
            i,
            i,
            i % 100000
        ));
        i += 1;
    }
    s.into_bytes()
}

/// A hostile shape: its name and how to build a message of about n bytes.
type Shape = (&'static str, fn(usize) -> Vec<u8>);

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&repo.join("deploy/triage.yaml")).expect("config");
    let book = Playbook::load(config, None).expect("playbook");
    let shapes: [Shape; 7] = [
        ("many ids", many_ids),
        ("boundary parts", boundary_parts),
        ("deep nesting", deep_nesting),
        ("nested messages", nested_messages),
        ("long lines", long_lines),
        ("html blocks", html_blocks),
        ("many attachments", many_attachments),
    ];
    let only: Option<String> = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    println!(
        "{:<18} {:>8} {:>10} {:>10}",
        "shape", "MB", "seconds", "s per MB"
    );
    for (name, make) in shapes {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        for mb in [0.1, 1.0, 5.0, 24.0] {
            let raw = make((mb * 1_048_576.0) as usize);
            let real_mb = raw.len() as f64 / 1_048_576.0;
            let t = Instant::now();
            let plan = std::hint::black_box(book.decide(&raw));
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{name:<18} {real_mb:>8.2} {secs:>10.3} {:>10.3}   {:?}",
                secs / real_mb,
                plan.respond
            );
        }
    }
}
