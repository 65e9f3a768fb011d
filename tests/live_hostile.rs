//! The brakes on automatic answers, against a real Dovecot and Postfix: one answer per
//! sender and category per day, no answer to an address our mail bounced from (a real
//! Postfix DSN), and the circuit breaker that stops all sending until an operator acts.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use std::time::Duration;

use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fixture numbered for uniqueness and sent as somebody else of the same domain.
fn from(name: &str, n: usize, sender: &str) -> Vec<u8> {
    String::from_utf8(numbered_case(name, n))
        .unwrap()
        .replace(PARTNER, sender)
        .into_bytes()
}

fn id(name: &str, n: usize) -> String {
    format!("case-{name}-{n}@reseller.example")
}

#[test]
fn one_answer_per_sender_and_day_and_none_to_an_address_that_bounced() {
    let Some(stack) = Stack::start("brakes") else {
        return;
    };
    // Accept unknown users at RCPT, so that our reply to one bounces with a real DSN.
    stack.postconf("smtpd_reject_unlisted_recipient = no");
    // Anyone can write a DSN, so one counts only when the receiving server verified its
    // sender. Here Postfix writes the DSN itself; stand in for the receiving server's
    // Authentication-Results on its own bounces (and only on those).
    let checks = stack.dir.join("stack/postfix/etc/bounce_auth");
    std::fs::write(
        &checks,
        "/^Subject: Undelivered Mail Returned to Sender/ PREPEND Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\n",
    )
    .unwrap();
    stack.postconf("internal_mail_filter_classes = bounce");
    stack.postconf(&format!("header_checks = regexp:{}", checks.display()));
    let cfg = config(
        &stack,
        &Wiring {
            limits: String::new(), // the shipped defaults: 1 answer per 24 h
            ..Wiring::plain(&stack)
        },
    );
    let quote = "en-quote-request-ops-copied";
    let status = "en-order-status-ops-copied";
    let gone = "carol@reseller.example"; // not a mailbox on the stack
                                         // One at a time, so that UIDs follow this order (the first quote is the answered one).
    for (n, raw) in [
        numbered_case(quote, 1),
        numbered_case(quote, 2),
        from(quote, 3, gone),
    ]
    .iter()
    .enumerate()
    {
        deliver(&stack, raw);
        wait_for(&stack, DESK, "INBOX", n + 1, secs(10));
    }
    run_once(&stack, &cfg);

    // The reply to carol bounced: Postfix's DSN arrives in the desk's inbox.
    let dsn_arrived = || {
        mailbox(&stack, DESK, "INBOX")
            .iter()
            .any(|r| String::from_utf8_lossy(r).contains("multipart/report"))
    };
    let deadline = std::time::Instant::now() + secs(20);
    while !dsn_arrived() {
        assert!(
            std::time::Instant::now() < deadline,
            "no DSN for the reply to {gone}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    deliver(&stack, &from(status, 4, gone));
    wait_for(&stack, DESK, "INBOX", 3, secs(10));
    run_once(&stack, &cfg);

    assert_eq!(
        replied_to(&stack),
        [id(quote, 1)],
        "alice gets one automatic quote answer"
    );
    let reasons = human_reasons(&stack);
    let second = &reasons[&id(quote, 2)];
    assert!(
        second.contains(
            "alice@reseller.example already got 1 automatic quote_request answer in the last 24 h"
        ),
        "{second}"
    );
    let bounce = reasons
        .iter()
        .find(|(k, _)| k.ends_with("@mail.example.com"))
        .map(|(_, v)| v.clone())
        .expect("the DSN is left for a human");
    assert!(
        bounce.contains(&format!("delivery failed for {gone}")),
        "{bounce}"
    );
    let after = &reasons[&id(status, 4)];
    assert!(
        after.contains(&format!("our earlier mail to {gone} bounced")),
        "{after}"
    );
    // What was held back stays visible: the second quote, the DSN and carol's question.
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 3);
    assert!(inbox.iter().all(|h| h.flags.iter().any(|f| f == "Flagged")));
    // Exactly the two replies that were sent are recorded as sent, in Sent.
    assert_eq!(mailbox(&stack, DESK, "Sent").len(), 2);
    let blocked = journal_rows(&stack, "SELECT address FROM bounced");
    assert_eq!(blocked, [[gone.to_string()]]);
}

#[test]
fn the_circuit_breaker_stops_all_sending_until_an_operator_resets_it() {
    let Some(stack) = Stack::start("breaker") else {
        return;
    };
    let cfg = config(
        &stack,
        &Wiring {
            limits: "  per_sender: {answers: 100, hours: 1}\n  circuit_breaker: {answers: 3, minutes: 60}\n".into(),
            ..Wiring::plain(&stack)
        },
    );
    // One reply each for the first two; the complete PoE means a reply and a forward
    // (4 > 3): it trips the breaker, and the last is held by the open breaker.
    let order = [
        "en-purchase-order-direct",
        "en-quote-request-ops-copied",
        "poe-complete-en",
        "poe-missing-customer-en",
    ];
    // One at a time: Postfix may hand a burst to Dovecot in another order, and the
    // order (UIDs) decides which message trips the breaker.
    for (n, name) in order.iter().enumerate() {
        deliver(&stack, &numbered_case(name, 1));
        wait_for(&stack, DESK, "INBOX", n + 1, secs(10));
    }
    let out = run_once(&stack, &cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("CIRCUIT BREAKER OPEN"), "{log}");
    assert_eq!(
        replied_to(&stack),
        [id(order[0], 1), id(order[1], 1)],
        "sending stopped at the limit"
    );
    let status = triage(&stack, &cfg, &["breaker"]).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.starts_with("open since "), "{status}");

    // Still open for new mail: decided and recorded, nothing sent.
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
    wait_for(&stack, DESK, "INBOX", 3, secs(10));
    run_once(&stack, &cfg);
    assert_eq!(replied_to(&stack).len(), 2);
    let reasons = human_reasons(&stack);
    assert!(
        reasons[&id(order[2], 1)].contains("circuit breaker opened"),
        "{reasons:?}"
    );
    for held in [id(order[3], 1), id("en-quote-request-ops-copied", 2)] {
        assert!(
            reasons[&held].contains("the circuit breaker is open"),
            "{held}: {reasons:?}"
        );
    }

    // The operator closes it; the next message is answered again.
    let reset = triage(&stack, &cfg, &["breaker", "reset"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&reset.stdout).contains("circuit breaker closed"),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 3));
    wait_for(&stack, DESK, "INBOX", 4, secs(10));
    run_once(&stack, &cfg);
    wait_for(&stack, PARTNER, "INBOX", 3, secs(10));
    assert_eq!(
        replied_to(&stack),
        [
            id(order[0], 1),
            id(order[1], 1),
            id("en-quote-request-ops-copied", 3)
        ]
    );
    // Everything held is still in the inbox, flagged for a human.
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 3);
    assert!(inbox.iter().all(|h| h.flags.iter().any(|f| f == "Flagged")));
}

#[test]
fn broken_mail_is_left_for_a_human_and_the_service_carries_on() {
    let Some(stack) = Stack::start("broken") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    let good = "en-quote-request-direct";
    let id_of = |n: usize| format!("<case-{good}-{n}@reseller.example>");
    // Between two good messages, every kind of broken one, each with its own Message-ID,
    // and one more that reuses the first good message's Message-ID.
    let mut backlog = vec![numbered_case(good, 0)];
    let mut expected = Vec::new();
    for (n, (what, raw, words)) in broken::cases().into_iter().enumerate() {
        if raw.is_empty() {
            continue; // IMAP cannot hold an empty message; the decision core test has it
        }
        let raw = String::from_utf8_lossy(&raw).replacen(
            &format!("<case-{good}@reseller.example>"),
            &id_of(n + 1),
            1,
        );
        backlog.push(raw.into_bytes());
        // IMAP cannot carry NUL: Dovecot serves those bytes as 0x80, undecodable text.
        let words = if what == "NUL bytes" {
            "cannot decode"
        } else {
            words
        };
        expected.push((what, id_of(n + 1), words));
    }
    let mut reused = String::from_utf8(numbered_case(good, 0))
        .unwrap()
        .replace("\r\n", "\n");
    reused = reused.replacen(
        "\n\n",
        "\n\nA different message under the same Message-ID.\n",
        1,
    );
    backlog.push(reused.into_bytes());
    backlog.push(numbered_case(good, 99));
    append_all(&stack, DESK, "INBOX", &backlog);

    let out = run_once(&stack, &cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("panicked"), "{log}");
    wait_for(&stack, PARTNER, "INBOX", 2, secs(10));
    assert_eq!(replied_to(&stack), [id(good, 0), id(good, 99)]);

    let reasons = human_reasons(&stack);
    for (what, id, words) in &expected {
        let id = id.trim_matches(['<', '>']);
        let reason = reasons
            .get(id)
            .unwrap_or_else(|| panic!("{what}: no audit record; {reasons:?}"));
        assert!(reason.contains(words), "{what}: {reason}");
    }
    let reuse = journal_rows(
        &stack,
        &format!(
            "SELECT detail FROM audit WHERE message_id = '{}' AND outcome = 'left for human'",
            id(good, 0)
        ),
    );
    assert!(
        reuse.len() == 1 && reuse[0][0].contains("was handled before, with a different size"),
        "{reuse:?}"
    );
    // All of them still in the inbox, flagged; the two good ones filed.
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), expected.len() + 1);
    assert!(inbox.iter().all(|h| h.flags.iter().any(|f| f == "Flagged")));
    assert_eq!(mailbox(&stack, DESK, "Triage/Orders").len(), 2);
}

fn wait_for_log(stack: &Stack, log: &str, what: &str, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(stack.dir.join(log)).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_rules_file_broken_while_running_leaves_the_last_good_rules_live() {
    let Some(stack) = Stack::start("reload") else {
        return;
    };
    // Rules and templates copied where this test may break and edit them.
    let rules = stack.dir.join("rules");
    let templates = stack.dir.join("templates");
    copy_dir(&repo().join("rules"), &rules);
    copy_dir(&repo().join("response-templates"), &templates);
    let port = free_port();
    let mut wiring = Wiring::plain(&stack);
    wiring.service = format!(", http: \"127.0.0.1:{port}\"");
    let cfg = config(&stack, &wiring);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let root = repo();
    let text = text
        .replace(
            &format!("rules: {}/rules", root.display()),
            &format!("rules: {}", rules.display()),
        )
        .replace(
            &format!("templates: {}/response-templates", root.display()),
            &format!("templates: {}", templates.display()),
        );
    std::fs::write(&cfg, text).unwrap();
    let mut service = start_service(&stack, &cfg, "service.log");
    std::thread::sleep(Duration::from_millis(500));

    // An editor saves a broken procedures file (write to a temp file, rename over).
    let procedures = rules.join("10-procedures.yaml");
    let good = std::fs::read_to_string(&procedures).unwrap();
    let broken = good.replacen("rules:", "rules:\n  - name: [unclosed\n", 1);
    let tmp = rules.join(".10-procedures.yaml.swp");
    std::fs::write(&tmp, &broken).unwrap();
    std::fs::rename(&tmp, &procedures).unwrap();
    let log = wait_for_log(&stack, "service.log", "RELOAD FAILED", secs(15));
    let at = format!("{}:", procedures.display());
    let line = log.lines().find(|l| l.contains(&at)).unwrap_or_default();
    let position: Vec<&str> = line
        .trim_start()
        .strip_prefix(&at)
        .unwrap_or("")
        .splitn(3, ':')
        .collect();
    assert!(
        position.len() == 3
            && position[0].parse::<u32>().is_ok()
            && position[1].parse::<u32>().is_ok(),
        "the log names file:line:col: {line:?}\n{log}"
    );
    assert!(
        log.contains("still running on the last good rules"),
        "{log}"
    );
    let metrics = http_get(port, "/metrics").1;
    assert!(
        metrics.contains("triage_reload_failures_total 1"),
        "counted in a metric: {metrics}"
    );

    // Still answering, with the last good rules.
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(15));
    let check = triage(&stack, &cfg, &["check"]).output().unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:{}:{}",
            procedures.display(),
            position[0],
            position[1]
        )),
        "{err}"
    );

    // Fixed, and a template changed: the next answer uses the new text.
    std::fs::write(&procedures, &good).unwrap();
    let template = templates.join("quote_request_ops_copied.txt");
    let t = std::fs::read_to_string(&template).unwrap();
    std::fs::write(
        &template,
        t.replace(
            "Thank you for your quote request.",
            "Thank you for your quote request (reloaded).",
        ),
    )
    .unwrap();
    wait_for_log(&stack, "service.log", "reloaded (files changed)", secs(15));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
    wait_for(&stack, PARTNER, "INBOX", 2, secs(15));
    let bodies: Vec<String> = mailbox(&stack, PARTNER, "INBOX")
        .iter()
        .map(|r| String::from_utf8_lossy(r).to_string())
        .collect();
    assert_eq!(
        bodies.iter().filter(|b| b.contains("(reloaded)")).count(),
        1,
        "only the second answer has the new text"
    );

    signal(&service, "HUP");
    wait_for_log(&stack, "service.log", "reloaded (SIGHUP)", secs(15));
    signal(&service, "TERM");
    let status = wait_exit(&mut service, secs(20));
    assert!(status.success(), "SIGTERM: exit 0, got {status}");
}

#[test]
fn mail_over_the_size_limit_is_left_for_a_human_under_its_own_message_id() {
    let Some(stack) = Stack::start("oversized") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    wiring.limits.push_str("  max_message_bytes: 4000\n");
    let cfg = config(&stack, &wiring);
    let good = "en-quote-request-direct";
    // The same quote request padded past the limit, under a Message-ID of its own.
    let big = String::from_utf8(numbered_case(good, 1))
        .unwrap()
        .replace("\r\n", "\n")
        .replacen("\n\n", &format!("\n\n{}\n", "padding ".repeat(800)), 1);
    append_all(
        &stack,
        DESK,
        "INBOX",
        &[big.into_bytes(), numbered_case(good, 2)],
    );

    run_once(&stack, &cfg);
    wait_for(&stack, PARTNER, "INBOX", 1, secs(10));
    assert_eq!(
        replied_to(&stack),
        [id(good, 2)],
        "only the small one answered"
    );
    // Never downloaded, its Message-ID read from the header field alone.
    let reasons = human_reasons(&stack);
    let reason = reasons
        .get(&id(good, 1))
        .unwrap_or_else(|| panic!("{reasons:?}"));
    assert!(reason.contains("over the limit of 4000 bytes"), "{reason}");
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].flags.iter().any(|f| f == "Flagged"));
}
