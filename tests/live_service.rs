//! `triage run --once` against a real Dovecot + Postfix started on loopback by this test
//! (tools/mailstack), reading what recipients actually received over IMAP.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use mail_parser::{MessageParser, MimeHeaders};
use support::*;

#[test]
fn answers_each_message_once_with_the_right_people_and_documents() {
    let Some(stack) = Stack::start("live") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    for name in [
        "en-purchase-order-direct",
        "en-quote-request-ops-copied",
        "poe-complete-en",
        "poe-missing-customer-en",
        "bait-out-of-office",
        "quote-ambiguous-customer",
    ] {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 6, std::time::Duration::from_secs(10));
    run_once(&stack, &cfg);
    // A second run (a restart) must not answer anything again.
    run_once(&stack, &cfg);

    let parser = MessageParser::default();
    let alice = mailbox(&stack, "alice@reseller.example", "INBOX");
    let subjects: Vec<String> = alice
        .iter()
        .map(|r| parser.parse(r).unwrap().subject().unwrap_or("").to_string())
        .collect();
    let mut sorted = subjects.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["Re: PO 4500012345 for Acme Corp", "Re: PoE - Acme Corp services", "Re: Proof of Execution", "Re: Quote for Acme renewal"],
        "each answerable message answered exactly once; loop bait and the ambiguous lookup not at all"
    );

    // Case B: the PO reply, with the opportunity's people on cc and the documents byte-identical.
    let po_raw = alice
        .iter()
        .find(|r| parser.parse(r).unwrap().subject() == Some("Re: PO 4500012345 for Acme Corp"))
        .unwrap();
    let po = parser.parse(po_raw).unwrap();
    let cc: Vec<String> = po
        .cc()
        .unwrap()
        .iter()
        .filter_map(|a| a.address().map(str::to_string))
        .collect();
    assert_eq!(
        cc,
        vec![
            "rep.one@example.com",
            "isr.one@example.com",
            "cam.east@example.com",
            "partnerorderops@example.com"
        ]
    );
    assert_eq!(
        po.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert_eq!(
        po.in_reply_to().as_text(),
        Some("case-en-purchase-order-direct@reseller.example")
    );
    let original_raw = case("en-purchase-order-direct");
    let original = parser.parse(&original_raw).unwrap();
    let sent: Vec<(String, Vec<u8>)> = po
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap().to_string(),
                a.contents().to_vec(),
            )
        })
        .collect();
    let orig: Vec<(String, Vec<u8>)> = original
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap().to_string(),
                a.contents().to_vec(),
            )
        })
        .collect();
    assert_eq!(sent, orig, "re-attached documents are byte-identical");
    for person in [
        "rep.one@example.com",
        "isr.one@example.com",
        "partnerorderops@example.com",
    ] {
        let got = mailbox(&stack, person, "INBOX");
        assert_eq!(got.len(), 1, "{person} got {} messages", got.len());
    }
    // Case C: the channel manager got the PoE document, plus the PO reply on cc.
    let cam = mailbox(&stack, "cam.east@example.com", "INBOX");
    let fwd = cam
        .iter()
        .map(|r| parser.parse(r).unwrap())
        .find(|m| m.subject() == Some("Fwd: PoE - Acme Corp services"))
        .expect("PoE forwarded to the channel manager");
    assert_eq!(
        fwd.attachments()
            .map(|a| a.attachment_name().unwrap().to_string())
            .collect::<Vec<_>>(),
        vec!["PoE_Acme.pdf"]
    );
    assert_eq!(cam.len(), 2);

    // The desk's mailbox: copies in Sent, originals filed, the human cases still in INBOX.
    assert_eq!(
        mailbox(&stack, "partnersupport@example.com", "Sent").len(),
        5
    );
    assert_eq!(
        mailbox(&stack, "partnersupport@example.com", "Triage/Orders").len(),
        2
    );
    assert_eq!(
        mailbox(&stack, "partnersupport@example.com", "Triage/PoE").len(),
        2
    );
    let left: Vec<String> = mailbox(&stack, "partnersupport@example.com", "INBOX")
        .iter()
        .map(|r| parser.parse(r).unwrap().subject().unwrap_or("").to_string())
        .collect();
    assert_eq!(left.len(), 2, "left for a human: {left:?}");
    assert!(stack
        .dir
        .join("documents/opportunity/0065e00000AbCdEAAX/PO-4500012345.pdf")
        .exists());
}

/// What the partner's document said, found in the document: the PoE whose fields are only
/// in its PDF is forwarded to the channel manager with that PDF, the PO wrapped in
/// winmail.dat goes out with the real PDF, and the encrypted PoE waits for a person.
#[test]
fn documents_are_read_and_unwrapped_through_the_real_servers() {
    let Some(stack) = Stack::start("documents") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    for name in [
        "doc-poe-fields-only-in-pdf-en",
        "doc-po-in-winmail-dat",
        "doc-poe-encrypted-pdf",
    ] {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 3, std::time::Duration::from_secs(10));
    run_once(&stack, &cfg);

    let parser = MessageParser::default();
    let attached = |raw: &[u8]| -> Vec<(String, Vec<u8>)> {
        let m = parser.parse(raw).unwrap();
        m.attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap_or("").to_string(),
                    a.contents().to_vec(),
                )
            })
            .collect()
    };
    // The channel manager got the PoE with the partner's PDF, byte for byte.
    // (They are also on cc of the PO reply.)
    let cam = mailbox(&stack, "cam.east@example.com", "INBOX");
    assert_eq!(cam.len(), 2);
    let forward = cam
        .iter()
        .find(|r| String::from_utf8_lossy(r).contains("Subject: Fwd: PoE Acme"))
        .expect("the PoE forwarded to the channel manager");
    let original_raw = case("doc-poe-fields-only-in-pdf-en");
    let original = attached(&original_raw);
    assert_eq!(original[0].0, "PoE_Acme_signed.pdf");
    assert_eq!(attached(forward), original);

    // The partner: "PoE submitted", and the PO reply carrying the PDF from winmail.dat.
    let alice = mailbox(&stack, PARTNER, "INBOX");
    assert_eq!(alice.len(), 2, "no answer to the encrypted PoE");
    let po_reply = alice
        .iter()
        .find(|r| String::from_utf8_lossy(r).contains("Re: PO for Acme"))
        .expect("the PO is answered");
    let docs = attached(po_reply);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].0, "PO-4500012400.pdf");
    assert!(
        docs[0].1.starts_with(b"%PDF-"),
        "the real PDF, not winmail.dat"
    );
    let text =
        triage::core::documents::text_of(triage::core::documents::Kind::Pdf, &docs[0].1).unwrap();
    assert!(text.contains("Q-100234"), "{text}");

    // The encrypted PoE stays flagged for a person, with the reason on record.
    let reasons = journal_rows(
        &stack,
        "SELECT detail FROM audit WHERE outcome = 'left for human'",
    );
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0][0].contains("PoE_protected.pdf: the PDF is encrypted"),
        "{reasons:?}"
    );
}

/// Mail that arrives while the service is still working through earlier mail, after
/// its listing, is answered within seconds, not at the next IDLE refresh: the server
/// announced it during the pass, and that announcement must not be thrown away.
#[test]
fn mail_arriving_during_a_pass_is_answered_without_waiting_for_the_idle_refresh() {
    use std::time::Duration;
    let Some(stack) = Stack::start("mid-pass") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    // No polling and no own copies coming back to wake IDLE: only the server's
    // announcement of the new message can bring it in before the refresh.
    wiring.imap = wiring.imap.replace(
        "poll_seconds: 1",
        "poll_seconds: 600, idle_refresh_seconds: 300",
    );
    wiring.smtp = wiring.smtp.replace('}', ", self_copy: false}");
    let cfg = config(&stack, &wiring);
    let mut service = start_service(&stack, &cfg, "service.log");
    std::thread::sleep(Duration::from_millis(500));

    // A pass long enough to still be running when the late message comes.
    let backlog: Vec<Vec<u8>> = (0..300)
        .map(|i| numbered_case("en-quote-request-ops-copied", i))
        .collect();
    append_all(&stack, DESK, "INBOX", &backlog);
    wait_for(&stack, PARTNER, "INBOX", 1, Duration::from_secs(30));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1000));
    let got = wait_for(&stack, PARTNER, "INBOX", 301, Duration::from_secs(30));

    signal(&service, "TERM");
    let status = wait_exit(&mut service, Duration::from_secs(20));
    let log = std::fs::read_to_string(stack.dir.join("service.log")).unwrap();
    assert!(status.success(), "SIGTERM: exit 0, got {status}\n{log}");
    assert_eq!(got, 301, "each answered once");
    assert!(
        replied_to(&stack)
            .iter()
            .any(|id| id == "case-en-quote-request-ops-copied-1000@reseller.example"),
        "the late message was answered"
    );
}

/// A sort-only rule set (`respond: file`, as the benchmark's) files each message into its
/// folder unread, as Sieve's `fileinto` would: a person still has to read it there. What
/// the shipped rules answer is filed read and answered.
#[test]
fn sort_only_rules_file_unread_and_answered_mail_is_marked_read() {
    let Some(stack) = Stack::start("sort-only") else {
        return;
    };
    let sort_cfg = sort_only(&config(&stack, &Wiring::plain(&stack)));
    append_all(
        &stack,
        DESK,
        "INBOX",
        &[
            numbered_case("en-purchase-order-direct", 1),
            numbered_case("en-quote-request-ops-copied", 1),
        ],
    );
    let out = run_once(&stack, &sort_cfg);
    assert!(out.status.success(), "{out:?}");
    let orders = folder(&stack, DESK, "Sort/Orders");
    let quotes = folder(&stack, DESK, "Sort/Quotes");
    assert_eq!((orders.len(), quotes.len()), (1, 1), "each in its folder");
    for held in orders.iter().chain(&quotes) {
        assert!(
            !held
                .flags
                .iter()
                .any(|f| f.contains("Seen") || f.contains("Answered")),
            "filed unread: {:?}",
            held.flags
        );
    }
    assert!(
        mailbox(&stack, PARTNER, "INBOX").is_empty(),
        "nothing answered"
    );

    // The shipped rules answer the same mail: filed read and answered.
    let shipped = config(&stack, &Wiring::plain(&stack));
    append_all(
        &stack,
        DESK,
        "INBOX",
        &[numbered_case("en-quote-request-ops-copied", 2)],
    );
    let out = run_once(&stack, &shipped);
    assert!(out.status.success(), "{out:?}");
    let answered: Vec<Held> = ["Triage/Answered", "Triage/Orders"]
        .iter()
        .flat_map(|f| folder(&stack, DESK, f))
        .collect();
    assert_eq!(answered.len(), 1, "the quote request filed once");
    let flags = &answered[0].flags;
    assert!(
        flags.iter().any(|f| f.contains("Seen")) && flags.iter().any(|f| f.contains("Answered")),
        "{flags:?}"
    );
}
