//! Faults against a real Dovecot + Postfix on loopback: TLS both ways, servers that are
//! down or restart, a recipient the SMTP server refuses, a mailbox rebuilt under a new
//! UIDVALIDITY, and the service killed with SIGKILL at arbitrary points in a backlog.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::cyrus::Cyrus;
use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// An `imap:` or `smtp:` section for one of the stack's TLS ports, logging in as the
/// desk, trusting the stack's CA when `ca` (the system store otherwise).
fn over_tls(stack: &Stack, port: &str, tls: &str, ca: bool) -> String {
    let ca = if ca {
        format!("ca_file: {}, ", stack.ca().display())
    } else {
        String::new()
    };
    format!(
        "{{host: 127.0.0.1, port: {}, tls: {tls}, {ca}username: {DESK}, password: {{env: LIVE_PASSWORD}}, timeout_seconds: 10}}",
        stack.port(port)
    )
}

#[test]
fn implicit_tls_and_starttls_with_the_configured_ca() {
    let Some(stack) = Stack::start("tls") else {
        return;
    };
    // IMAPS (993-style) in, submission with STARTTLS and AUTH (587-style) out.
    let wiring = Wiring {
        imap: over_tls(&stack, "IMAPS", "implicit", true),
        smtp: over_tls(&stack, "SUBMISSION", "starttls", true),
        ..Wiring::plain(&stack)
    };
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, DESK, "INBOX", 1, secs(10));
    run_once(&stack, &config(&stack, &wiring));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(10));

    // STARTTLS on the IMAP port in, implicit TLS (465-style) out.
    let wiring = Wiring {
        imap: over_tls(&stack, "IMAP", "starttls", true),
        smtp: over_tls(&stack, "SMTPS", "implicit", true),
        ..Wiring::plain(&stack)
    };
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
    wait_for(&stack, DESK, "INBOX", 1, secs(10));
    run_once(&stack, &config(&stack, &wiring));
    wait_for(&stack, PARTNER, "INBOX", 2, secs(10));
    let got = replied_to(&stack);
    assert_eq!(
        got,
        [
            "case-en-quote-request-ops-copied-1@reseller.example",
            "case-en-quote-request-ops-copied-2@reseller.example"
        ]
    );

    // Without the stack's CA the certificate is not trusted: a clear error, exit 1.
    let wiring = Wiring {
        imap: over_tls(&stack, "IMAPS", "implicit", false),
        ..Wiring::plain(&stack)
    };
    let out = triage(&stack, &config(&stack, &wiring), &["run", "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("IMAP server 127.0.0.1:{}", stack.port("IMAPS")))
            && err.contains("certificate"),
        "{err}"
    );
}

#[test]
fn servers_unreachable_at_start_are_a_clear_error() {
    let Some(stack) = Stack::start("down") else {
        return;
    };
    let closed = free_port();
    let mut wiring = Wiring::plain(&stack);
    wiring.imap = wiring
        .imap
        .replace(&stack.port("IMAP").to_string(), &closed.to_string());
    let out = triage(&stack, &config(&stack, &wiring), &["run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("IMAP server 127.0.0.1:{closed}: connect")),
        "{err}"
    );

    let mut wiring = Wiring::plain(&stack);
    wiring.smtp = wiring
        .smtp
        .replace(&stack.port("SMTP").to_string(), &closed.to_string());
    let out = triage(&stack, &config(&stack, &wiring), &["run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("SMTP server 127.0.0.1:{closed} is not usable")),
        "{err}"
    );
    assert!(
        !err.contains(stack.password()),
        "the password must never be logged"
    );
}

#[test]
fn a_refused_recipient_leaves_the_message_for_a_human_and_nothing_is_sent_twice() {
    // alice is not a user here, so Postfix refuses her at RCPT (reseller.example is
    // still a domain it serves, through bob).
    let users = EVERYONE.replace("alice@reseller.example", "bob@reseller.example");
    let Some(stack) = Stack::start_with_users("refused", &users) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    // Forward to the channel manager first, then the reply to alice: the first goes out.
    deliver(&stack, &case("poe-complete-en"));
    wait_for(&stack, DESK, "INBOX", 1, secs(10));
    run_once(&stack, &cfg);
    run_once(&stack, &cfg);

    wait_for(&stack, "cam.east@example.com", "INBOX", 1, secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        subjects(&mailbox(&stack, "cam.east@example.com", "INBOX")),
        ["Fwd: PoE - Acme Corp services"],
        "the forward went out once and was not sent again"
    );
    assert_eq!(mailbox(&stack, DESK, "Sent").len(), 1);
    let inbox = folder(&stack, DESK, "INBOX");
    assert_eq!(inbox.len(), 1, "the original stays in the inbox");
    assert!(
        inbox[0].flags.iter().any(|f| f.contains("Flagged")),
        "and is flagged for a human: {:?}",
        inbox[0].flags
    );
    let reasons = journal_rows(
        &stack,
        "SELECT detail FROM audit WHERE outcome = 'left for human'",
    );
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0][0].contains("SMTP refused the reply to alice@reseller.example")
            && reasons[0][0].contains("550"),
        "the server's answer is recorded: {reasons:?}"
    );
}

#[test]
fn reconnects_after_the_imap_server_restarts_and_idle_brings_new_mail() {
    let Some(stack) = Stack::start("restart") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    // Polling so slow that an answer within seconds can only come from IDLE.
    wiring.imap = wiring.imap.replace("poll_seconds: 1", "poll_seconds: 600");
    let cfg = config(&stack, &wiring);
    let mut service = start_service(&stack, &cfg, "service.log");
    std::thread::sleep(Duration::from_millis(500));

    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(15));

    // Mail that arrives while Dovecot is down waits in Postfix's queue (LMTP refused)
    // and is delivered after the restart; mail after it comes through IDLE.
    stack.restart_dovecot(|| {
        deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
        std::thread::sleep(secs(1));
    });
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 3));
    wait_for(&stack, PARTNER, "INBOX", 3, secs(40));

    signal(&service, "TERM");
    let status = wait_exit(&mut service, secs(20));
    let log = std::fs::read_to_string(stack.dir.join("service.log")).unwrap();
    assert!(status.success(), "SIGTERM: exit 0, got {status}\n{log}");
    assert!(log.contains("reconnecting to 127.0.0.1"), "{log}");
    assert!(log.contains("reconnected"), "{log}");
    assert!(log.contains("logged out"), "{log}");
    assert!(!log.contains("polling every"), "IDLE was used: {log}");
    let got = replied_to(&stack);
    let reconnects = log.matches("reconnected to").count();
    println!(
        "fault report, Dovecot restart: messages=3 answered={} reconnects={reconnects} skipped={}",
        got.len(),
        3 - got.len().min(3)
    );
    assert_eq!(
        got,
        [
            "case-en-quote-request-ops-copied-1@reseller.example",
            "case-en-quote-request-ops-copied-2@reseller.example",
            "case-en-quote-request-ops-copied-3@reseller.example"
        ]
    );
}

#[test]
fn postfix_down_for_a_while_nothing_is_recorded_as_sent_and_sending_resumes() {
    let Some(stack) = Stack::start("postfix-down") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    let mut service = start_service(&stack, &cfg, "service.log");
    std::thread::sleep(Duration::from_millis(500));

    stack.postfix(&["stop"]);
    let backlog: Vec<Vec<u8>> = ANSWERED.iter().map(|n| numbered_case(n, 1)).collect();
    append_all(&stack, DESK, "INBOX", &backlog);
    std::thread::sleep(secs(4));
    let sent = |stack: &Stack| {
        journal_rows(
            stack,
            "SELECT COUNT(*) FROM outbox WHERE state IN ('sent', 'appending', 'received', 'filed')",
        )[0][0]
            .clone()
    };
    let sent_while_down = sent(&stack);
    assert_eq!(
        sent_while_down, "0",
        "nothing recorded as sent while Postfix is down"
    );
    let audited = journal_rows(
        &stack,
        "SELECT COUNT(*) FROM audit WHERE outcome IN ('replied', 'forwarded')",
    );
    assert_eq!(audited[0][0], "0");
    let log = std::fs::read_to_string(stack.dir.join("service.log")).unwrap();
    assert!(log.contains("reconnecting to 127.0.0.1"), "{log}");

    stack.postfix(&["start"]);
    let mut expected: Vec<String> = ANSWERED
        .iter()
        .map(|n| format!("case-{n}-1@reseller.example"))
        .collect();
    expected.sort();
    wait_for(&stack, PARTNER, "INBOX", expected.len(), secs(60));
    std::thread::sleep(secs(1));
    assert_eq!(
        replied_to(&stack),
        expected,
        "each answered once, after all"
    );
    let ids = message_ids(&mailbox(&stack, DESK, "Sent"));
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    println!(
        "fault report, Postfix down: messages={} sent={} duplicates={} recorded_as_sent_while_down={sent_while_down}",
        backlog.len(),
        ids.len(),
        ids.len() - unique.len()
    );
    assert_eq!(
        (ids.len(), unique.len()),
        (5, 5),
        "five messages sent, each once"
    );
    assert_eq!(sent(&stack), "5");

    signal(&service, "TERM");
    let status = wait_exit(&mut service, secs(20));
    assert!(status.success(), "SIGTERM: exit 0, got {status}");
}

#[test]
fn a_new_uidvalidity_neither_answers_again_nor_skips_new_mail() {
    let Some(stack) = Stack::start("uidvalidity") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    deliver(&stack, &case("en-quote-request-ops-copied"));
    deliver(&stack, &case("quote-ambiguous-customer"));
    wait_for(&stack, DESK, "INBOX", 2, secs(10));
    run_once(&stack, &cfg);
    assert_eq!(mailbox(&stack, PARTNER, "INBOX").len(), 1);

    // The mailbox is rebuilt: Dovecot's UID list and indexes are gone, so every message
    // gets a new UID under a new UIDVALIDITY.
    let maildir = stack.maildir(DESK);
    stack.restart_dovecot(|| {
        for entry in std::fs::read_dir(&maildir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name == "dovecot-uidlist" || name.starts_with("dovecot.index") {
                std::fs::remove_file(&path).unwrap();
            }
        }
        // UIDVALIDITY is a timestamp: make sure the new one differs.
        std::thread::sleep(Duration::from_millis(1100));
    });
    // ... and the answered original is restored into the inbox from a backup.
    let filed = mailbox(&stack, DESK, "Triage/Orders");
    assert_eq!(filed.len(), 1);
    append(&stack, DESK, "INBOX", &filed[0]);
    deliver(&stack, &case("en-purchase-order-direct"));
    wait_for(&stack, DESK, "INBOX", 3, secs(10));

    let out = run_once(&stack, &cfg);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("UIDVALIDITY changed"), "{log}");
    wait_for(&stack, PARTNER, "INBOX", 2, secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let got = replied_to(&stack);
    assert_eq!(
        got,
        [
            "case-en-purchase-order-direct@reseller.example",
            "case-en-quote-request-ops-copied@reseller.example"
        ],
        "the new message answered, the old ones not again"
    );
    let human = journal_rows(
        &stack,
        "SELECT COUNT(*) FROM audit WHERE outcome = 'left for human'",
    );
    assert_eq!(human[0][0], "1", "the human case is not recorded twice");
}

#[test]
fn killed_at_arbitrary_points_no_message_is_answered_twice_or_left_unhandled() {
    let Some(stack) = Stack::start("kill") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    kill_until_done(
        &stack,
        &Desk::Dovecot(&stack),
        &cfg,
        ["Sent", "Triage/Orders", "Triage/PoE"],
    );
}

/// The same with the desk's mailbox on a real Cyrus IMAP 3.6 (`INBOX.` namespace).
#[test]
fn killed_at_arbitrary_points_on_a_real_cyrus_imap() {
    let Some(stack) = Stack::start("kill-cyrus") else {
        return;
    };
    let cyrus = Cyrus::start(&stack);
    let cfg = config(&stack, &cyrus.wiring(&stack));
    kill_until_done(
        &stack,
        &Desk::Cyrus(&cyrus),
        &cfg,
        ["INBOX.Sent", "INBOX.Triage.Orders", "INBOX.Triage.PoE"],
    );
}

/// A backlog of 2,500 messages under the sort-only rules: with `imap.connections: 2` what
/// is decided is filed on a second IMAP session while the first fetches on. Every message
/// ends where a one-session run puts it, exactly once, and also when the service is
/// killed again and again (within the first half of a run, timed here) while the two
/// sessions work.
#[test]
fn a_backlog_filed_on_two_sessions_lands_as_on_one_even_under_kills() {
    let Some(stack) = Stack::start("two-sessions") else {
        return;
    };
    let mut one = Wiring::plain(&stack);
    one.imap = one
        .imap
        .replace("timeout_seconds: 10", "timeout_seconds: 10, connections: 1");
    assert!(one.imap.contains("connections: 1"), "{}", one.imap);
    let one = std::fs::read_to_string(sort_only(&config(&stack, &one))).unwrap();
    let two = std::fs::read_to_string(sort_only(&config(&stack, &Wiring::plain(&stack)))).unwrap();
    let cfg = stack.dir.join("sort.yaml");
    let backlog: Vec<Vec<u8>> = (0..417)
        .flat_map(|n| {
            ANSWERED
                .iter()
                .chain(&NOT_ANSWERED)
                .map(move |name| numbered_case(name, n))
        })
        .collect();
    let total = backlog.len();
    append_all(&stack, DESK, "INBOX", &backlog);
    let maildir = stack.maildir(DESK);
    let snapshot = stack.dir.join("backlog-snapshot");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&maildir)
        .arg(&snapshot)
        .status()
        .unwrap()
        .success());
    // The mailbox as it was and no journal: each run starts from the same backlog.
    let afresh = || {
        std::fs::remove_dir_all(&maildir).unwrap();
        assert!(Command::new("cp")
            .arg("-a")
            .arg(&snapshot)
            .arg(&maildir)
            .status()
            .unwrap()
            .success());
        for end in ["sqlite", "sqlite-wal", "sqlite-shm", "messages"] {
            let path = stack.dir.join(format!("triage.{end}"));
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
    };
    let placed = |what: &str| {
        let mut found = where_is(&stack);
        found.sort();
        assert_eq!(
            found.len(),
            total,
            "{what}: every message once in the mailbox"
        );
        found
    };
    // Done in the journal, each with its final audit record, by the run that filed it.
    let settled = |what: &str| {
        assert_eq!(
            journal_done(&stack),
            total,
            "{what}: every message done in the journal"
        );
        let audited = journal_rows(
            &stack,
            "SELECT COUNT(DISTINCT message_id) FROM audit WHERE outcome IN ('filed', 'left for human')",
        )[0][0]
            .parse::<usize>()
            .unwrap();
        assert_eq!(
            audited, total,
            "{what}: every message has its final audit record"
        );
    };
    let debug_run = |config: &str| {
        std::fs::write(&cfg, config).unwrap();
        let out = triage(&stack, &cfg, &["run", "--once"])
            .env("TRIAGE_LOG", "triage=debug")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        log
    };

    // One session: the reference.
    let log = debug_run(&one);
    assert!(
        !log.contains("(second session)"),
        "imap.connections: 1 opens no second session"
    );
    let reference = placed("one session");
    let in_inbox = reference.iter().filter(|(_, f)| f == "INBOX").count();
    assert!(
        in_inbox < total / 2,
        "the rules file most of the backlog: {in_inbox} left"
    );

    // Two sessions: the same places, and the second session did file.
    afresh();
    let started = std::time::Instant::now();
    let log = debug_run(&two);
    let took = started.elapsed().as_millis() as u64;
    assert!(
        log.contains("(second session)"),
        "a second session filed part of the backlog:\n{log}"
    );
    assert_eq!(placed("two sessions"), reference);
    settled("two sessions");

    // Two sessions, killed at arbitrary points until the journal says all is done; three
    // times from the same backlog, as a run gets through it in a second or two. The kills
    // fall within the first half of such a run, so that they find the sessions at work
    // (50–800 ms let a fast machine finish before the first one).
    std::fs::write(&cfg, &two).unwrap();
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed}");
    for round in 0..3 {
        afresh();
        let log = format!("two-kill-{round}");
        let window = (20, (took / 2).max(60));
        let (kills, cut_short) =
            kill_until_journal_done(&stack, &cfg, total, &mut seed, &log, window);
        println!(
            "two sessions, round {round}: {kills} SIGKILLs within {window:?} ms, {cut_short} with work left"
        );
        assert!(cut_short > 0, "a kill found the sessions at work");
        run_once(&stack, &cfg);
        assert_eq!(placed("two sessions under kills"), reference);
        settled("two sessions under kills");
    }
}

/// Where the desk's mailbox is.
enum Desk<'a> {
    Dovecot(&'a Stack),
    Cyrus(&'a Cyrus),
}

impl Desk<'_> {
    fn append(&self, raws: &[Vec<u8>]) {
        match self {
            Desk::Dovecot(stack) => append_all(stack, DESK, "INBOX", raws),
            Desk::Cyrus(c) => c.append_all("INBOX", raws),
        }
    }
    fn folder(&self, name: &str) -> Vec<Held> {
        match self {
            Desk::Dovecot(stack) => folder(stack, DESK, name),
            Desk::Cyrus(c) => c.folder(name),
        }
    }
}

/// The same on a server shaped as Cyrus and Courier are by default (`INBOX.` namespace,
/// `.` separator, no MOVE, no SPECIAL-USE), with the shipped config unchanged.
#[test]
fn killed_at_arbitrary_points_on_an_inbox_dot_server_without_move() {
    let Some(stack) = Stack::start_shaped("kill-shaped", &COURIER_SHAPED) else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    kill_until_done(
        &stack,
        &Desk::Dovecot(&stack),
        &cfg,
        ["INBOX.Sent", "INBOX.Triage.Orders", "INBOX.Triage.PoE"],
    );
}

/// `folders`: the server's names of Sent and the two filing folders.
fn kill_until_done(stack: &Stack, desk: &Desk, cfg: &std::path::Path, folders: [&str; 3]) {
    let [sent, orders, poe] = folders;
    let cfg = cfg.to_path_buf();
    // 300 messages: 50 of each of the six kinds, four answered and two left for a human.
    let copies = 50;
    let backlog: Vec<Vec<u8>> = (0..copies)
        .flat_map(|n| {
            ANSWERED
                .iter()
                .chain(&NOT_ANSWERED)
                .map(move |name| numbered_case(name, n))
        })
        .collect();
    let total = backlog.len();
    desk.append(&backlog);

    // SIGKILL after a pseudo-random 50–800 ms, again and again, until the journal says
    // everything is done: the killed runs alone must get through the backlog (each keeps
    // what it decided), within 400 restarts. Then one ordinary run settles own copies.
    let mut seed: u64 = std::env::var("TRIAGE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("TRIAGE_KILL_SEED={seed}");
    let (kills, _) = kill_until_journal_done(stack, &cfg, total, &mut seed, "kill", (50, 800));
    let done_under_kills = journal_done(stack);
    run_once(stack, &cfg);

    let mut expected: Vec<String> = (0..copies)
        .flat_map(|n| {
            ANSWERED
                .iter()
                .map(move |name| format!("case-{name}-{n}@reseller.example"))
        })
        .collect();
    expected.sort();
    wait_for(stack, PARTNER, "INBOX", expected.len(), secs(30));
    // Own copies of what the killed runs sent may still be on their way (Postfix to
    // LMTP, slower under load); a running service removes them as they arrive, so run
    // again until they have all come and gone (or 30 s, and the counts below fail).
    let left_for_people = NOT_ANSWERED.len() * copies;
    let deadline = std::time::Instant::now() + secs(30);
    while desk.folder("INBOX").len() > left_for_people && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1000));
        run_once(stack, &cfg);
    }
    std::thread::sleep(Duration::from_millis(1000));

    // What every recipient received, counted: a Message-ID twice is a duplicate.
    let mut duplicates = 0;
    let mut counts = Vec::new();
    for (user, folder, n) in [
        (PARTNER, "INBOX", ANSWERED.len() * copies),
        ("rep.one@example.com", "INBOX", copies),
        ("isr.one@example.com", "INBOX", copies),
        ("partnerorderops@example.com", "INBOX", copies),
        ("cam.east@example.com", "INBOX", 2 * copies),
        (DESK, sent, 5 * copies),
        (DESK, orders, 2 * copies),
        (DESK, poe, 2 * copies),
        (DESK, "INBOX", NOT_ANSWERED.len() * copies),
    ] {
        let raws: Vec<Vec<u8>> = if user == DESK {
            desk.folder(folder).into_iter().map(|h| h.raw).collect()
        } else {
            mailbox(stack, user, folder)
        };
        let ids = message_ids(&raws);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        duplicates += ids.len() - unique.len();
        counts.push((user, folder, ids.len(), n));
    }
    let unhandled = total - journal_done(stack);
    let audited = journal_rows(
        stack,
        "SELECT COUNT(DISTINCT message_id) FROM audit WHERE outcome IN ('filed', 'left for human')",
    )[0][0]
        .parse::<usize>()
        .unwrap();
    let left = desk.folder("INBOX");
    let unflagged = left
        .iter()
        .filter(|h| !h.flags.iter().any(|f| f == "Flagged"))
        .count();
    // The figures CI prints (cargo test --show-output).
    println!(
        "fault report, SIGKILL: messages={total} kills={kills} done_under_kills={done_under_kills} duplicates={duplicates} unhandled={unhandled} audited={audited} unflagged_in_inbox={unflagged}"
    );
    assert!(kills >= 3, "the backlog was interrupted only {kills} times");
    assert_eq!(
        done_under_kills, total,
        "killed every 50-800 ms, the service got through only {done_under_kills} of {total} messages in {kills} restarts"
    );
    assert_eq!(duplicates, 0, "{counts:?}");
    assert_eq!(
        replied_to(stack),
        expected,
        "each answerable message answered exactly once"
    );
    // What stays unflagged in the desk's inbox, named, for a failure to say what it is.
    let strays: Vec<String> = left
        .iter()
        .filter(|h| !h.flags.iter().any(|f| f == "Flagged"))
        .map(|h| {
            let ids = message_ids(std::slice::from_ref(&h.raw));
            format!("{} {:?}", ids[0], h.flags)
        })
        .collect();
    for (user, folder, got, n) in counts {
        assert_eq!(
            got, n,
            "{user} {folder}; unflagged in the inbox: {strays:?}"
        );
    }
    assert_eq!(unhandled, 0, "every message's plan finished");
    assert_eq!(audited, total, "every message has its final audit record");
    assert_eq!(
        unflagged, 0,
        "what is left in the inbox is flagged for a human"
    );
}

/// SIGKILL after a pseudo-random 50–800 ms, again and again, until the journal says
/// all `total` messages are done (at most 400 times); how many kills it took.
/// Starts the service and kills it after a random time within `window` (ms), again
/// and again until the journal says all `total` are done: (kills, kills that found
/// work still to do).
fn kill_until_journal_done(
    stack: &Stack,
    cfg: &std::path::Path,
    total: usize,
    seed: &mut u64,
    log: &str,
    window: (u64, u64),
) -> (usize, usize) {
    let (mut kills, mut cut_short) = (0, 0);
    while kills < 400 && journal_done(stack) < total {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = window.0 + (*seed >> 33) % (window.1 - window.0);
        let mut service = start_service(stack, cfg, &format!("{log}-{kills}.log"));
        std::thread::sleep(Duration::from_millis(ms));
        service.kill().unwrap();
        service.wait().unwrap();
        kills += 1;
        cut_short += usize::from(journal_done(stack) < total);
    }
    (kills, cut_short)
}

fn journal_done(stack: &Stack) -> usize {
    // A service killed just after creating the file may not have made its tables yet.
    let Ok(db) = rusqlite::Connection::open_with_flags(
        stack.dir.join("triage.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row("SELECT COUNT(*) FROM messages WHERE state >= 4", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as usize)
    .unwrap_or(0)
}

#[test]
fn without_idle_the_service_polls() {
    let Some(stack) = Stack::start("poll") else {
        return;
    };
    let mut wiring = Wiring::plain(&stack);
    wiring.imap = wiring
        .imap
        .replace("poll_seconds: 1", "idle: false, poll_seconds: 1");
    let cfg = config(&stack, &wiring);
    let mut service = start_service(&stack, &cfg, "service.log");
    std::thread::sleep(Duration::from_millis(300));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(15));
    signal(&service, "INT");
    let status = wait_exit(&mut service, secs(20));
    let log = std::fs::read_to_string(stack.dir.join("service.log")).unwrap();
    assert!(status.success(), "SIGINT: exit 0, got {status}\n{log}");
    assert!(
        log.contains("polling every 1 s (IDLE switched off)"),
        "{log}"
    );
}

/// A service killed right after its APPEND to Sent went out whole: the server still
/// saves the copies, and shows them only once all are saved (one MULTIAPPEND of 50
/// copies of 20 KB, its client gone as soon as it was sent: none in Sent 0.13 s after,
/// all 50 at 0.20 s). The restarted service, finding a copy missing, must not append a
/// second one meanwhile (the SIGKILL test found one such twice in ~120 runs).
/// Recreated without a kill: after a normal run the copy is taken out of Sent, the
/// original put back in the inbox and the journal set back to "sent, its copy's APPEND
/// begun"; the copy comes back 1.2 s into the next run, as the old APPEND would.
#[test]
fn a_copy_still_landing_in_sent_after_a_crash_is_not_appended_twice() {
    let Some(stack) = Stack::start("sent-late") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    let original = case("en-quote-request-ops-copied");
    let original_id = message_ids(std::slice::from_ref(&original))[0].clone();
    append(&stack, DESK, "INBOX", &original);
    run_once(&stack, &cfg);
    let sent = folder(&stack, DESK, "Sent");
    assert_eq!(sent.len(), 1, "one answer and its copy");
    let copy = sent[0].raw.clone();
    let answer_id = message_ids(std::slice::from_ref(&copy))[0].clone();

    let (_, filed_in) = where_is(&stack)
        .into_iter()
        .find(|(id, _)| *id == original_id)
        .expect("the original is somewhere");
    let id_query = format!("<{original_id}>");
    doveadm(
        &stack,
        &[
            "move",
            "-u",
            DESK,
            "INBOX",
            "mailbox",
            &filed_in,
            "header",
            "Message-ID",
            &id_query,
        ],
    );
    doveadm(&stack, &["expunge", "-u", DESK, "mailbox", "Sent", "all"]);
    let uid = doveadm(
        &stack,
        &[
            "-f", "tab", "fetch", "-u", DESK, "uid", "mailbox", "INBOX", "all",
        ],
    )
    .lines()
    .nth(1)
    .expect("the original back in the inbox")
    .trim()
    .to_string();
    let db = rusqlite::Connection::open(stack.dir.join("triage.sqlite")).unwrap();
    let moved = db
        .execute(
            "UPDATE messages SET uid = ?1, state = 3 WHERE message_id = ?2",
            rusqlite::params![uid.parse::<u32>().unwrap(), original_id],
        )
        .unwrap();
    assert_eq!(moved, 1, "the original's journal row");
    let reset = db
        .execute(
            "UPDATE outbox SET state = 'appending', updated = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE message_id = ?1",
            [format!("<{answer_id}>")],
        )
        .unwrap();
    assert_eq!(reset, 1, "the answer's outbox row");
    drop(db);

    let out = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1200));
            append(&stack, DESK, "Sent", &copy);
        });
        run_once(&stack, &cfg)
    });
    let log = String::from_utf8_lossy(&out.stderr);
    let copies = message_ids(&mailbox(&stack, DESK, "Sent"))
        .into_iter()
        .filter(|id| *id == answer_id)
        .count();
    assert_eq!(copies, 1, "the copy in Sent twice; the run said:\n{log}");
    assert_eq!(replied_to(&stack).len(), 1, "the answer sent once");
}
