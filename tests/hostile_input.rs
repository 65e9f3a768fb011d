//! Broken and hostile input through the decision core (parse → guard → classify → plan),
//! without any network: every kind of malformed mail the service meets is left for a human
//! with the reason, and property tests over generated and mutated messages show that no
//! input panics, answers the desk itself, or answers without a clean, verified message.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

use std::path::PathBuf;
use std::sync::LazyLock;

mod support;

use proptest::prelude::*;
use support::broken;
use triage::core::config::Config;
use triage::core::guard;
use triage::core::message::Mail;
use triage::core::plan::{Plan, Playbook};
use triage::core::rules::Respond;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static BOOK: LazyLock<Playbook> = LazyLock::new(|| {
    let config = Config::load(&repo().join("deploy/triage.yaml")).expect("config loads");
    Playbook::load(config, None).expect("shipped rules are valid")
});

static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    triage::review::casebook::cases(&repo().join("tests/cases"))
        .unwrap()
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
});

#[test]
fn each_kind_of_broken_mail_is_left_for_a_human_with_the_reason() {
    let book = &*BOOK;
    let clean = book.decide(broken::quote().as_bytes());
    assert_eq!(clean.respond, Respond::Auto, "{}", clean.reason);
    for (what, raw, words) in broken::cases() {
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
    // The shell recognises own copies, restored copies and repeats by the Message-ID it
    // reads alone, before deciding: it must be the one the decision reads.
    if let Ok(mail) = Mail::parse(raw) {
        prop_assert_eq!(Mail::message_id_of(raw), mail.message_id);
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

    /// Header blocks a sender controls around the Message-ID: repeated, folded, with
    /// other case, garbage and bare line ends. Read alone or with the whole message, the
    /// same Message-ID.
    #[test]
    fn message_id_alone_is_the_decisions(
        fields in prop::collection::vec((
            prop::sample::select(vec!["Message-ID", "Message-Id", "message-id", "MESSAGE-ID", "From", "Subject", "Content-Type", "X-Id"]),
            "[ -~\t<>@]{0,30}",
            prop::sample::select(vec!["\r\n", "\n", "\r\n ", "\n\t", "\r"]),
        ), 0..8),
        body in "[ -~\r\n]{0,40}",
    ) {
        let mut raw = String::from("From: a@reseller.example\r\n");
        for (name, value, end) in fields {
            raw.push_str(&format!("{name}:{value}{end}"));
        }
        raw.push_str("\r\n");
        raw.push_str(&body);
        if let Ok(mail) = Mail::parse(raw.as_bytes()) {
            prop_assert_eq!(Mail::message_id_of(raw.as_bytes()), mail.message_id, "{:?}", raw);
        }
    }

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
        let (h, _) = broken::headers_and_body();
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
