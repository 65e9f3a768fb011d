//! Malformed mail of every kind the service must survive, built from a quote request the
//! shipped rules answer (so a broken variant that still got answered would show). Shared by
//! the decision-core tests and the live test that feeds them through the real servers.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The quote request every broken variant starts from.
pub fn quote() -> String {
    String::from_utf8(
        std::fs::read(repo().join("tests/cases/en-quote-request-direct.eml")).unwrap(),
    )
    .unwrap()
    .replace("\r\n", "\n")
}

pub fn headers_and_body() -> (String, String) {
    let q = quote();
    let (h, b) = q.split_once("\n\n").unwrap();
    // Keep everything but the body's own content headers.
    let h: String = h
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-type") && !l.starts_with("content-transfer-encoding")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    (h, b.to_string())
}

fn multipart(boundary: &str, parts: &[String], close: bool) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&format!("--{boundary}\n{p}\n"));
    }
    if close {
        out.push_str(&format!("--{boundary}--\n"));
    }
    out
}

fn text_part(body: &str) -> String {
    format!("Content-Type: text/plain; charset=utf-8\n\n{body}")
}

fn base64_of(len: usize) -> String {
    // Deterministic bytes, wrapped at 76 like a mail client does.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(len * 4 / 3 + len / 57 + 4);
    let mut x: u32 = 12345;
    for i in 0..len * 4 / 3 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        s.push(A[(x >> 16) as usize % 64] as char);
        if i % 76 == 75 {
            s.push('\n');
        }
    }
    s
}

pub fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let (h, b) = headers_and_body();
    let mixed = |boundary: &str, body: String| {
        format!("{h}MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n\n{body}")
            .into_bytes()
    };
    let pdf = |data: &str| {
        format!(
            "Content-Type: application/pdf; name=\"scan.pdf\"\nContent-Disposition: attachment; filename=\"scan.pdf\"\nContent-Transfer-Encoding: base64\n\n{data}"
        )
    };
    let mut nested = text_part(&b);
    for level in 0..100 {
        nested = format!(
            "Content-Type: multipart/mixed; boundary=\"n{level}\"\n\n{}",
            multipart(&format!("n{level}"), &[nested], true)
        );
    }
    let huge_subject = quote().replacen(
        "Subject: ",
        &format!("Subject: {} ", "x".repeat(1 << 20)),
        1,
    );
    let mut cut_scan = base64_of(3 << 20);
    cut_scan.truncate(cut_scan.len() / 2);
    let mut over_limit = mixed(
        "big",
        multipart("big", &[text_part(&b), pdf(&base64_of(50 << 20))], true),
    );
    over_limit.shrink_to_fit();
    vec![
        ("zero bytes", Vec::new(), "empty"),
        (
            "NUL bytes",
            quote().replacen("\n\n", "\n\n\0\0\0", 1).into_bytes(),
            "NUL bytes",
        ),
        ("a 1 MB header line", huge_subject.into_bytes(), "header line of"),
        (
            "100 levels of nesting",
            format!("{h}MIME-Version: 1.0\n{nested}").into_bytes(),
            "nested 100 levels deep",
        ),
        (
            "a boundary that never appears",
            mixed("nowhere", multipart("elsewhere", &[text_part(&b)], true)),
            "never appears",
        ),
        (
            "a truncated multipart",
            mixed("cut", multipart("cut", &[text_part(&b), pdf(&base64_of(3000))], false)),
            "closing boundary",
        ),
        (
            "bad base64",
            mixed(
                "b64",
                multipart("b64", &[text_part(&b), pdf("JVBERi0xLjQK!!!!@@@@####\n$$$$%%%%")], true),
            ),
            "could not be decoded",
        ),
        (
            "bad quoted-printable",
            format!("{h}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n{b}\n=ZZ=G1 caf=E9 =\n").into_bytes(),
            // Escapes that are not hex are kept as written (sloppy encoders are common);
            // a decoded byte that is not UTF-8 is what makes it unreadable.
            "cannot decode",
        ),
        (
            "an unknown charset with 8-bit text",
            {
                let mut v = format!("{h}MIME-Version: 1.0\nContent-Type: text/plain; charset=x-klingon\n\n{b}\n")
                    .into_bytes();
                v.extend_from_slice(&[0xff, 0xfe, 0x81, 0x9f]);
                v
            },
            "unknown charset (x-klingon)",
        ),
        (
            "Latin-1 bytes labelled UTF-8",
            {
                let mut v = format!("{h}MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{b}\nCaf")
                    .into_bytes();
                v.push(0xe9);
                v
            },
            "cannot decode",
        ),
        (
            "a damaged multi-megabyte scan",
            mixed("scan", multipart("scan", &[text_part(&b), pdf(&cut_scan)], false)),
            "closing boundary",
        ),
        ("a 50 MB attachment", over_limit, "over the limit"),
    ]
}
