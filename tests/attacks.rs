//! Crafted attacks through the decision core, one class at a time, each written as the
//! neighbours of what was seen rather than the one message: a desk answering any of these
//! automatically, or stopping on one, is the failure. No network.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

use std::path::PathBuf;
use std::sync::LazyLock;

use triage::core::config::Config;
use triage::core::plan::{explain, Plan, Playbook};
use triage::core::rules::{Category, Respond};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static BOOK: LazyLock<Playbook> = LazyLock::new(|| {
    let config = Config::load(&repo().join("deploy/triage.yaml")).expect("config loads");
    Playbook::load(config, None).expect("shipped rules are valid")
});

/// The quote request the shipped rules answer automatically, to be bent.
fn quote() -> String {
    std::fs::read_to_string(repo().join("tests/cases/en-quote-request-direct.eml"))
        .unwrap()
        .replace("\r\n", "\n")
}

const TRUSTED_AR: &str = "Authentication-Results: mx.example.com; spf=pass\n smtp.mailfrom=reseller.example; dkim=pass header.d=reseller.example;\n dmarc=pass header.from=reseller.example\n";

fn with_ar(ar: &str) -> String {
    quote().replacen(TRUSTED_AR, &format!("Authentication-Results: {ar}\n"), 1)
}

fn with_header(header: &str) -> String {
    quote().replacen(
        "To: partnersupport@example.com\n",
        &format!("To: partnersupport@example.com\n{header}\n"),
        1,
    )
}

fn decide(raw: &str) -> Plan {
    BOOK.decide(raw.as_bytes())
}

fn assert_not_answered(what: &str, plan: &Plan) {
    assert!(
        plan.respond != Respond::Auto && plan.outgoing.is_empty(),
        "{what}: answered automatically ({})",
        plan.reason
    );
    assert!(plan.original.human, "{what}: not left for a human");
    assert!(!plan.reason.is_empty(), "{what}: no reason");
}

#[test]
fn the_untouched_quote_request_is_answered() {
    let plan = decide(&quote());
    assert_eq!(plan.respond, Respond::Auto, "{}", plan.reason);
}

#[test]
fn forged_or_unclear_authentication_results_never_verify() {
    let cases = [
        ("comment hides a semicolon", r#"mx.example.com; spf=pass (sender "a;dmarc=pass (b"@attacker.example) smtp.mailfrom=x@attacker.example; dmarc=fail header.from=reseller.example"#),
        ("pass inside a comment", "mx.example.com; dmarc=fail (was: dmarc=pass header.from=reseller.example) header.from=reseller.example"),
        ("pass inside a quoted string", r#"mx.example.com; dmarc=fail reason="; dmarc=pass header.from=reseller.example""#),
        ("pass without header.from", "mx.example.com; dmarc=pass"),
        ("pass for another domain", "mx.example.com; dmarc=pass header.from=attacker.example"),
        ("pass for a parent of the domain", "mx.example.com; dmarc=pass header.from=example"),
        ("two different results", "mx.example.com; dmarc=pass header.from=reseller.example; dmarc=fail header.from=reseller.example"),
        ("unbalanced comment", "mx.example.com; dmarc=pass (header.from=reseller.example"),
        ("another server's id", "mx.example.com.attacker.example; dmarc=pass header.from=reseller.example"),
        ("dmarc=none", "mx.example.com; dmarc=none header.from=reseller.example"),
        ("temperror", "mx.example.com; dmarc=temperror header.from=reseller.example"),
    ];
    for (what, ar) in cases {
        assert_not_answered(what, &decide(&with_ar(ar)));
    }
    // Written differently but meaning the same pass: accepted.
    for (what, ar) in [
        ("nested comments", "mx.example.com (Postfix (v3)); dmarc=pass (p=reject (strict)) header.from=reseller.example"),
        ("spaces around =", "mx.example.com; dmarc = pass header.from = reseller.example"),
        ("version and case", "MX.EXAMPLE.COM 1; DMARC=Pass Header.From=Reseller.Example"),
        ("quoted value", r#"mx.example.com; dmarc=pass header.from="reseller.example""#),
    ] {
        let plan = decide(&with_ar(ar));
        assert_eq!(plan.respond, Respond::Auto, "{what}: {}", plan.reason);
    }
}

#[test]
fn a_forged_copy_below_the_servers_own_header_does_not_count() {
    let raw = quote().replacen(
        TRUSTED_AR,
        "Authentication-Results: mx.example.com; dmarc=fail header.from=reseller.example\nAuthentication-Results: mx.example.com; dmarc=pass header.from=reseller.example\n",
        1,
    );
    assert_not_answered("forged copy below", &decide(&raw));
}

#[test]
fn automatic_mail_in_every_language_is_never_answered_and_is_other() {
    let from = |local: &str| {
        quote().replacen(
            "From: Alice Buyer <alice@reseller.example>",
            &format!("From: Reseller <{local}@reseller.example>"),
            1,
        )
    };
    let subject = |s: &str| {
        quote().replacen(
            "Subject: Quote request - Acme Corp, 250 Premium seats",
            &format!("Subject: {s}"),
            1,
        )
    };
    let body = |b: &str| quote().replacen("Hi team,\n", &format!("{b}\n\nHi team,\n"), 1);
    let mut cases: Vec<(String, String)> = Vec::new();
    for local in [
        "ne-pas-repondre",
        "nepasrepondre",
        "nao-responda",
        "naoresponda",
        "nicht-antworten",
        "no_reply",
        "do-not-reply",
        "noreply.quotes",
        "mailer-daemon",
        "notifications",
        "bounces+123",
    ] {
        cases.push((format!("local part {local}"), from(local)));
    }
    for s in [
        "Automatic reply: Quote request - Acme Corp",
        "Automatische Antwort: Angebot",
        "Abwesenheitsnotiz: Quote request",
        "Réponse automatique : Quote request",
        "Resposta automática: Quote request",
        "Out of Office: Quote request",
        "AW: Abwesend bis 20.11.",
        "自動応答: 見積依頼",
        "Undeliverable: Quote request",
        "Delivery Status Notification (Failure)",
        "Read: Quote request",
    ] {
        cases.push((format!("subject {s:?}"), subject(s)));
    }
    for b in [
        "This is an automatically generated message. Your request has been received.",
        "We have received your request and a ticket has been created.",
        "Ihre Anfrage ist bei uns eingegangen.",
        "Nous avons bien reçu votre demande.",
        "Recebemos a sua solicitação.",
        "I am out of the office until Monday with limited access to email.",
        "Ich bin bis 20.11. nicht im Büro.",
        "Je suis absent jusqu'au 20 novembre.",
        "Estou ausente até segunda-feira.",
        "このメールは自動送信されています。",
    ] {
        cases.push((format!("text {b:?}"), body(b)));
    }
    for h in [
        "Auto-Submitted: no\nAuto-Submitted: auto-replied",
        "Precedence: bulk; charset=us-ascii",
        "Precedence: junk",
        "X-Autogenerated: Reply",
        "X-Auto-Response-Suppress: All",
        "X-AutoReply: yes",
        "X-Zendesk-From-Account-Id: 123",
        "X-OTRS-Loop: yes",
        "X-Mailer: Zammad Mail Service",
        "List-Id: <partners.reseller.example>",
        "List-Unsubscribe: <mailto:leave@reseller.example>",
        "Feedback-ID: 123:newsletter:esp",
    ] {
        cases.push((format!("header {h:?}"), with_header(h)));
    }
    cases.push((
        "ticket acknowledgement".into(),
        subject("[#12345] We have received your request").replacen(
            "Hi team,\n",
            "We have received your request.\n",
            1,
        ),
    ));
    for (what, raw) in cases {
        let plan = decide(&raw);
        assert_not_answered(&what, &plan);
        assert_eq!(
            plan.category,
            Category::Other,
            "{what}: machine mail counted as {}",
            plan.category
        );
    }
}

#[test]
fn our_own_answer_quoted_back_without_references_is_a_reply_in_our_thread() {
    let mark = triage::core::threading::answer_mark(
        "<0123456789abcdef0123456789abcdef.triage@triage.example.com>",
    );
    for (what, quoted) in [
        (
            "the answer mark",
            format!("> Thank you, we are on it.\n> {mark}\n"),
        ),
        (
            "our signature",
            "> Kind regards,\n> Partner Help Desk\n> partnersupport@example.com\n".to_string(),
        ),
    ] {
        let raw = quote().replacen(
            "Thanks,\nAlice\n",
            &format!("Thanks,\nAlice\n\nOn Mon, Partner Help Desk wrote:\n{quoted}"),
            1,
        );
        let plan = decide(&raw);
        assert_not_answered(what, &plan);
        assert!(plan.reason.contains("thread"), "{what}: {}", plan.reason);
    }
}

#[test]
fn look_alike_letters_in_ids_neither_panic_nor_count() {
    for fake in [
        "006ſſabcdefgſab",
        "006KKabcdefgKab",
        "0065e00000AbCdEAAſ",
        "Q-1002３4",
    ] {
        let raw = quote().replacen(
            "Opportunity: 0065e00000AbCdEAAX",
            &format!("Opportunity: {fake}\nQuote: {fake}"),
            1,
        );
        let plan = decide(&raw);
        for v in plan.fields.values() {
            assert!(
                v.is_ascii() || !v.starts_with("006"),
                "{fake}: id {v:?} taken"
            );
        }
        assert!(
            plan.fields
                .get("opportunity_id")
                .is_none_or(|v| v.is_ascii()),
            "{fake}"
        );
    }
}

#[test]
fn ids_are_whole_tokens() {
    for (written, field, value) in [
        (
            "Opportunity: 0065e00000AbCdEAAX.",
            "opportunity_id",
            "0065e00000AbCdEAAX",
        ),
        (
            "(opp #0065e00000AbCdEAAX)",
            "opportunity_id",
            "0065e00000AbCdEAAX",
        ),
        (
            "Opportunity-ID:0065e00000AbCdEAAX;",
            "opportunity_id",
            "0065e00000AbCdEAAX",
        ),
        ("Deal ID: DR-2026-0042,", "deal_id", "DR-2026-0042"),
        ("Angebotsnummer: Q-100234!", "quote_number", "Q-100234"),
        ("見積番号：Q-100234。", "quote_number", "Q-100234"),
        ("Bestellnummer: BN-2026-77", "po_number", "BN-2026-77"),
        ("pedido de compra nº 4500012345", "po_number", "4500012345"),
        ("PO number: PO-12345", "po_number", "PO-12345"),
        ("our order XY-PO-6789 attached", "po_number", "XY-PO-6789"),
        ("Quote #Q-100234.", "quote_number", "Q-100234"),
        ("(Deal ID: DR-2026-0042)", "deal_id", "DR-2026-0042"),
    ] {
        let raw = quote().replacen("Opportunity: 0065e00000AbCdEAAX", written, 1);
        let plan = decide(&raw);
        assert_eq!(
            plan.fields.get(field).map(String::as_str),
            Some(value),
            "{written}: {:?}",
            plan.fields
        );
    }
}

#[test]
fn only_partners_get_automatic_answers() {
    for domain in [
        "gmail.com",
        "competitor.example",
        "reseller.example.attacker.example",
        "reseiler.example",
    ] {
        let raw = quote().replace("reseller.example", domain).replacen(
            "Could you please send us a quote",
            "Our portal password does not work, and could you send us a quote",
            1,
        );
        let plan = decide(&raw);
        assert_not_answered(domain, &plan);
    }
}

#[test]
fn operator_screens_show_message_text_escaped() {
    let raw = quote().replacen(
        "Subject: Quote request - Acme Corp, 250 Premium seats",
        "Subject: =?utf-8?B?UXVvdGUKICByZXNwb25kOiAgICBub25lIChsZWZ0IGZvciBhIGh1bWFuKRtbMkrigK5nbnAuZXhl?=",
        1,
    );
    let plan = decide(&raw);
    assert!(
        plan.subject.contains('\n') && plan.subject.contains('\u{1b}'),
        "the decoded subject carries the attack: {:?}",
        plan.subject
    );
    let shown = explain("attack.eml", &plan);
    assert!(
        !shown.contains('\u{1b}') && !shown.contains('\u{202e}'),
        "{shown}"
    );
    let respond_lines = shown
        .lines()
        .filter(|l| l.trim_start().starts_with("respond:"))
        .count();
    assert_eq!(respond_lines, 1, "a forged respond line: {shown}");
}

#[test]
fn two_authors_are_damage_not_an_answer() {
    let two_headers = quote().replacen(
        "From: Alice Buyer <alice@reseller.example>\n",
        "From: Alice Buyer <alice@reseller.example>\nFrom: Mallory <m@attacker.example>\n",
        1,
    );
    let two_in_one = quote().replacen(
        "From: Alice Buyer <alice@reseller.example>",
        "From: Alice Buyer <alice@reseller.example>, Mallory <m@attacker.example>",
        1,
    );
    for (what, raw) in [
        ("two From headers", two_headers),
        ("two authors", two_in_one),
    ] {
        let plan = decide(&raw);
        assert_not_answered(what, &plan);
        assert!(
            plan.reason.contains("one author"),
            "{what}: {}",
            plan.reason
        );
    }
}
