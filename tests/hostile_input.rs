//! Broken and hostile input through the decision core (parse → guard → classify → plan),
//! without any network: every kind of malformed mail the service meets is left for a human
//! with the reason, and property tests over generated and mutated messages show that no
//! input panics, answers the desk itself, or answers without a clean, verified message.

use std::path::PathBuf;
use std::sync::LazyLock;

use proptest::prelude::*;
use triage::config::Config;
use triage::guard;
use triage::message::Mail;
use triage::plan::{Plan, Playbook};
use triage::rules::Respond;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static BOOK: LazyLock<Playbook> = LazyLock::new(|| {
    let config = Config::load(&repo().join("deploy/triage.yaml")).expect("config loads");
    Playbook::load(config, None).expect("shipped rules are valid")
});

static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    triage::casebook::cases(&repo().join("tests/cases"))
        .unwrap()
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
});

/// A quote request the shipped rules answer: each broken variant starts from it, so a
/// broken message that still got answered would show.
fn quote() -> String {
    String::from_utf8(
        std::fs::read(repo().join("tests/cases/en-quote-request-direct.eml")).unwrap(),
    )
    .unwrap()
    .replace("\r\n", "\n")
}

fn headers_and_body() -> (String, String) {
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

fn broken_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
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

#[test]
fn each_kind_of_broken_mail_is_left_for_a_human_with_the_reason() {
    let book = &*BOOK;
    let clean = book.decide(quote().as_bytes());
    assert_eq!(clean.respond, Respond::Auto, "{}", clean.reason);
    for (what, raw, words) in broken_cases() {
        let plan = book.decide(&raw);
        println!("{what}: {}", plan.reason);
        assert!(
            plan.outgoing.is_empty() && plan.respond == Respond::None,
            "{what}: answered ({})",
            plan.reason
        );
        assert!(plan.original.human, "{what}: not left for a human");
        assert!(
            plan.reason.contains(words) && !plan.reason.is_empty(),
            "{what}: reason {:?} does not say {words:?}",
            plan.reason
        );
    }
}

/// What must hold for any input at all.
fn invariants(raw: &[u8], plan: &Plan) -> Result<(), TestCaseError> {
    prop_assert!(!plan.reason.is_empty(), "no reason given");
    if plan.respond == Respond::None {
        prop_assert!(plan.outgoing.is_empty(), "respond none but sends");
    }
    let own = BOOK.config.own_addresses();
    for o in &plan.outgoing {
        for a in &o.to {
            prop_assert!(!own.contains(a), "sends to the desk itself: {a}");
        }
    }
    if !plan.outgoing.is_empty() {
        let mail = Mail::parse(raw).expect("answered mail parses");
        prop_assert!(
            mail.damage.is_empty(),
            "answered damaged mail: {:?}",
            mail.damage
        );
        prop_assert!(
            guard::loop_bait(&mail, &BOOK.config).is_empty(),
            "answered loop bait"
        );
        prop_assert!(
            guard::sender(&mail, &BOOK.config).domain.is_some(),
            "answered an unverified sender"
        );
    }
    Ok(())
}

/// A MIME tree of text and binary leaves, some of them damaged on purpose.
#[derive(Debug, Clone)]
enum Node {
    Leaf {
        charset: &'static str,
        encoding: &'static str,
        body: Vec<u8>,
    },
    Multi {
        boundary: String,
        children: Vec<Node>,
        close: bool,
    },
}

fn render(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Leaf {
            charset,
            encoding,
            body,
        } => {
            out.extend_from_slice(
                format!("Content-Type: text/plain; charset={charset}\nContent-Transfer-Encoding: {encoding}\n\n").as_bytes(),
            );
            out.extend_from_slice(body);
            out.push(b'\n');
        }
        Node::Multi {
            boundary,
            children,
            close,
        } => {
            out.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"\n\n").as_bytes(),
            );
            for c in children {
                out.extend_from_slice(format!("--{boundary}\n").as_bytes());
                render(c, out);
            }
            if *close {
                out.extend_from_slice(format!("--{boundary}--\n").as_bytes());
            }
        }
    }
}

fn tree() -> impl Strategy<Value = Node> {
    let leaf = (
        prop::sample::select(vec![
            "utf-8",
            "iso-8859-1",
            "shift_jis",
            "x-unknown",
            "utf-7",
        ]),
        prop::sample::select(vec![
            "7bit",
            "8bit",
            "base64",
            "quoted-printable",
            "x-uuencode",
        ]),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(charset, encoding, body)| Node::Leaf {
            charset,
            encoding,
            body,
        });
    leaf.prop_recursive(8, 40, 4, |inner| {
        (
            "[a-zA-Z0-9'()+_,./:=?-]{1,20}",
            prop::collection::vec(inner, 0..4),
            any::<bool>(),
        )
            .prop_map(|(boundary, children, close)| Node::Multi {
                boundary,
                children,
                close,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Fixtures with bytes flipped, inserted and cut out.
    #[test]
    fn mutated_fixtures(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..24),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut raw = pick.get(&FIXTURES).clone();
        for (at, byte, kind) in edits {
            if raw.is_empty() { break; }
            let i = at.index(raw.len());
            match kind {
                0 => raw[i] = byte,
                1 => raw.insert(i, byte),
                _ => { raw.remove(i); }
            }
        }
        if let Some(c) = cut {
            let keep = c.index(raw.len() + 1);
            raw.truncate(keep);
        }
        let plan = BOOK.decide(&raw);
        invariants(&raw, &plan)?;
    }

    /// A partner's verified headers over a generated, often malformed, MIME body.
    #[test]
    fn generated_mime(node in tree()) {
        let (h, _) = headers_and_body();
        let mut raw = format!("{h}MIME-Version: 1.0\n").into_bytes();
        render(&node, &mut raw);
        let plan = BOOK.decide(&raw);
        invariants(&raw, &plan)?;
    }

    /// Anything at all.
    #[test]
    fn arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let plan = BOOK.decide(&raw);
        invariants(&raw, &plan)?;
    }
}
