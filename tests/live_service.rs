//! `triage run --once` against a real Dovecot + Postfix started on loopback by this test
//! (tools/mailstack), reading what recipients actually received over IMAP.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::StreamExt;
use mail_parser::{MessageParser, MimeHeaders};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Stack {
    dir: PathBuf,
    env: std::collections::HashMap<String, String>,
}

impl Stack {
    fn start() -> Stack {
        let dir = std::env::temp_dir().join(format!("triage-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users =
            "partnersupport@example.com partnerorderops@example.com billingops@example.com \
            rep.one@example.com isr.one@example.com cam.east@example.com alice@reseller.example";
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("tools/mailstack/start.sh"))
            .arg(dir.join("stack"))
            .env("MAILSTACK_USERS", users);
        for p in ["IMAP", "IMAPS", "LMTP", "SMTP", "SUBMISSION", "SMTPS"] {
            cmd.env(format!("MAILSTACK_{p}_PORT"), "0");
        }
        let out = cmd.output().expect("start.sh runs");
        assert!(
            out.status.success(),
            "mail stack did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("stack/mailstack.env"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            })
            .collect();
        Stack { dir, env }
    }
    fn port(&self, name: &str) -> u16 {
        self.env[&format!("MAILSTACK_{name}_PORT")].parse().unwrap()
    }
    fn password(&self) -> &str {
        &self.env["MAILSTACK_PASSWORD"]
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tools/mailstack/stop.sh"))
            .arg("--purge")
            .arg(&self.dir.join("stack"))
            .env("MAILSTACK_QUIET", "1")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain SMTP submission, as a partner's server would deliver to the desk.
fn deliver(port: u16, from: &str, to: &str, raw: &[u8]) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let mut expect = |r: &mut BufReader<TcpStream>, code: &str| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "SMTP expected {code}, got {line}");
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    expect(&mut r, "220");
    for (cmd, code) in [
        ("EHLO test.example".to_string(), "250"),
        (format!("MAIL FROM:<{from}>"), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".into(), "354"),
    ] {
        write!(w, "{cmd}\r\n").unwrap();
        expect(&mut r, code);
    }
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    for l in text.lines() {
        let l = if l.starts_with('.') {
            format!(".{l}")
        } else {
            l.to_string()
        };
        write!(w, "{l}\r\n").unwrap();
    }
    write!(w, ".\r\n").unwrap();
    expect(&mut r, "250");
    write!(w, "QUIT\r\n").unwrap();
}

/// Every message in a user's folder, read over IMAP.
fn mailbox(stack: &Stack, user: &str, folder: &str) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.port("IMAP")))
            .await
            .unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap();
        let mut s = client
            .login(user, stack.password())
            .await
            .map_err(|e| e.0)
            .unwrap();
        let mut out = Vec::new();
        if s.examine(folder).await.is_ok() {
            let mut stream = s.fetch("1:*", "BODY.PEEK[]").await.unwrap();
            while let Some(f) = stream.next().await {
                if let Some(b) = f.unwrap().body() {
                    out.push(b.to_vec());
                }
            }
        }
        drop(s.logout().await);
        out
    })
}

fn config(stack: &Stack) -> PathBuf {
    let base = std::fs::read_to_string(repo().join("deploy/triage.yaml")).unwrap();
    let base = base.split("\nimap:").next().unwrap().to_string();
    let root = repo();
    let text = base
        .replace("rules: ../rules", &format!("rules: {}/rules", root.display()))
        .replace("templates: ../response-templates", &format!("templates: {}/response-templates", root.display()))
        .replace("  path: directory ", &format!("  path: {}/deploy/directory ", root.display()))
        + &format!(
            "\nimap: {{host: 127.0.0.1, port: {}, tls: plain, username: partnersupport@example.com, password: {{env: LIVE_PASSWORD}}}}\n\
             smtp: {{host: 127.0.0.1, port: {}, tls: plain}}\n\
             service: {{state: {}/triage.sqlite, documents: {}/documents}}\n",
            stack.port("IMAP"),
            stack.port("SMTP"),
            stack.dir.display(),
            stack.dir.display()
        );
    let path = stack.dir.join("triage.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_once(stack: &Stack, config: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["run", "--once", "--config"])
        .arg(config)
        .env("LIVE_PASSWORD", stack.password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "triage run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn case(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/cases").join(format!("{name}.eml"))).unwrap()
}

fn wait_for_inbox(stack: &Stack, n: usize) {
    for _ in 0..100 {
        if mailbox(stack, "partnersupport@example.com", "INBOX").len() >= n {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("mail was not delivered");
}

#[test]
fn answers_each_message_once_with_the_right_people_and_documents() {
    let stack = Stack::start();
    let cfg = config(&stack);
    let smtp = stack.port("SMTP");
    for name in [
        "en-purchase-order-direct",
        "en-quote-request-ops-copied",
        "poe-complete-en",
        "poe-missing-customer-en",
        "bait-out-of-office",
        "quote-ambiguous-customer",
    ] {
        deliver(
            smtp,
            "alice@reseller.example",
            "partnersupport@example.com",
            &case(name),
        );
    }
    wait_for_inbox(&stack, 6);
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
