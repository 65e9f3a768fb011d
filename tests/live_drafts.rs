//! Drafts for a person, against a real Dovecot and Postfix: a second purchase order from
//! the same partner on one day (held by the per-sender limit) and an ambiguous quote
//! request each get exactly one draft in Drafts, also across a crash around the APPEND;
//! a person sends one (edited) and deletes the other, and the audit log says so.
//! Spoofed and unknown senders get none.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use futures::StreamExt;
use mail_parser::{MessageParser, MimeHeaders};
use support::*;

/// What the desk's Drafts folder holds: (raw, flags) of each draft.
fn drafts(stack: &Stack) -> Vec<Held> {
    folder(stack, DESK, "Drafts")
}

fn text_of(raw: &[u8]) -> String {
    let m = MessageParser::default().parse(raw).unwrap();
    m.body_text(0).unwrap_or_default().to_string()
}

fn header(raw: &[u8], name: &str) -> String {
    let m = MessageParser::default().parse(raw).unwrap();
    m.header_raw(name).unwrap_or("").trim().to_string()
}

fn attachments(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let m = MessageParser::default().parse(raw).unwrap();
    m.attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or("").to_string(),
                a.contents().to_vec(),
            )
        })
        .collect()
}

/// Deletes the draft with this Message-ID from Drafts, as a mail client does.
fn delete_draft(stack: &Stack, message_id: &str) {
    block_on(async {
        let mut s = login(stack, DESK).await;
        s.select("Drafts").await.unwrap();
        let found = s
            .uid_search(format!("HEADER Message-ID \"{message_id}\""))
            .await
            .unwrap();
        let set: Vec<String> = found.iter().map(u32::to_string).collect();
        assert_eq!(set.len(), 1, "one draft {message_id}");
        let stream = s
            .uid_store(set.join(","), "+FLAGS (\\Deleted)")
            .await
            .unwrap();
        let _: Vec<_> = stream.collect().await;
        let stream = s.expunge().await.unwrap();
        let _: Vec<_> = stream.collect().await;
        drop(s.logout().await);
    })
}

#[test]
fn drafts_are_written_once_followed_and_never_disclose() {
    let Some(stack) = Stack::start("drafts") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    wiring.limits = "  per_sender: {answers: 1, hours: 24}\n".into();
    let cfg = config(&stack, &wiring);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("drafts: {when_held: true, discard_after_minutes: 0}\n");
    std::fs::write(&cfg, text).unwrap();

    let first = numbered_case("en-purchase-order-direct", 1);
    let second = numbered_case("en-purchase-order-direct", 2);
    deliver(&stack, &first);
    wait_for(&stack, DESK, "INBOX", 1, std::time::Duration::from_secs(10));
    run_once(&stack, &cfg);
    assert_eq!(
        mailbox(&stack, PARTNER, "INBOX").len(),
        1,
        "the first PO is answered"
    );
    // Second PO the same day (limit 1 per sender and category), the ambiguous quote
    // request, and three that must get no draft: a DMARC failure, a look-alike domain,
    // another partner's opportunity.
    for raw in [
        second.clone(),
        case("quote-ambiguous-customer"),
        case("trust-dmarc-fail"),
        case("trust-lookalike-domain"),
        case("po-other-partners-opportunity"),
    ] {
        deliver(&stack, &raw);
    }
    wait_for(&stack, DESK, "INBOX", 5, std::time::Duration::from_secs(10));
    run_once(&stack, &cfg);
    run_once(&stack, &cfg); // a second pass writes nothing more

    let partner = mailbox(&stack, PARTNER, "INBOX");
    let audit = journal_rows(&stack, "SELECT message_id, outcome, detail FROM audit");
    assert_eq!(
        partner.len(),
        1,
        "nothing more was sent: {:?}\n{audit:#?}",
        subjects(&partner)
    );
    let held = drafts(&stack);
    assert_eq!(
        held.len(),
        2,
        "one draft for each of the two held partner messages"
    );
    assert!(held
        .iter()
        .all(|h| h.flags.iter().any(|f| f.contains("Draft"))));
    let po_draft = held
        .iter()
        .find(|h| header(&h.raw, "Subject").contains("PO"))
        .expect("the PO's draft");
    let quote_draft = held
        .iter()
        .find(|h| !header(&h.raw, "Subject").contains("PO"))
        .expect("the quote request's draft");

    // The PO draft: threaded, the plan's people, the documents byte for byte, the note.
    let po = &po_draft.raw;
    assert!(header(po, "In-Reply-To").contains("case-en-purchase-order-direct-2@reseller.example"));
    assert_eq!(header(po, "To"), "alice@reseller.example");
    let cc = header(po, "Cc");
    for who in [
        "rep.one@example.com",
        "isr.one@example.com",
        "cam.east@example.com",
        "partnerorderops@example.com",
    ] {
        assert!(cc.contains(who), "{who} on cc: {cc}");
    }
    assert!(header(po, "Auto-Submitted").is_empty(), "a person sends it");
    assert_eq!(attachments(po), attachments(&second));
    let note = text_of(po);
    assert!(
        note.starts_with("[triage] A draft: nothing was sent."),
        "{note}"
    );
    assert!(
        note.contains("already got 1 automatic purchase_order answer"),
        "{note}"
    );

    // The ambiguous quote request: the partner only, the candidates and their people.
    let q = &quote_draft.raw;
    assert_eq!(header(q, "To"), "alice@reseller.example");
    let note = text_of(q);
    assert!(note.contains("The candidates:"), "{note}");
    assert!(note.matches("\n- ").count() >= 2, "{note}");
    assert!(note.contains("sales rep"), "{note}");

    // Nothing drafted for the spoofed, the unknown and the other partner's message.
    let reasons = human_reasons(&stack);
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    let drafted = journal_rows(
        &stack,
        "SELECT message_id FROM audit WHERE outcome = 'drafted'",
    );
    assert_eq!(drafted.len(), 2, "{drafted:?}");

    // A kill after the APPEND, before the journal heard of it: the draft is found, not
    // written again. A kill before the APPEND: it is written.
    let po_id = header(po, "Message-ID");
    let q_id = header(q, "Message-ID");
    let db = rusqlite::Connection::open(stack.dir.join("triage.sqlite")).unwrap();
    db.execute_batch(&format!(
        "UPDATE outbox SET state = 'drafting' WHERE message_id IN ('{po_id}', '{q_id}');
         UPDATE messages SET state = 1 WHERE message_id LIKE '%purchase-order-direct-2%'
             OR message_id LIKE '%quote-ambiguous-customer%';"
    ))
    .unwrap();
    drop(db);
    delete_draft(&stack, q_id.trim_matches(['<', '>']));
    run_once(&stack, &cfg);
    let held = drafts(&stack);
    assert_eq!(held.len(), 2, "exactly one draft each after the crashes");
    let ids: Vec<String> = held.iter().map(|h| header(&h.raw, "Message-ID")).collect();
    assert!(ids.contains(&po_id) && ids.contains(&q_id), "{ids:?}");

    // A person edits and sends the PO draft (SMTP, then a copy in Sent, then the draft
    // deleted, as mail clients do) and deletes the other.
    let po_raw = String::from_utf8(po.clone()).unwrap();
    let edited = po_raw.replacen(
        "[triage] A draft: nothing was sent.",
        "Dear Alice, approved by Pat.",
        1,
    );
    deliver_to(stack.port("SMTP"), DESK, PARTNER, edited.as_bytes());
    append(&stack, DESK, "Sent", edited.as_bytes());
    delete_draft(&stack, po_id.trim_matches(['<', '>']));
    delete_draft(&stack, q_id.trim_matches(['<', '>']));
    run_once(&stack, &cfg);

    let settled = journal_rows(
        &stack,
        "SELECT outcome, detail FROM audit WHERE outcome IN ('approved', 'discarded') ORDER BY outcome",
    );
    assert_eq!(settled.len(), 2, "{settled:?}");
    assert_eq!(settled[0][0], "approved");
    assert!(
        settled[0][1].contains("sent by partnersupport@example.com"),
        "{settled:?}"
    );
    assert!(settled[0][1].contains("text edited"), "{settled:?}");
    assert!(
        settled[0][1].contains("recipients as drafted"),
        "{settled:?}"
    );
    assert_eq!(settled[1][0], "discarded");
    let approved = triage_ok(
        &stack,
        &cfg,
        &["audit", "--outcome", "approved", "--format", "json"],
    );
    assert_eq!(approved.lines().count(), 1);

    // The summary shows which rules' drafts people approve.
    let summary = triage_ok(&stack, &cfg, &["audit", "summary"]);
    let line = |rule: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(rule))
            .unwrap_or_else(|| panic!("no {rule} in\n{summary}"))
            .to_string()
    };
    assert!(summary.contains("drafts by rule"), "{summary}");
    assert!(
        line("purchase-order ").trim_end().ends_with("100%"),
        "{summary}"
    );
    assert!(
        line("quote-request ").trim_end().ends_with(" 0%"),
        "{summary}"
    );
}

/// SIGKILL at arbitrary points while a backlog of held messages is drafted: every held
/// message ends with exactly one draft, and nothing more is sent.
#[test]
fn killed_while_drafting_each_held_message_has_exactly_one_draft() {
    let Some(stack) = Stack::start("drafts-kill") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    wiring.limits = "  per_sender: {answers: 1, hours: 24}\n".into();
    let cfg = config(&stack, &wiring);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("drafts: {when_held: true}\n");
    std::fs::write(&cfg, text).unwrap();
    let total = 60;
    let backlog: Vec<Vec<u8>> = (0..total)
        .map(|n| numbered_case("en-purchase-order-direct", n))
        .collect();
    append_all(&stack, DESK, "INBOX", &backlog);
    // Shadow mode decides and records, and writes no draft. Going live afterwards must
    // decide anew: the shadow plans' brakes counted no answers (all 60 were "auto").
    triage_ok(&stack, &cfg, &["run", "--once", "--shadow"]);
    assert!(drafts(&stack).is_empty(), "no draft in shadow mode");
    assert!(mailbox(&stack, PARTNER, "INBOX").is_empty());

    let done =
        || journal_rows(&stack, "SELECT COUNT(*) FROM messages WHERE state >= 4")[0][0].clone();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    let mut kills = 0;
    for round in 0..200 {
        if stack.dir.join("triage.sqlite").exists() && done() == total.to_string() {
            break;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 30 + (seed >> 33) % 270;
        let mut service = start_service(&stack, &cfg, &format!("kill-{round}.log"));
        std::thread::sleep(std::time::Duration::from_millis(ms));
        service.kill().unwrap();
        service.wait().unwrap();
        kills += 1;
    }
    run_once(&stack, &cfg);
    println!("kills={kills}");
    assert_eq!(done(), total.to_string());
    assert_eq!(
        mailbox(&stack, PARTNER, "INBOX").len(),
        1,
        "one answer, the rest held"
    );
    let held = drafts(&stack);
    let mut answering: Vec<String> = held.iter().map(|h| header(&h.raw, "In-Reply-To")).collect();
    answering.sort();
    answering.dedup();
    assert_eq!(
        held.len(),
        total - 1,
        "one draft per held message, none twice"
    );
    assert_eq!(answering.len(), total - 1, "{answering:?}");
}
