//! The decision core, without any network: the shipped rules against the shipped cases,
//! and the errors a rule editor sees for broken files.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::Command;

use triage::core::config::Config;
use triage::core::plan::Playbook;
use triage::review::casebook;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn playbook() -> Playbook {
    let config = Config::load(&repo().join("deploy/triage.yaml")).expect("config loads");
    Playbook::load(config, None).expect("shipped rules, templates and directory are valid")
}

#[test]
fn shipped_rules_give_the_expected_decision_for_every_case() {
    let book = playbook();
    let cases = casebook::cases(&repo().join("tests/cases")).unwrap();
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for eml in &cases {
        let r = casebook::run_case(&book, eml);
        for f in r.failures {
            failures.push(format!("{}: {f}", eml.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn loop_bait_and_unverified_senders_never_get_an_automatic_answer() {
    let book = playbook();
    for eml in casebook::cases(&repo().join("tests/cases")).unwrap() {
        let name = eml.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("bait-") || name.starts_with("trust-") || name.starts_with("broken-") {
            let plan = book.decide(&std::fs::read(&eml).unwrap());
            assert!(
                plan.outgoing.is_empty(),
                "{name}: would send {:?}",
                plan.outgoing
            );
            assert!(plan.original.human, "{name}: not left for a human");
            assert!(!plan.reason.is_empty(), "{name}: no reason given");
        }
    }
}

#[test]
fn a_keyword_only_in_quoted_history_does_not_decide() {
    let book = playbook();
    let plan = book.decide(
        &std::fs::read(repo().join("tests/cases/forward-quoted-po-history-portal-question.eml"))
            .unwrap(),
    );
    assert_eq!(plan.category.as_str(), "portal_access");
}

#[test]
fn replies_thread_and_reattach_the_partners_documents() {
    let book = playbook();
    let plan = book
        .decide(&std::fs::read(repo().join("tests/cases/en-purchase-order-direct.eml")).unwrap());
    let reply = &plan.outgoing[0];
    assert_eq!(
        reply.in_reply_to.as_deref(),
        Some("case-en-purchase-order-direct@reseller.example")
    );
    assert_eq!(
        reply.references.last().map(String::as_str),
        Some("case-en-purchase-order-direct@reseller.example")
    );
    assert_eq!(reply.attachments, vec!["PO-4500012345.pdf", "Terms.docx"]);
    assert_eq!(plan.keep_documents.len(), 2);
    assert!(plan
        .keep_documents
        .iter()
        .all(|d| d.under == "opportunity/0065e00000AbCdEAAX"));
    assert!(reply.body.contains("Acme Corp"), "{}", reply.body);
}

#[test]
fn huge_messages_are_left_for_a_human_unparsed() {
    let book = playbook();
    let mut raw = b"From: a@reseller.example\r\nSubject: quote\r\n\r\n".to_vec();
    raw.resize(book.config.limits.max_message_bytes + 1, b'x');
    let plan = book.decide(&raw);
    assert!(plan.original.human && plan.outgoing.is_empty());
    assert!(plan.reason.contains("over the limit"), "{}", plan.reason);
}

#[test]
fn history_holds_back_an_answer_and_says_why() {
    use triage::core::restraint::{restrain, Brake, History};
    use triage::core::rules::Respond;
    let book = playbook();
    let raw = std::fs::read(repo().join("tests/cases/en-quote-request-direct.eml")).unwrap();
    let fresh = book.decide(&raw);
    assert_eq!(fresh.respond, Respond::Auto, "{}", fresh.reason);
    assert!(!fresh.outgoing.is_empty());
    let limits = &book.config.limits;

    let mut plan = fresh.clone();
    assert_eq!(restrain(&mut plan, &History::default(), &book.config), None);
    assert_eq!(plan, fresh, "no history: the plan is untouched");

    let cases: Vec<(History, &str, bool)> = vec![
        (
            History {
                answers_to_sender: limits.per_sender.answers,
                ..Default::default()
            },
            "already got 1 automatic quote_request answer in the last 24 h",
            false,
        ),
        (
            History {
                sent_recently: limits.circuit_breaker.answers,
                ..Default::default()
            },
            "circuit breaker opened",
            true,
        ),
        (
            History {
                breaker_open: Some("since 2026-11-23T10:00:00Z: 301 messages".into()),
                ..Default::default()
            },
            "triage breaker reset",
            false,
        ),
        (
            History {
                bounced: vec![(
                    fresh.outgoing[0].to[0].clone(),
                    "2026-11-30T10:00:00Z".into(),
                )],
                ..Default::default()
            },
            "bounced; no automatic answer to it until 2026-11-30",
            false,
        ),
    ];
    for (history, words, trips) in cases {
        let mut plan = fresh.clone();
        let brake = restrain(&mut plan, &history, &book.config).expect(words);
        assert_eq!(matches!(brake, Brake::Tripped(_)), trips, "{words}");
        assert!(plan.reason.contains(words), "{words}: {}", plan.reason);
        assert_eq!(plan.respond, Respond::None);
        assert!(plan.outgoing.is_empty() && plan.keep_documents.is_empty());
        assert!(plan.original.human, "{words}: not left for a human");
        assert_eq!(
            plan.category, fresh.category,
            "the category stays for the audit"
        );
        assert!(plan
            .evidence
            .iter()
            .any(|e| e.starts_with("held back: reply to")));
    }
}

#[test]
fn only_a_bounce_of_our_own_mail_blocks_an_address() {
    let book = playbook();
    let ours = std::fs::read(repo().join("tests/cases/bait-bounce-of-our-reply.eml")).unwrap();
    let ours_text = String::from_utf8(ours.clone()).unwrap();
    assert!(
        ours_text.contains(".triage@triage.example.com>"),
        "the fixture names one of our ids"
    );
    assert_eq!(
        book.decide(&ours).bounced,
        vec!["alex@gone.example".to_string()]
    );
    // The same report about somebody else's message blocks nobody.
    let theirs = String::from_utf8(ours.clone())
        .unwrap()
        .replace("@triage.example.com>", "@mail.reseller.example>");
    let plan = book.decide(theirs.as_bytes());
    assert!(plan.bounced.is_empty(), "{:?}", plan.bounced);
    assert!(plan.outgoing.is_empty() && plan.original.human);
    // Unauthenticated, or naming the desk's own people: nobody is blocked.
    let text = ours_text;
    let unverified = text.replace("dmarc=pass", "dmarc=none");
    assert!(book.decide(unverified.as_bytes()).bounced.is_empty());
    for internal in [
        "partnerorderops@example.com",
        "rep.one@example.com",
        "partnersupport@example.com",
    ] {
        let named = text.replace("alex@gone.example", internal);
        let plan = book.decide(named.as_bytes());
        assert!(plan.bounced.is_empty(), "{internal}: {:?}", plan.bounced);
    }
    // Only an id of the exact shape we write counts, not any id on our domain.
    let loose = text.replace(".triage@triage.example.com>", "@triage.example.com>");
    assert!(book.decide(loose.as_bytes()).bounced.is_empty());
}

/// A copy of the shipped config, rules and templates in a temp folder, for breaking.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "triage-check-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    for sub in ["rules", "response-templates", "deploy", "deploy/directory"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for sub in ["rules", "response-templates", "deploy", "deploy/directory"] {
        for e in std::fs::read_dir(repo().join(sub)).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
            }
        }
    }
    dir
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn check(dir: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["check", "--config"])
        .arg(dir.join("deploy/triage.yaml"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn check_accepts_the_shipped_config() {
    let (code, err) = check(&repo());
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_refuses_an_idle_refresh_longer_than_five_minutes() {
    let dir = scratch();
    let cfg = dir.join("deploy/triage.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("idle_refresh_seconds: 240"));
    let text = text.replace("idle_refresh_seconds: 240", "idle_refresh_seconds: 1800");
    let line = text
        .lines()
        .position(|l| l.contains("idle_refresh_seconds"))
        .unwrap()
        + 1;
    std::fs::write(&cfg, text).unwrap();
    let (code, err) = check(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "deploy/triage.yaml:{line}:3: imap.idle_refresh_seconds: 1800 is out of range"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A setting is found by its key path, not by the first place its name stands: with
/// `smtp:` above `imap:`, `imap.timeout_seconds: 0` is the imap line.
#[test]
fn check_points_at_the_key_path_not_the_first_occurrence() {
    let dir = scratch();
    let cfg = dir.join("deploy/triage.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (before, imap_and_after) = text.split_at(text.find("\nimap:").expect("an imap section"));
    let smtp_at = imap_and_after
        .find("\nsmtp:")
        .expect("an smtp section after imap");
    let (imap, smtp_and_after) = imap_and_after.split_at(smtp_at);
    // The smtp section (and what follows it) moved above imap, both with a timeout.
    let imap: Vec<&str> = imap
        .lines()
        .filter(|l| !l.starts_with("  timeout_seconds:"))
        .collect();
    let imap = imap.join("\n") + "\n  timeout_seconds: 0";
    let smtp = if smtp_and_after.contains("timeout_seconds") {
        smtp_and_after.to_string()
    } else {
        smtp_and_after.replacen("\nsmtp:", "\nsmtp:\n  timeout_seconds: 30", 1)
    };
    let text = format!("{before}{smtp}\n{imap}\n");
    let lines: Vec<&str> = text.lines().collect();
    let imap_line = lines.iter().position(|l| *l == "imap:").unwrap();
    let smtp_line = lines.iter().position(|l| *l == "smtp:").unwrap();
    assert!(smtp_line < imap_line, "smtp must come first here");
    let line = imap_line
        + lines[imap_line..]
            .iter()
            .position(|l| l.trim() == "timeout_seconds: 0")
            .unwrap()
        + 1;
    std::fs::write(&cfg, &text).unwrap();
    let (code, err) = check(&dir);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "deploy/triage.yaml:{line}:3: imap.timeout_seconds: must be at least 1"
        )),
        "expected line {line}:\n{err}\n{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_names_file_line_and_column_of_each_problem() {
    let dir = scratch();
    let rules = dir.join("rules/10-procedures.yaml");
    let text = std::fs::read_to_string(&rules).unwrap();
    // an unknown condition, on a line we know
    let text = text.replacen(
        "    when: {is: asks_about_nfr}",
        "    when: {subjekt: nfr}",
        1,
    );
    let line = text.lines().position(|l| l.contains("subjekt")).unwrap() + 1;
    std::fs::write(&rules, text).unwrap();
    // a template with an undefined variable
    let t = dir.join("response-templates/poe_submitted.txt");
    std::fs::write(
        &t,
        std::fs::read_to_string(&t)
            .unwrap()
            .replace("{{ deal.deal_id }}", "{{ deal.dealid }}"),
    )
    .unwrap();
    // a directory export without a column
    std::fs::write(
        dir.join("deploy/directory/partners.csv"),
        "partner_domain,partner_name\nx.example,X\n",
    )
    .unwrap();

    let (code, err) = check(&dir);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("rules/10-procedures.yaml:{line}:")),
        "{err}"
    );
    assert!(err.contains("unknown condition `subjekt`"), "{err}");
    assert!(
        err.contains("partners.csv:1:1: missing column \"cam_email\""),
        "{err}"
    );

    // with the rules fixed, the template problem shows (rules must load to know its context)
    std::fs::copy(repo().join("rules/10-procedures.yaml"), &rules).unwrap();
    std::fs::copy(
        repo().join("deploy/directory/partners.csv"),
        dir.join("deploy/directory/partners.csv"),
    )
    .unwrap();
    let (code, err) = check(&dir);
    assert_ne!(code, 0);
    assert!(
        err.contains("poe_submitted.txt:10:") && err.contains("deal.dealid"),
        "{err}"
    );

    // invalid YAML syntax
    std::fs::write(
        dir.join("rules/20-broken.yaml"),
        "rules:\n  - name: x\n    when: {subject: [unclosed\n",
    )
    .unwrap();
    let (code, err) = check(&dir);
    assert_ne!(code, 0);
    assert!(err.contains("rules/20-broken.yaml:"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn classify_refuses_an_invalid_config_and_prints_json_for_a_valid_one() {
    let dir = scratch();
    std::fs::write(dir.join("rules/20-broken.yaml"), "rules: [{name: x}]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["classify", "--format", "json", "--config"])
        .arg(dir.join("deploy/triage.yaml"))
        .arg(repo().join("tests/cases/en-quote-request-direct.eml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    std::fs::remove_dir_all(&dir).ok();

    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .current_dir(repo())
        .args([
            "classify",
            "--format",
            "json",
            "--config",
            "deploy/triage.yaml",
            "--directory",
            "deploy/directory",
        ])
        .arg("tests/cases/en-quote-request-direct.eml")
        .arg("tests/cases/broken-empty.eml")
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let first = &lines[0];
    for key in [
        "file",
        "message_id",
        "category",
        "rule",
        "respond",
        "reason",
        "fields",
        "missing",
        "outgoing",
    ] {
        assert!(first.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(first["respond"], "auto");
    assert_eq!(first["outgoing"][0]["kind"], "reply");
    assert_eq!(lines[1]["respond"], "none");
}

#[test]
fn the_desks_own_mail_is_never_answered_under_a_partners_from() {
    let book = playbook();
    let raw = std::fs::read(repo().join("tests/cases/en-quote-request-direct.eml")).unwrap();
    assert!(
        !book.decide(&raw).outgoing.is_empty(),
        "the clean message is answered"
    );
    for (header, words) in [
        (
            "Return-Path: <PartnerSupport@example.com>",
            "Return-Path is the desk's own address",
        ),
        (
            "Sender: partnerorderops@example.com",
            "Sender is the desk's own address",
        ),
    ] {
        let mut with = format!("{header}\r\n").into_bytes();
        with.extend_from_slice(&raw);
        let plan = book.decide(&with);
        assert!(plan.outgoing.is_empty() && plan.original.human, "{header}");
        assert!(plan.reason.contains(words), "{header}: {}", plan.reason);
    }
}

/// `triage classify` with the shipped config on the direct quote request.
fn classify_quote_request(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["classify", "--config"])
        .arg(repo().join("deploy/triage.yaml"))
        .args(args)
        .arg(repo().join("tests/cases/en-quote-request-direct.eml"))
        .output()
        .unwrap()
}

/// "Why did my rule not fire?": the named rule's conditions, each held or failed and on
/// what text, and the rule that decided instead.
#[test]
fn why_not_walks_the_rule_and_names_the_rule_that_took_the_message() {
    let run = |rule: &str| classify_quote_request(&["--why-not", rule]);
    let out = run("nfr-seats");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rule nfr-seats: does not hold"), "{text}");
    assert!(text.contains("✗ is asks_about_nfr"), "{text}");
    assert!(
        text.contains("tested on subject \"Quote request - Acme Corp"),
        "{text}"
    );
    assert!(
        text.contains("rule quote-request matches the message and decides it"),
        "{text}"
    );
    let out = run("quote-request");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rule quote-request: holds"), "{text}");
    assert!(text.contains("✓ subject matches"), "{text}");
    let out = run("quote-reqest");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("did you mean `quote-request`?"), "{said}");
}

/// A template preview: the reply a message would get with another template.
#[test]
fn render_previews_a_template_on_a_message() {
    let run = |template: &str| classify_quote_request(&["--render", template]);
    let out = run("quote_request_ops_copied");
    assert!(out.status.success());
    let mail = String::from_utf8_lossy(&out.stdout);
    assert!(
        mail.starts_with("To: alice@reseller.example\nCc: rep.one@example.com"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: Re: Quote request - Acme Corp"),
        "{mail}"
    );
    assert!(
        mail.contains(
            "Partner Order Operations (partnerorderops@example.com) is\nalready on this email"
        ),
        "{mail}"
    );
    let out = run("quote_requst_routed");
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("did you mean `quote_request_routed`?"),
        "{said}"
    );
}

/// A failing rule case shows what it expects beside what the rules decided.
#[test]
fn a_failing_case_shows_expected_and_actual_side_by_side() {
    let dir = std::env::temp_dir().join(format!("triage-case-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("tests/cases/en-quote-request-direct.eml"),
        dir.join("q.eml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("q.expect.yaml"),
        "category: purchase_order\nrule: purchase-order\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["test", "--config"])
        .arg(repo().join("deploy/triage.yaml"))
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1]
            .split_whitespace()
            .eq(["field", "expected", "actual"]),
        "{text}"
    );
    assert!(
        lines[2]
            .split_whitespace()
            .eq(["category", "purchase_order", "quote_request"]),
        "{text}"
    );
    assert!(
        lines[3]
            .split_whitespace()
            .eq(["rule", "purchase-order", "quote-request"]),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
