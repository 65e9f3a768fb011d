//! The shipped config, unchanged, on a server shaped as Cyrus IMAP and Courier-IMAP are by
//! default: personal namespace `INBOX.` with separator `.`, no MOVE, no SPECIAL-USE (the
//! local Dovecot configured that way: tools/mailstack MAILSTACK_PREFIX and friends). And a
//! folder made unwritable while the service runs: that message goes to a person with the
//! server's words, the others go through.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use std::time::Duration;

use support::cyrus::Cyrus;
use support::*;

/// Cyrus/Courier defaults: `INBOX.` namespace, `.` separator, Sent not marked, no MOVE.
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `triage check --connect` on an `INBOX.` server without MOVE: what it shows.
fn check_connect(stack: &Stack, cfg: &std::path::Path) -> String {
    let check = triage(stack, cfg, &["check", "--connect"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&check.stdout).into_owned();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{shown}{err}");
    assert!(
        shown.contains("personal namespace: \"INBOX.\", separator '.'"),
        "{shown}"
    );
    assert!(shown.contains("no MOVE: filing is COPY"), "{shown}");
    shown
}

/// Each answerable case answered exactly once, seen in the partner's mailbox.
fn answered_once(stack: &Stack) {
    let mut expected: Vec<String> = ANSWERED
        .iter()
        .map(|n| format!("case-{n}@reseller.example"))
        .collect();
    expected.sort();
    wait_for(stack, PARTNER, "INBOX", expected.len(), secs(20));
    assert_eq!(replied_to(stack), expected, "each answered once");
}

#[test]
fn the_shipped_config_works_under_an_inbox_dot_namespace_without_move() {
    let Some(stack) = Stack::start_shaped("shaped", &COURIER_SHAPED) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    for name in ANSWERED.iter().chain(&NOT_ANSWERED) {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 6, secs(10));
    // What an operator sees before going live: what was discovered there.
    let shown = check_connect(&stack, &cfg);
    assert!(shown.contains("sent: INBOX.Sent"), "{shown}");
    assert!(
        shown.contains("quote_request: INBOX.Triage.Orders"),
        "{shown}"
    );

    let out = run_once(&stack, &cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("namespace \"INBOX.\""), "{log}");
    run_once(&stack, &cfg);

    answered_once(&stack);
    assert_eq!(
        mailbox(&stack, DESK, "INBOX.Sent").len(),
        5,
        "copies in the server's Sent"
    );
    assert_eq!(mailbox(&stack, DESK, "INBOX.Triage.Orders").len(), 2);
    assert_eq!(mailbox(&stack, DESK, "INBOX.Triage.PoE").len(), 2);
    // Without MOVE: COPY, \Deleted and UID EXPUNGE of just those (UIDPLUS).
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 2, "only the two left for a human stay");
    assert!(inbox.iter().all(|h| h.flags.iter().any(|f| f == "Flagged")));
}

#[test]
fn a_folder_made_unwritable_mid_run_leaves_one_message_for_a_human_and_lets_the_rest_through() {
    let Some(stack) = Stack::start_shaped("unwritable", &COURIER_SHAPED) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    // The first start creates every filing folder.
    run_once(&stack, &cfg);

    // The PoE folder refuses new mail from now on (its Maildir is read-only for the
    // server's mail user); the orders folder still takes it.
    make_read_only(&stack, ".Triage.PoE");
    for raw in [
        numbered_case("poe-complete-en", 2),
        numbered_case("en-purchase-order-direct", 3),
    ] {
        deliver(&stack, &raw);
    }
    wait_for(&stack, DESK, "INBOX", 2, secs(10));
    run_once(&stack, &cfg);

    let reasons = human_reasons(&stack);
    let poe = reasons
        .iter()
        .find(|(k, _)| k.contains("poe-complete-en"))
        .map(|(_, v)| v.clone())
        .expect("the PoE that could not be filed is left for a human");
    assert!(
        poe.contains("cannot file it to INBOX.Triage.PoE") && poe.contains("the server said"),
        "{poe}"
    );
    assert_eq!(
        mailbox(&stack, DESK, "INBOX.Triage.Orders").len(),
        1,
        "the PO went through"
    );
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 1, "the PoE stays visible");
    assert!(inbox[0].flags.iter().any(|f| f == "Flagged"));

    // Now Sent refuses copies: the next PO is answered, its documents kept, and the
    // message goes to a person because the copy of the answer is missing.
    make_read_only(&stack, ".Sent");
    let kept = stack.dir.join("documents/opportunity/0065e00000AbCdEAAX");
    std::fs::remove_dir_all(&kept).unwrap();
    deliver(&stack, &numbered_case("en-purchase-order-direct", 4));
    wait_for(&stack, DESK, "INBOX", 2, secs(10));
    run_once(&stack, &cfg);
    let reasons = human_reasons(&stack);
    let po = reasons
        .iter()
        .find(|(k, _)| k.contains("en-purchase-order-direct-4"))
        .map(|(_, v)| v.clone())
        .expect("the PO whose copy could not be saved is left for a human");
    assert!(
        po.contains("went out, but its copy could not be saved"),
        "{po}"
    );
    let answered = in_reply_tos(&mailbox(&stack, PARTNER, "INBOX"));
    assert!(
        answered
            .iter()
            .any(|id| id.contains("en-purchase-order-direct-4")),
        "{answered:?}"
    );
    assert!(
        kept.join("PO-4500012345.pdf").is_file(),
        "the PO is kept for the CRM"
    );
}

/// Makes one of the desk's Maildir folders read-only for the server's mail user.
fn make_read_only(stack: &Stack, maildir_folder: &str) {
    let maildir = stack
        .dir
        .join("stack/mail/example.com/partnersupport/Maildir")
        .join(maildir_folder);
    assert!(maildir.is_dir(), "{}", maildir.display());
    for sub in ["", "cur", "new", "tmp"] {
        let ok = std::process::Command::new("chmod")
            .arg("0555")
            .arg(maildir.join(sub))
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn a_filing_folder_the_server_refuses_stops_the_start_with_its_words() {
    let Some(stack) = Stack::start_shaped("refused", &COURIER_SHAPED) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("human: null"));
    // Longer than a file name may be on the server's disk: CREATE is refused.
    let long = "Review".repeat(50);
    std::fs::write(
        &cfg,
        text.replace("human: null", &format!("human: \"Triage/{long}\"")),
    )
    .unwrap();
    deliver(&stack, &case("en-quote-request-direct"));
    wait_for(&stack, DESK, "INBOX", 1, secs(10));
    let out = triage(&stack, &cfg, &["run", "--once"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("INBOX.Triage.{long}")) && err.contains("the server said"),
        "{err}"
    );
    // Nothing went out before the check failed.
    assert!(mailbox(&stack, PARTNER, "INBOX").is_empty());
}

#[test]
fn a_real_cyrus_imap_without_move_with_the_shipped_config_answers_files_and_never_twice() {
    let Some(stack) = Stack::start("cyrus") else {
        return;
    };
    // MOVE withheld (suppress_capabilities): filing is COPY, keyword, UID EXPUNGE.
    let cyrus = Cyrus::start_suppressing(&stack, "MOVE");
    let cfg = config(&stack, &cyrus.wiring(&stack));
    for name in ANSWERED.iter().chain(&NOT_ANSWERED) {
        deliver(&stack, &case(name));
    }
    cyrus.wait_for("INBOX", 6);
    check_connect(&stack, &cfg);
    run_once(&stack, &cfg);
    run_once(&stack, &cfg);

    answered_once(&stack);
    assert_eq!(
        cyrus.folder("INBOX.Sent").len(),
        5,
        "copies in Cyrus's Sent"
    );
    assert_eq!(cyrus.folder("INBOX.Triage.Orders").len(), 2);
    assert_eq!(cyrus.folder("INBOX.Triage.PoE").len(), 2);
    let inbox = cyrus.folder("INBOX");
    assert_eq!(inbox.len(), 2, "only the two left for a human stay");
    assert!(inbox.iter().all(|h| h.flags.iter().any(|f| f == "Flagged")));
}

#[test]
fn without_uidplus_our_own_copy_stays_marked_deleted_and_is_not_fetched_again() {
    // Dovecot offering neither UIDPLUS nor MOVE: nothing can be expunged on its own, so
    // the filed original and our own copy coming back both stay, marked \Deleted.
    let shaped = [(
        "MAILSTACK_IMAP_CAPABILITY",
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE CHILDREN LITERAL+",
    )];
    let Some(stack) = Stack::start_shaped("no-uidplus", &shaped) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    deliver(&stack, &numbered_case("en-quote-request-direct", 1));
    wait_for(&stack, DESK, "INBOX", 1, secs(10));
    let first = run_once(&stack, &cfg);
    let log = String::from_utf8_lossy(&first.stderr);
    wait_for(&stack, PARTNER, "INBOX", 1, secs(10));
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 2, "the original and our own copy: {log}");
    assert!(
        inbox.iter().all(|h| h.flags.iter().any(|f| f == "Deleted")),
        "{:?}",
        inbox.iter().map(|h| &h.flags).collect::<Vec<_>>()
    );

    // The next run knows both by UID: nothing is fetched, nothing is taken for new.
    let second = triage(&stack, &cfg, &["run", "--once"])
        .env("TRIAGE_LOG", "triage=debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("0 to do"), "{log}");
    assert!(!log.contains("own copy of"), "{log}");
    assert_eq!(replied_to(&stack).len(), 1, "answered once");
}
