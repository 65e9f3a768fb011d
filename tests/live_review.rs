//! The review pages, in a real headless Chromium, against a service that has worked
//! through a mixed backlog on the real Dovecot and Postfix: the summary leads to the
//! message left for a person and why; filters return the right rows; a decision page
//! shows the people and documents the recipients actually received; a subject made of
//! markup shows as text and runs nothing; every look is recorded; and the pages refuse
//! anyone without credentials on a non-loopback address. Screenshots of each page go to
//! target/test-artifacts/.
#![allow(clippy::too_many_lines)]

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use fantoccini::Locator;
use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};
use support::browser::Browser;
use support::*;

const MARKUP: &str = "<script>window.pwned=1</script><img src=x onerror=\"document.title='pwned'\"> quote for Acme Corp";

/// GET with extra header lines, to any address: (status, head, body).
fn get(host: &str, port: u16, path: &str, extra: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect((host, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: review\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_lowercase(), body.to_string())
}

/// Messages with a final audit record (filed or left for a person).
fn concluded(stack: &Stack) -> usize {
    // Until the service has made its journal there is nothing to count.
    let Ok(db) = rusqlite::Connection::open(stack.dir.join("triage.sqlite")) else {
        return 0;
    };
    db.query_row(
        "SELECT COUNT(DISTINCT uid) FROM audit WHERE outcome IN ('filed', 'left for human')",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| n as usize)
}

fn backlog() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = ANSWERED
        .iter()
        .chain(NOT_ANSWERED.iter())
        .map(|n| case(n))
        .collect();
    let crafted = String::from_utf8(case("en-quote-request-direct"))
        .unwrap()
        .replacen("Subject: ", &format!("Subject: {MARKUP} "), 1)
        .replacen("Message-ID: <", "Message-ID: <markup-", 1);
    all.push(crafted.into_bytes());
    all
}

#[test]
fn reviewers_find_what_happened_and_why_and_nothing_runs() {
    let Some(stack) = Stack::start("review") else {
        return;
    };
    let port = free_port();
    let cfg = config(&stack, &Wiring::plain(&stack));
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "review: {{listen: '127.0.0.1:{port}', page_size: 3}}\n"
    ));
    std::fs::write(&cfg, text).unwrap();

    let raws = backlog();
    for raw in &raws {
        deliver(&stack, raw);
    }
    wait_for(&stack, DESK, "INBOX", raws.len(), Duration::from_secs(15));
    let mut service = start_service(&stack, &cfg, "service.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while concluded(&stack) < raws.len() {
        assert!(
            Instant::now() < deadline,
            "the backlog was not worked through"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no review listener");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Headers every page carries.
    let (code, head, _) = get("127.0.0.1", port, "/", "");
    assert_eq!(code, 200);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"));

    // What the journal says, to compare the pages with.
    let human: Vec<String> = journal_rows(
        &stack,
        "SELECT DISTINCT subject FROM audit WHERE outcome = 'left for human'",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert!(!human.is_empty());

    // Concluded means accepted by Postfix: wait until every reply is delivered.
    let replies: usize = journal_rows(
        &stack,
        &format!(
            "SELECT COUNT(*) FROM audit WHERE outcome = 'replied' AND to_addrs LIKE '%{PARTNER}%'"
        ),
    )[0][0]
        .parse()
        .unwrap();
    wait_for(&stack, PARTNER, "INBOX", replies, Duration::from_secs(15));
    let partner_inbox = mailbox(&stack, PARTNER, "INBOX");
    block_on(async {
        let Some(b) = Browser::start(&stack.dir).await else {
            return;
        };
        let c = &b.client;

        // A new reviewer: the summary, then the message that went to a person, and why.
        c.goto(&format!("{base}/")).await.unwrap();
        let summary = b.text().await;
        assert!(
            summary.contains("Why messages went to a person"),
            "{summary}"
        );
        assert!(
            summary.contains(&format!("{} messages", raws.len())),
            "{summary}"
        );
        let loaded: bool = c
            .execute(
                "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
                vec![],
            )
            .await
            .unwrap()
            .as_bool()
            .unwrap();
        assert!(loaded, "every chart is drawn");
        b.screenshot("review-summary").await;
        let first_reason = c
            .find(Locator::Css("table a[href^='/decisions/']"))
            .await
            .unwrap();
        b.follow(&first_reason).await;
        let page = b.text().await;
        assert!(page.contains("left for a person"), "{page}");
        assert!(
            page.contains("Why") || page.contains("What came in"),
            "{page}"
        );

        // The list, filtered by outcome: exactly the messages left for a person.
        c.goto(&format!("{base}/decisions?outcome=left+for+a+person"))
            .await
            .unwrap();
        let rows = c
            .find_all(Locator::Css("table.decisions tbody tr"))
            .await
            .unwrap();
        assert_eq!(rows.len(), human.len().min(3), "page size 3");
        let listed = b.text().await;
        assert!(
            listed.contains(&format!("{} message", human.len())),
            "{listed}"
        );
        b.screenshot("review-decisions-left-for-a-person").await;

        // Filled in through the form, as a person does: category purchase order.
        c.goto(&format!("{base}/decisions")).await.unwrap();
        let form = c.form(Locator::Css("form.filters")).await.unwrap();
        form.set_by_name("category", "purchase_order")
            .await
            .unwrap();
        form.submit().await.unwrap();
        b.wait_url("category=purchase_order").await;
        let rows = c
            .find_all(Locator::Css("table.decisions tbody tr"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{}", b.text().await);

        // Its decision page: the people and documents the partner actually received.
        b.follow(&rows[0].find(Locator::Css("a")).await.unwrap())
            .await;
        let decision_url = c.current_url().await.unwrap().to_string();
        let reply = partner_inbox
            .iter()
            .find(|r| {
                MessageParser::default()
                    .parse(r)
                    .unwrap()
                    .attachment_count()
                    > 0
            })
            .expect("the PO's answer with the PO attached");
        let parsed = MessageParser::default().parse(reply).unwrap();
        let to_cell = c
            .find(Locator::Css("tr.step-replied td.to"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let cc_cell = c
            .find(Locator::Css("tr.step-replied td.cc"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for a in parsed.to().unwrap().iter() {
            assert!(to_cell.contains(a.address().unwrap()), "{to_cell}");
        }
        for a in parsed.cc().unwrap().iter() {
            assert!(cc_cell.contains(a.address().unwrap()), "{cc_cell}");
        }
        let shown = c
            .find(Locator::Css("tr.step-replied td.attachments"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for a in parsed.attachments() {
            let sha = hex(&Sha256::digest(a.contents()));
            assert!(shown.contains(a.attachment_name().unwrap()), "{shown}");
            assert!(shown.contains(&sha), "{shown} lacks {sha}");
        }
        let page = b.text().await;
        assert!(
            page.contains("the server said 250"),
            "the SMTP server's answer: {page}"
        );
        assert!(page.contains("journal: filed"), "{page}");
        b.screenshot("review-decision").await;

        // The crafted subject: shown as text, nothing ran.
        c.goto(&format!("{base}/decisions?q=pwned")).await.unwrap();
        b.follow(
            &c.find(Locator::Css("table.decisions tbody a"))
                .await
                .unwrap(),
        )
        .await;
        let h1 = c
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(h1.contains("<script>window.pwned=1</script>"), "{h1}");
        let title = c.title().await.unwrap();
        assert!(!title.contains("pwned"), "{title}");
        let ran = c
            .execute(
                "return typeof window.pwned !== 'undefined' || document.scripts.length > 0",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(ran, serde_json::json!(false));
        b.screenshot("review-markup-subject").await;

        c.goto(&format!("{base}/queue")).await.unwrap();
        let queue = b.text().await;
        for s in &human {
            assert!(queue.contains(s.trim()), "{s} in {queue}");
        }
        b.screenshot("review-queue").await;
        c.goto(&decision_url).await.unwrap();
        assert!(
            b.text().await.contains("local (127.0.0.1)"),
            "the look is shown"
        );
        b.close().await;
    });

    // Every look at a message is recorded.
    let views = journal_rows(
        &stack,
        "SELECT viewer, page FROM views WHERE audit_id IS NOT NULL",
    );
    assert!(views.len() >= 4, "{views:?}");
    assert!(
        views.iter().all(|v| v[0] == "local (127.0.0.1)"),
        "{views:?}"
    );

    // The same figures as CSV.
    let (code, head, csv) = get("127.0.0.1", port, "/summary.csv?days=7", "");
    assert_eq!(code, 200);
    assert!(head.contains("text/csv"));
    assert!(csv.starts_with("day,category,outcome,messages"), "{csv}");
    let total: usize = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(',').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(total, raws.len(), "{csv}");

    signal(&service, "TERM");
    wait_exit(&mut service, Duration::from_secs(20));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_pages_refuse_strangers_off_loopback() {
    let Some(stack) = Stack::start("review-access") else {
        return;
    };
    let port = free_port();
    let cfg = config(&stack, &Wiring::plain(&stack));
    let base = std::fs::read_to_string(&cfg).unwrap();

    // Anywhere but loopback without a way to sign in: the config is refused at load.
    std::fs::write(
        &cfg,
        format!("{base}review: {{listen: '0.0.0.0:{port}'}}\n"),
    )
    .unwrap();
    let out = triage(&stack, &cfg, &["check"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("review.listen"),
        "{said}"
    );

    // Local accounts, argon2 hashes made by `triage review-account`.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["review-account", "lead"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let line = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert!(line.starts_with("lead:$argon2id$"), "{line}");
    assert!(!line.contains("correct horse"));
    let accounts = stack.dir.join("review-accounts");
    std::fs::write(&accounts, &line).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}review: {{listen: '0.0.0.0:{port}', auth: {{accounts: {}}}}}\n",
            accounts.display()
        ),
    )
    .unwrap();
    let mut service = start_service(&stack, &cfg, "service.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no review listener");
        std::thread::sleep(Duration::from_millis(100));
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for path in [
        "/",
        "/decisions",
        "/decisions/1",
        "/queue",
        "/summary.csv",
        "/charts/latency.svg",
    ] {
        let (code, head, body) = get("127.0.0.1", port, path, "");
        assert_eq!(code, 401, "{path}: {head}");
        assert!(head.contains("www-authenticate: basic"), "{head}");
        assert!(!body.contains("<table"), "{path}: nothing shown");
        let (code, ..) = get(
            "127.0.0.1",
            port,
            path,
            &format!("Authorization: Basic {}\r\n", b64("lead:wrong password!")),
        );
        assert_eq!(code, 401, "{path} with a wrong password");
    }
    let good = format!(
        "Authorization: Basic {}\r\n",
        b64("lead:correct horse battery")
    );
    let (code, _, body) = get("127.0.0.1", port, "/", &good);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("signed in as lead"), "{body}");
    // From this machine's other address too, when it has one.
    if let Some(ip) = other_address() {
        let (code, ..) = get(&ip, port, "/", "");
        assert_eq!(code, 401, "from {ip}");
    }
    signal(&service, "TERM");
    wait_exit(&mut service, Duration::from_secs(20));

    // A trusted proxy: its header counts only from its own address.
    std::fs::write(
        &cfg,
        format!("{base}review: {{listen: '0.0.0.0:{port}', auth: {{proxy: {{header: X-Forwarded-User, from: [192.0.2.10]}}}}}}\n"),
    )
    .unwrap();
    let mut service = start_service(&stack, &cfg, "service2.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "no review listener");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, body) = get(
        "127.0.0.1",
        port,
        "/",
        "X-Forwarded-User: lead@example.com\r\n",
    );
    assert_eq!(code, 403, "a forged proxy header from elsewhere: {body}");
    signal(&service, "TERM");
    wait_exit(&mut service, Duration::from_secs(20));
}

/// An address of this machine that is not loopback (`hostname -I`), if any.
fn other_address() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_string)
}
