//! OAuth2 sign-in against a real stack that takes tokens only: Dovecot's oauth2 passdb
//! (XOAUTH2, OAUTHBEARER; no password mechanism at all) checks every token against the
//! test's own authorization server on loopback, and Postfix's submission signs in
//! through Dovecot's SASL. The service reads and answers with tokens it refreshed
//! itself, through expiry and rotation, and reports a revoked grant loudly.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::authority::{Authority, CLIENT_ID, CLIENT_SECRET};
use support::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn write_private(path: &Path, value: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The service wired to the stack with OAuth2 on both sides (the same settings, so one
/// token source), the refresh token and client secret in files.
fn oauth_wiring(stack: &Stack, auth: &Authority, http: u16, extra: &str) -> (Wiring, PathBuf) {
    let secrets = stack.dir.join("secrets");
    let refresh = secrets.join("refresh-token");
    write_private(&refresh, &auth.refresh_token_for(DESK));
    write_private(&secrets.join("client-secret"), CLIENT_SECRET);
    let oauth = format!(
        "{{provider: other, token_url: \"{}\", device_url: \"{}\", client_id: {CLIENT_ID}, \
         client_secret: {{file: {}}}, refresh_token: {{file: {}}}{extra}}}",
        auth.url("/token"),
        auth.url("/devicecode"),
        secrets.join("client-secret").display(),
        refresh.display()
    );
    let mut wiring = Wiring::plain(stack);
    // TLS on both sides, as with Microsoft's and Google's servers.
    wiring.imap = format!(
        "{{host: 127.0.0.1, port: {}, tls: implicit, ca_file: {}, username: {DESK}, oauth2: {oauth}, poll_seconds: 1, timeout_seconds: 10}}",
        stack.port("IMAPS"),
        stack.ca().display()
    );
    wiring.smtp = format!(
        "{{host: 127.0.0.1, port: {}, tls: starttls, ca_file: {}, username: {DESK}, oauth2: {oauth}, timeout_seconds: 10, self_copy_wait_seconds: 5}}",
        stack.port("SUBMISSION"),
        stack.ca().display()
    );
    wiring.service = format!(", http: \"127.0.0.1:{http}\", stale_after_seconds: 120");
    (wiring, refresh)
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

fn granted_refreshes(auth: &Authority) -> usize {
    auth.grants()
        .iter()
        .filter(|g| g.grant_type == "refresh_token" && g.granted)
        .count()
}

/// No token the authority issued, and not the client secret, in any of these bytes.
fn assert_no_secret(auth: &Authority, what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for token in auth.issued() {
        assert!(!text.contains(&token), "{what} contains a token");
    }
    assert!(
        !text.contains(CLIENT_SECRET),
        "{what} contains the client secret"
    );
}

#[test]
fn answers_with_tokens_it_refreshed_through_expiry_rotation_and_restart() {
    // Tokens live 4 s and every refresh rotates the refresh token.
    let auth = Authority::start(secs(4), true);
    let Some(stack) = Stack::start_oauth2("oauth", &auth.url("/introspect")) else {
        return;
    };
    // Postfix drops an idle submission connection after 3 s, so later answers sign in
    // to SMTP again, with whatever token is current then.
    stack.postconf("smtpd_timeout=3s");
    // Tokens only: Dovecot offers no password mechanism at all.
    let mut greeting = String::new();
    let imap = std::net::TcpStream::connect(("127.0.0.1", stack.port("IMAP"))).unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(imap), &mut greeting).unwrap();
    assert!(
        greeting.contains("AUTH=XOAUTH2 AUTH=OAUTHBEARER"),
        "{greeting}"
    );
    assert!(!greeting.contains("AUTH=PLAIN") && greeting.contains("LOGINDISABLED"));
    let http = free_port();
    // XOAUTH2 forced (Dovecot offers OAUTHBEARER too, which `auto` would take).
    let (wiring, refresh) = oauth_wiring(
        &stack,
        &auth,
        http,
        ", refresh_ahead_seconds: 1, mechanism: xoauth2",
    );
    let first_refresh = read_token(&refresh);
    let cfg = config(&stack, &wiring);

    let mut service = start_service(&stack, &cfg, "service.log");
    wait_http(http, "/readyz", 200, secs(20));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(20));

    // The first access token expires; Dovecot restarts, so the mailbox is signed in to
    // again: only a token refreshed meanwhile gets in.
    std::thread::sleep(secs(6));
    stack.restart_dovecot(|| {});
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
    wait_for(&stack, PARTNER, "INBOX", 2, secs(30));
    let metrics = wait_http(http, "/metrics", 200, secs(5));
    assert!(
        metric(
            &metrics,
            "triage_oauth2_token_refreshes_total{account=\"imap+smtp\",outcome=\"ok\"}"
        ) >= 3.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "triage_oauth2_token_ok"), 1.0);
    signal(&service, "TERM");
    assert!(wait_exit(&mut service, secs(20)).success());

    // Rotation: the file now holds the refresh token the authority expects, the first
    // one no longer works, and the file is still private.
    let saved = read_token(&refresh);
    assert_ne!(saved, first_refresh);
    assert!(
        auth.refresh_token_valid(&saved),
        "the saved refresh token is the current one"
    );
    assert!(
        !auth.refresh_token_valid(&first_refresh),
        "the first one was rotated away"
    );
    let mode = std::fs::metadata(&refresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let refreshes = granted_refreshes(&auth);
    assert!(refreshes >= 3, "{refreshes} refreshes");

    // A new process starts from the saved token alone.
    let mut service = start_service(&stack, &cfg, "service-2.log");
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 3));
    wait_for(&stack, PARTNER, "INBOX", 3, secs(30));
    signal(&service, "TERM");
    assert!(wait_exit(&mut service, secs(20)).success());

    // Each partner message answered once; Dovecot let the desk in with several
    // different tokens, all from the refreshes above (no password anywhere).
    let replied = replied_to(&stack);
    assert_eq!(replied.len(), 3, "{replied:?}");
    replied.windows(2).for_each(|w| assert_ne!(w[0], w[1]));
    let desk_tokens: std::collections::BTreeSet<String> = auth
        .introspections()
        .into_iter()
        .filter(|(t, ok)| *ok && !t.starts_with("reader:"))
        .map(|(t, _)| t)
        .collect();
    assert!(desk_tokens.len() >= 3, "{} tokens used", desk_tokens.len());
    let dovecot = std::fs::read_to_string(stack.dir.join("stack/log/dovecot.log")).unwrap();
    assert!(
        dovecot.contains("method=XOAUTH2") && !dovecot.contains("method=OAUTHBEARER"),
        "signed in by XOAUTH2, as forced"
    );
    // Postfix's submission signed the desk in more than once (its idle connections are
    // dropped after 3 s), by token each time.
    let postfix = std::fs::read_to_string(stack.dir.join("stack/log/postfix.log")).unwrap();
    let sasl: Vec<&str> = postfix
        .lines()
        .filter_map(|l| l.split("sasl_method=").nth(1))
        .collect();
    assert!(sasl.len() >= 2, "{sasl:?}");
    assert!(sasl.iter().all(|m| m.starts_with("XOAUTH2")), "{sasl:?}");

    // Tokens are nowhere: logs, the journal, the audit log.
    for log in ["service.log", "service-2.log"] {
        assert_no_secret(&auth, log, &std::fs::read(stack.dir.join(log)).unwrap());
    }
    assert_no_secret(
        &auth,
        "journal",
        &std::fs::read(stack.dir.join("triage.sqlite")).unwrap(),
    );
    let audit = triage(&stack, &cfg, &["audit", "--format", "json"])
        .output()
        .unwrap();
    assert!(audit.status.success());
    assert_no_secret(&auth, "audit", &audit.stdout);
}

#[test]
fn a_refused_token_is_renewed_once_and_a_revoked_grant_turns_readiness_red() {
    // Long-lived tokens: every refresh below is one the service asked for because of
    // what the test did, not the regular one ahead of expiry.
    let auth = Authority::start(secs(120), false);
    let Some(stack) = Stack::start_oauth2("oauth-revoked", &auth.url("/introspect")) else {
        return;
    };
    stack.postconf("smtpd_timeout=3s");
    let http = free_port();
    let (wiring, refresh) = oauth_wiring(&stack, &auth, http, ", refresh_ahead_seconds: 10");
    let cfg = config(&stack, &wiring);
    let mut service = start_service(&stack, &cfg, "service.log");
    wait_http(http, "/readyz", 200, secs(20));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(20));
    let before = granted_refreshes(&auth);
    assert_eq!(before, 1, "one token for IMAP and SMTP together");

    // The servers stop accepting the current token although it has not expired. SMTP
    // first: its idle connection is gone (Postfix drops it after 3 s; we wait 5), the IMAP session
    // lives on, so the next answer signs in to SMTP with the old token, is refused, and
    // gets exactly one new token.
    std::thread::sleep(secs(5));
    auth.forget_access_tokens();
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 2));
    wait_for(&stack, PARTNER, "INBOX", 2, secs(30));
    assert_eq!(
        granted_refreshes(&auth),
        before + 1,
        "one renewal for SMTP, not a loop"
    );
    // Then IMAP: Dovecot restarts, the sign-in with the forgotten token is refused, one
    // new token.
    auth.forget_access_tokens();
    stack.restart_dovecot(|| {});
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 3));
    wait_for(&stack, PARTNER, "INBOX", 3, secs(30));
    assert_eq!(
        granted_refreshes(&auth),
        before + 2,
        "one renewal for IMAP, not a loop"
    );
    let read_log = |log: &str| std::fs::read_to_string(stack.dir.join(log)).unwrap();
    let postfix = read_log("stack/log/postfix.log");
    assert!(
        postfix.contains("SASL OAUTHBEARER authentication failed"),
        "SMTP refused the old token: {postfix}"
    );
    assert!(
        postfix.matches("sasl_method=OAUTHBEARER").count() >= 2,
        "and took the new one"
    );
    assert!(
        read_log("service.log")
            .matches("refused the OAuth2 token")
            .count()
            == 2
    );

    // The user revokes the grant while a partner's message comes in. The IMAP session
    // still reads it, but the answer's SMTP sign-in is refused and the renewal fails with
    // the endpoint's error: readiness says so, without a tight retry loop, and the
    // message waits (it is not the message's fault).
    auth.revoke_all();
    let revoked_at = Instant::now();
    std::thread::sleep(secs(5));
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 4));
    let deadline = Instant::now() + secs(20);
    let why = loop {
        let (code, why) = http_get(http, "/readyz");
        if code == 503 && why.contains("invalid_grant") {
            break why;
        }
        assert!(Instant::now() < deadline, "{code} {why}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        why.contains("AADSTS700082"),
        "the endpoint's own words: {why}"
    );
    std::thread::sleep(secs(12));
    let attempts = auth.grants().iter().filter(|g| g.at > revoked_at).count();
    assert!(
        (1..=3).contains(&attempts),
        "{attempts} token requests in {:?} after the revocation",
        revoked_at.elapsed()
    );
    let metrics = wait_http(http, "/metrics", 200, secs(5));
    assert_eq!(metric(&metrics, "triage_oauth2_token_ok"), 0.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "triage_oauth2_token_refreshes_total{account=\"imap+smtp\",outcome=\"failed\"}"
        ) >= 1.0
    );
    assert_eq!(metric(&metrics, "triage_imap_up"), 0.0);
    assert_eq!(
        http_get(http, "/healthz").0,
        200,
        "alive, waiting for a fix"
    );
    let log = std::fs::read_to_string(stack.dir.join("service.log")).unwrap();
    assert!(
        log.contains("OAuth2 token refresh for imap+smtp failed") && log.contains("invalid_grant"),
        "{log}"
    );

    // The operator signs in again (as `triage auth` would leave it): the service picks
    // the new refresh token up at its next try, without a restart.
    assert_eq!(mailbox(&stack, PARTNER, "INBOX").len(), 3, "no answer yet");
    assert!(
        human_reasons(&stack).is_empty(),
        "{:?}",
        human_reasons(&stack)
    );
    write_private(&refresh, &auth.refresh_token_for(DESK));
    wait_http(http, "/readyz", 200, secs(60));
    wait_for(&stack, PARTNER, "INBOX", 4, secs(30));
    assert_eq!(replied_to(&stack).len(), 4);
    signal(&service, "TERM");
    assert!(wait_exit(&mut service, secs(20)).success());
    assert_no_secret(
        &auth,
        "service.log",
        &std::fs::read(stack.dir.join("service.log")).unwrap(),
    );
}

#[test]
fn triage_auth_gets_the_first_refresh_token_and_tests_both_sign_ins() {
    let auth = Authority::start(secs(60), true);
    auth.set_app_user(DESK);
    let Some(stack) = Stack::start_oauth2("oauth-consent", &auth.url("/introspect")) else {
        return;
    };
    let extra = format!(", authorize_url: \"{}\"", auth.url("/authorize"));
    let (wiring, refresh) = oauth_wiring(&stack, &auth, free_port(), &extra);
    std::fs::remove_file(&refresh).unwrap();
    let cfg = config(&stack, &wiring);
    let mut printed = Vec::new();

    // Before anyone consented, the check says what is missing.
    let out = triage(&stack, &cfg, &["auth", "--check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("FAILED") && text.contains("refresh-token"),
        "{text}"
    );

    // The device-code flow: the code to type in is shown, the token saved, both
    // servers signed in to with it.
    let out = triage(&stack, &cfg, &["auth", "--device"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("enter the code WDJB-MJHT"), "{text}");
    assert!(text.contains("Refresh token saved"), "{text}");
    assert!(
        text.contains(&format!(
            "IMAP 127.0.0.1:{}: signed in as {DESK}",
            stack.port("IMAPS")
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "SMTP 127.0.0.1:{}: signed in as {DESK}",
            stack.port("SUBMISSION")
        )),
        "{text}"
    );
    assert!(auth.refresh_token_valid(&read_token(&refresh)));
    let mode = std::fs::metadata(&refresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    printed.extend(out.stdout);
    printed.extend(out.stderr);

    // The code flow: the operator opens the printed URL and pastes back the address the
    // browser landed on, with the code and the same state.
    std::fs::remove_file(&refresh).unwrap();
    let mut child = triage(&stack, &cfg, &["auth"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
        if line.starts_with(&auth.url("/authorize")) {
            break line.trim().to_string();
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let state = url
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut stdin,
        format!("http://localhost/?code=good-code&state={state}\n").as_bytes(),
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(
        rest.contains("Refresh token saved") && rest.contains("SMTP"),
        "{rest}"
    );
    assert!(auth.refresh_token_valid(&read_token(&refresh)));
    printed.extend(rest.into_bytes());

    // App-only access and an operator's token broker need no consent: --check tests them.
    for grant in [
        ", grant: client_credentials".to_string(),
        format!(", grant: command, command: [sh, -c, \"echo reader:{DESK}\"]"),
    ] {
        let (wiring, _) = oauth_wiring(&stack, &auth, free_port(), &grant);
        let cfg = config(&stack, &wiring);
        let out = triage(&stack, &cfg, &["auth", "--check"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{grant}: {text}");
        assert_eq!(text.matches("signed in as").count(), 2, "{text}");
        printed.extend(out.stdout);
        printed.extend(out.stderr);
    }
    assert!(auth
        .grants()
        .iter()
        .any(|g| g.grant_type == "client_credentials" && g.granted));
    assert_no_secret(&auth, "triage auth's output", &printed);
}

#[test]
fn a_rotated_refresh_token_that_cannot_be_saved_is_reported_not_lost_silently() {
    let auth = Authority::start(secs(120), true);
    let Some(stack) = Stack::start_oauth2("oauth-unsaved", &auth.url("/introspect")) else {
        return;
    };
    let http = free_port();
    let (mut wiring, refresh) = oauth_wiring(&stack, &auth, http, "");
    // The refresh token in an environment variable, where no rotated one can be written.
    let from_file = format!("refresh_token: {{file: {}}}", refresh.display());
    let from_env = "refresh_token: {env: LIVE_REFRESH_TOKEN}";
    wiring.imap = wiring.imap.replace(&from_file, from_env);
    wiring.smtp = wiring.smtp.replace(&from_file, from_env);
    let cfg = config(&stack, &wiring);

    let check = triage(&stack, &cfg, &["check"]).output().unwrap();
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("a rotated refresh token cannot be saved"),
        "{said}"
    );

    let log = std::fs::File::create(stack.dir.join("service.log")).unwrap();
    let mut service = triage(&stack, &cfg, &["run"])
        .env("LIVE_REFRESH_TOKEN", auth.refresh_token_for(DESK))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // The service works on with the rotated token it holds in memory…
    deliver(&stack, &numbered_case("en-quote-request-ops-copied", 1));
    wait_for(&stack, PARTNER, "INBOX", 1, secs(30));
    // …and says, until someone acts, that a restart would not sign in.
    let (code, why) = http_get(http, "/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(
        why.contains("a rotated refresh token could not be saved"),
        "{why}"
    );
    let metrics = http_get(http, "/metrics").1;
    assert_eq!(metric(&metrics, "triage_oauth2_token_ok"), 0.0, "{metrics}");
    signal(&service, "TERM");
    assert!(wait_exit(&mut service, secs(20)).success());
    let log = std::fs::read(stack.dir.join("service.log")).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("rotated but NOT saved"), "{text}");
    assert_no_secret(&auth, "service.log", &log);
}
