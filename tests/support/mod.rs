//! The live tests' harness: a real Dovecot + Postfix started on loopback ephemeral ports
//! through tools/mailstack (the same scripts the demo uses), SMTP delivery as a partner's
//! server would do it, and reading mailboxes over IMAP as the recipients would.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod authority;
pub mod broken;
pub mod browser;
pub mod cyrus;
pub mod salesforce;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mail_parser::MessageParser;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub const PARTNER: &str = "alice@reseller.example";
pub const DESK: &str = "partnersupport@example.com";
/// Every stack user's password.
pub const PASSWORD: &str = "Zq7Kx3Vw9Rp2Lm";
pub const EVERYONE: &str = "partnersupport@example.com partnerorderops@example.com \
    billingops@example.com rep.one@example.com isr.one@example.com cam.east@example.com \
    alice@reseller.example";

/// Why this machine cannot start the hermetic Dovecot + Postfix, if it cannot: they
/// run as root (tools/mailstack/README) and must be installed (tools/mailstack/install.sh).
fn cannot_run_servers() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root".into());
    }
    for server in ["/usr/sbin/dovecot", "/usr/sbin/postfix"] {
        if !Path::new(server).exists() {
            return Some(format!("{server} is not installed"));
        }
    }
    None
}

/// Dovecot shaped as Cyrus and Courier are by default: `INBOX.` namespace, `.`
/// separator, no MOVE, no SPECIAL-USE (for `Stack::start_shaped`).
pub const COURIER_SHAPED: [(&str, &str); 4] = [
    ("MAILSTACK_PREFIX", "INBOX."),
    ("MAILSTACK_SEPARATOR", "."),
    ("MAILSTACK_SENT_SPECIAL_USE", ""),
    (
        "MAILSTACK_IMAP_CAPABILITY",
        "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UIDPLUS NAMESPACE CHILDREN LITERAL+",
    ),
];

pub struct Stack {
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

impl Stack {
    /// A stack with the desk, its internal people and the partner as users. None (the
    /// test is skipped, and says so) on a machine that cannot run Dovecot and Postfix;
    /// the test command sets TRIAGE_LIVE_REQUIRED=1, so there a missing stack fails.
    pub fn start(name: &str) -> Option<Stack> {
        Stack::start_with_users(name, EVERYONE)
    }

    pub fn start_with_users(name: &str, users: &str) -> Option<Stack> {
        Stack::start_with(name, users, &[])
    }

    /// OAuth2 only: Dovecot (and Postfix's submission through it) takes XOAUTH2 and
    /// OAUTHBEARER tokens, checked against `introspection_url`, and no passwords.
    pub fn start_oauth2(name: &str, introspection_url: &str) -> Option<Stack> {
        Stack::start_with(
            name,
            EVERYONE,
            &[("MAILSTACK_OAUTH2_URL", introspection_url)],
        )
    }

    /// A stack with settings of tools/mailstack/start.sh (a namespace prefix, withheld
    /// capabilities), for the shapes other servers have.
    pub fn start_shaped(name: &str, env: &[(&str, &str)]) -> Option<Stack> {
        Stack::start_with(name, EVERYONE, env)
    }

    fn start_with(name: &str, users: &str, env: &[(&str, &str)]) -> Option<Stack> {
        if let Some(why) = cannot_run_servers() {
            assert!(
                std::env::var_os("TRIAGE_LIVE_REQUIRED").is_none(),
                "live test {name}: {why} (TRIAGE_LIVE_REQUIRED is set: the test command must run it)"
            );
            eprintln!("SKIPPED live test {name}: {why}; `bash tools/test.sh` (as root) installs the servers and runs it");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("triage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("tools/mailstack/start.sh"))
            .arg(dir.join("stack"))
            .env("MAILSTACK_USERS", users)
            // Distinctive, so that tests can grep logs and records for it.
            .env("MAILSTACK_PASSWORD", PASSWORD)
            .envs(env.iter().copied());
        for p in ["IMAP", "IMAPS", "LMTP", "SMTP", "SUBMISSION", "SMTPS"] {
            cmd.env(format!("MAILSTACK_{p}_PORT"), "0");
        }
        let mut out = cmd.output().expect("start.sh runs");
        // Two stacks started at the same instant can draw the same free port.
        for _ in 0..2 {
            if out.status.success() {
                break;
            }
            let _ = Command::new("bash")
                .arg(repo().join("tools/mailstack/stop.sh"))
                .arg("--purge")
                .arg(dir.join("stack"))
                .env("MAILSTACK_QUIET", "1")
                .output();
            out = cmd.output().expect("start.sh runs");
        }
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
        Some(Stack { dir, env })
    }

    pub fn port(&self, name: &str) -> u16 {
        self.env[&format!("MAILSTACK_{name}_PORT")].parse().unwrap()
    }

    /// One of the stack's settings (mailstack.env), e.g. `MAILSTACK_DOVECOT_CONF`.
    pub fn setting(&self, key: &str) -> &str {
        &self.env[key]
    }

    pub fn password(&self) -> &str {
        &self.env["MAILSTACK_PASSWORD"]
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("stack/tls/ca.pem")
    }

    pub fn maildir(&self, user: &str) -> PathBuf {
        let (local, domain) = user.split_once('@').unwrap();
        self.dir
            .join("stack/mail")
            .join(domain)
            .join(local)
            .join("Maildir")
    }

    /// Stops Dovecot, killing its IMAP processes too so that every connection drops (its
    /// master alone going away leaves them serving), runs `between`, starts it again.
    pub fn restart_dovecot(&self, between: impl FnOnce()) {
        let pidfile = self.dir.join("stack/dovecot/run/master.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let children = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for child in String::from_utf8_lossy(&children.stdout).split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", child])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Command::new("kill")
            .args(["-0", &pid])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < deadline, "dovecot did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        between();
        let conf = self.dir.join("stack/dovecot/etc/dovecot.conf");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "dovecot did not start again");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port("IMAP"))).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Stack {
    /// `postfix -c CONF ARGS…` on this stack's Postfix (stop, start, reload).
    pub fn postfix(&self, args: &[&str]) {
        let conf = self.dir.join("stack/postfix/etc");
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "postfix {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if args == ["start"] {
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", self.port("SMTP"))).is_err() {
                assert!(Instant::now() < deadline, "postfix did not come back");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Changes one main.cf setting and reloads Postfix.
    pub fn postconf(&self, setting: &str) {
        let conf = self.dir.join("stack/postfix/etc");
        let ok = Command::new("postconf")
            .arg("-c")
            .arg(&conf)
            .args(["-e", setting])
            .status()
            .unwrap();
        assert!(ok.success(), "postconf -e {setting}");
        self.postfix(&["reload"]);
        // reload is asynchronous: the master re-reads main.cf on its next loop.
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tools/mailstack/stop.sh"))
            .arg("--purge")
            .arg(self.dir.join("stack"))
            .env("MAILSTACK_QUIET", "1")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain SMTP delivery, as a partner's server would deliver to the desk.
pub fn deliver(stack: &Stack, raw: &[u8]) {
    deliver_to(stack.port("SMTP"), PARTNER, DESK, raw)
}

pub fn deliver_to(port: u16, from: &str, to: &str, raw: &[u8]) {
    SmtpTalk::open(port).send(from, to, raw);
}

/// A plain SMTP conversation, as a partner's server (or a bare benchmark client) holds
/// it: one connection, any number of messages, QUIT when dropped.
pub struct SmtpTalk {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpTalk {
    pub fn open(port: u16) -> SmtpTalk {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut talk = SmtpTalk {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        };
        talk.expect("220");
        talk.command("EHLO test.example", "250");
        talk
    }

    fn expect(&mut self, code: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.starts_with(code), "SMTP expected {code}, got {line}");
            if line.as_bytes().get(3) == Some(&b' ') {
                return;
            }
        }
    }

    fn command(&mut self, cmd: &str, code: &str) {
        write!(self.writer, "{cmd}\r\n").unwrap();
        self.expect(code);
    }

    /// One message, dot-stuffed, in one write; returns once the server said 250.
    pub fn send(&mut self, from: &str, to: &str, raw: &[u8]) {
        self.send_to_all(from, &[to], raw);
    }

    /// One message to several recipients (one RCPT each, as a Bcc goes).
    pub fn send_to_all(&mut self, from: &str, to: &[&str], raw: &[u8]) {
        self.command(&format!("MAIL FROM:<{from}>"), "250");
        for to in to {
            self.command(&format!("RCPT TO:<{to}>"), "250");
        }
        self.command("DATA", "354");
        let mut data = String::with_capacity(raw.len() + 64);
        for l in String::from_utf8_lossy(raw).replace("\r\n", "\n").lines() {
            if l.starts_with('.') {
                data.push('.');
            }
            data.push_str(l);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.writer.write_all(data.as_bytes()).unwrap();
        self.expect("250");
    }
}

impl Drop for SmtpTalk {
    fn drop(&mut self) {
        let _ = write!(self.writer, "QUIT\r\n");
    }
}

/// Runs a future to completion on a runtime of its own (the helpers below are sync).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A port nothing listens on (yet): for the HTTP listener, or a server that is down.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.1: (status code, body); (0, "") when nothing answers. The
/// request goes in pieces, as write! does and some clients do: the server must wait for
/// the whole line.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Read;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    let sent = write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    if sent.is_err() || s.read_to_string(&mut out).is_err() {
        return (0, String::new());
    }
    let code = out
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls `path` until it answers `code`; its body.
pub fn wait_http(port: u16, path: &str, code: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            let (c, body) = http_get(port, path);
            if c == code {
                return body;
            }
            assert!(Instant::now() < deadline, "{path}: {c} {body}");
        }
        assert!(Instant::now() < deadline, "{path}: no listener");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of the first sample of `name` in a /metrics text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

pub type ImapSession = async_imap::Session<tokio::net::TcpStream>;

/// A user's IMAP session on the stack, as a mail client would open it.
pub async fn login(stack: &Stack, user: &str) -> ImapSession {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", stack.port("IMAP")))
        .await
        .unwrap();
    // APPEND sends its literal in pieces: without this, each waits for a delayed ACK.
    tcp.set_nodelay(true).unwrap();
    let mut client = async_imap::Client::new(tcp);
    client.read_response().await.unwrap();
    if stack
        .env
        .get("MAILSTACK_AUTH")
        .is_some_and(|a| a == "oauth2")
    {
        // The test authority takes "reader:USER" as a token for USER.
        struct Reader(Option<String>);
        impl async_imap::Authenticator for Reader {
            type Response = String;
            fn process(&mut self, _: &[u8]) -> String {
                self.0.take().unwrap_or_default()
            }
        }
        let first = format!("user={user}\x01auth=Bearer reader:{user}\x01\x01");
        return client
            .authenticate("XOAUTH2", Reader(Some(first)))
            .await
            .map_err(|e| e.0)
            .unwrap();
    }
    client
        .login(user, stack.password())
        .await
        .map_err(|e| e.0)
        .unwrap()
}

/// The six kinds of partner mail the live tests and the benchmark deliver: four get an
/// answer, two (loop bait, an ambiguous lookup) are left for a human.
pub const ANSWERED: [&str; 4] = [
    "en-purchase-order-direct",
    "en-quote-request-ops-copied",
    "poe-complete-en",
    "poe-missing-customer-en",
];
pub const NOT_ANSWERED: [&str; 2] = ["bait-out-of-office", "quote-ambiguous-customer"];

/// One message as a folder holds it: its bytes and its IMAP flags.
pub struct Held {
    pub raw: Vec<u8>,
    pub flags: Vec<String>,
}

/// Every message in a user's folder, read over IMAP (empty if the folder does not exist).
pub fn folder(stack: &Stack, user: &str, name: &str) -> Vec<Held> {
    block_on(async {
        let mut s = login(stack, user).await;
        let out = read_folder(&mut s, name).await;
        drop(s.logout().await);
        out
    })
}

/// Every message in a folder of a signed-in session, with flags (none if it is missing).
pub async fn read_folder(s: &mut ImapSession, name: &str) -> Vec<Held> {
    let mut out = Vec::new();
    if s.examine(name).await.is_ok() {
        let mut stream = s.fetch("1:*", "(FLAGS BODY.PEEK[])").await.unwrap();
        while let Some(f) = stream.next().await {
            let f = f.unwrap();
            if let Some(b) = f.body() {
                out.push(Held {
                    raw: b.to_vec(),
                    flags: f.flags().map(|fl| format!("{fl:?}")).collect(),
                });
            }
        }
    }
    out
}

pub fn mailbox(stack: &Stack, user: &str, name: &str) -> Vec<Vec<u8>> {
    folder(stack, user, name)
        .into_iter()
        .map(|h| h.raw)
        .collect()
}

pub fn subjects(raws: &[Vec<u8>]) -> Vec<String> {
    let parser = MessageParser::default();
    let mut s: Vec<String> = raws
        .iter()
        .map(|r| parser.parse(r).unwrap().subject().unwrap_or("").to_string())
        .collect();
    s.sort();
    s
}

/// Waits until `user`'s folder holds at least `n` messages.
pub fn wait_for(stack: &Stack, user: &str, name: &str, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let got = mailbox(stack, user, name).len();
        if got >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{user} {name}: {got} messages, expected {n} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How the service reaches the stack: the `imap:` and `smtp:` sections.
pub struct Wiring {
    pub imap: String,
    pub smtp: String,
    pub service: String,
    /// Lines put under `limits:`, replacing the example's lines of the same keys.
    pub limits: String,
}

impl Wiring {
    /// Plain loopback connections, as the config must say explicitly.
    pub fn plain(stack: &Stack) -> Wiring {
        Wiring {
            imap: format!(
                "{{host: 127.0.0.1, port: {}, tls: plain, username: {DESK}, password: {{env: LIVE_PASSWORD}}, poll_seconds: 1, timeout_seconds: 10}}",
                stack.port("IMAP")
            ),
            smtp: format!(
                "{{host: 127.0.0.1, port: {}, tls: plain, timeout_seconds: 10, self_copy_wait_seconds: 5}}",
                stack.port("SMTP")
            ),
            service: String::new(),
            // Backlogs here are copies of a few fixtures from a few senders: the per-sender
            // cap and the breaker are lifted unless a test is about them.
            limits: "  per_sender: {answers: 100000, hours: 1}\n  circuit_breaker: {answers: 100000, minutes: 60}\n".into(),
        }
    }
}

/// The example config's rules, templates and directory, pointed at the repository's.
pub fn repo_paths(example: &str) -> String {
    let root = repo();
    example
        .replace(
            "rules: ../rules",
            &format!("rules: {}/rules", root.display()),
        )
        .replace(
            "templates: ../response-templates",
            &format!("templates: {}/response-templates", root.display()),
        )
        .replace(
            "  path: directory ",
            &format!("  path: {}/deploy/directory ", root.display()),
        )
}

/// A config as `config` made it, with the benchmark's sort-only rules
/// (`benches/sort/rules`, `respond: file`) instead of the shipped ones: `sort.yaml`
/// beside it.
pub fn sort_only(config: &Path) -> PathBuf {
    let text = std::fs::read_to_string(config).unwrap().replace(
        &format!("rules: {}/rules", repo().display()),
        &format!("rules: {}/benches/sort/rules", repo().display()),
    );
    assert!(text.contains("benches/sort/rules"), "{text}");
    let path = config.with_file_name("sort.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The example config (deploy/triage.yaml) pointed at this stack.
pub fn config(stack: &Stack, wiring: &Wiring) -> PathBuf {
    let base = std::fs::read_to_string(repo().join("deploy/triage.yaml")).unwrap();
    let base = base.split("\nimap:").next().unwrap().to_string();
    let keys: Vec<String> = wiring
        .limits
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| format!("{k}:")))
        .collect();
    let base: String = base
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(k.as_str())))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = repo_paths(&base)
        .replace("limits:\n", &format!("limits:\n{}", wiring.limits))
        + &format!(
            "\nimap: {}\nsmtp: {}\nservice: {{state: {}/triage.sqlite, documents: {}/documents{}}}\n",
            wiring.imap,
            wiring.smtp,
            stack.dir.display(),
            stack.dir.display(),
            wiring.service,
        );
    let path = stack.dir.join("triage.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn triage(stack: &Stack, config: &Path, args: &[&str]) -> Command {
    triage_built_at(env!("CARGO_BIN_EXE_triage"), stack, config, args)
}

/// `triage` from another build (the versus bench's A/B runs).
pub fn triage_built_at(
    program: impl AsRef<std::ffi::OsStr>,
    stack: &Stack,
    config: &Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env("LIVE_PASSWORD", stack.password())
        .env(
            "TRIAGE_LOG",
            std::env::var("TRIAGE_LOG").unwrap_or_else(|_| "info".into()),
        );
    cmd
}

/// A `triage` command that must succeed; its standard output.
pub fn triage_ok(stack: &Stack, config: &Path, args: &[&str]) -> String {
    let out = triage(stack, config, args).output().unwrap();
    assert!(
        out.status.success(),
        "triage {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn run_once(stack: &Stack, config: &Path) -> Output {
    let out = triage(stack, config, &["run", "--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "triage run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `triage run` as a service, its log going to a file in the stack's folder.
pub fn start_service(stack: &Stack, config: &Path, log: &str) -> Child {
    let log = std::fs::File::create(stack.dir.join(log)).unwrap();
    triage(stack, config, &["run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn case(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/cases").join(format!("{name}.eml"))).unwrap()
}

/// A fixture with its Message-ID (and subject) made unique, for backlogs of many copies.
pub fn numbered_case(name: &str, n: usize) -> Vec<u8> {
    let text = String::from_utf8(case(name)).unwrap();
    let id = format!("<case-{name}@reseller.example>");
    assert!(text.contains(&id), "{name} has no Message-ID {id}");
    text.replacen(&id, &format!("<case-{name}-{n}@reseller.example>"), 1)
        .into_bytes()
}

/// Message-IDs of the messages, without angle brackets.
pub fn message_ids(raws: &[Vec<u8>]) -> Vec<String> {
    let parser = MessageParser::default();
    raws.iter()
        .map(|r| {
            parser
                .parse(r)
                .unwrap()
                .message_id()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

pub fn in_reply_tos(raws: &[Vec<u8>]) -> Vec<String> {
    let parser = MessageParser::default();
    raws.iter()
        .map(|r| {
            parser
                .parse(r)
                .unwrap()
                .in_reply_to()
                .as_text()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// What the partner's replies answer (their In-Reply-To), sorted: one entry per reply.
pub fn replied_to(stack: &Stack) -> Vec<String> {
    let mut ids = in_reply_tos(&mailbox(stack, PARTNER, "INBOX"));
    ids.sort();
    ids
}

/// Rows of a query on the service's journal.
pub fn journal_rows(stack: &Stack, sql: &str) -> Vec<Vec<String>> {
    let db = rusqlite::Connection::open(stack.dir.join("triage.sqlite")).unwrap();
    let mut stmt = db.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => String::new(),
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Real(f) => f.to_string(),
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(_) => "<blob>".into(),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `doveadm` against the stack's Dovecot; its standard output.
pub fn doveadm(stack: &Stack, args: &[&str]) -> String {
    let out = Command::new("doveadm")
        .arg("-c")
        .arg(stack.setting("MAILSTACK_DOVECOT_CONF"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doveadm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Message-ID → folder for every message of the desk's mailbox.
pub fn where_is(stack: &Stack) -> Vec<(String, String)> {
    doveadm(
        stack,
        &[
            "-f",
            "tab",
            "fetch",
            "-u",
            DESK,
            "mailbox hdr.message-id",
            "ALL",
        ],
    )
    .lines()
    .skip(1)
    .filter_map(|l| {
        let (folder, id) = l.split_once('\t')?;
        Some((
            id.trim().trim_matches(['<', '>']).to_string(),
            folder.to_string(),
        ))
    })
    .collect()
}

/// APPENDs a message to a user's folder, as a restore from backup would.
pub fn append(stack: &Stack, user: &str, name: &str, raw: &[u8]) {
    append_all(stack, user, name, &[raw.to_vec()])
}

/// APPENDs many messages over one session (a backlog, faster than SMTP).
pub fn append_all(stack: &Stack, user: &str, name: &str, raws: &[Vec<u8>]) {
    block_on(async {
        let mut s = login(stack, user).await;
        for raw in raws {
            s.append(name, None, None, raw).await.unwrap();
        }
        drop(s.logout().await);
    })
}

/// The reason recorded for each message left for a human, by its Message-ID.
pub fn human_reasons(stack: &Stack) -> std::collections::BTreeMap<String, String> {
    journal_rows(
        stack,
        "SELECT message_id, detail FROM audit WHERE outcome = 'left for human'",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect()
}

/// Copies a folder's files (rules, templates) where a test may change them.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
}

/// Waits for a child to exit, killing it after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
