//! The CRM steps in "Salesforce" (the loopback contract server in support/salesforce.rs,
//! not Salesforce) against the real Dovecot and Postfix: a PO, a complete PoE, and a PoE
//! whose registration Salesforce already shows Closed-Won though the nightly export says
//! Approved. Then the same with the service SIGKILLed right after each change reached
//! the server: nothing uploaded, changed or posted twice.

mod support;

use std::time::Duration;

use support::salesforce::{Fault, Org, Registration, CLIENT_SECRET};
use support::*;

fn org() -> Org {
    let org = Org::start();
    org.with(|s| {
        s.registrations = vec![
            Registration {
                id: "a0Xxx0000000042AAA".into(),
                deal_id: "DR-2026-0042".into(),
                status: "Approved".into(),
                locked: false,
            },
            Registration {
                id: "a0Xxx0000000050AAA".into(),
                deal_id: "DR-2026-0050".into(),
                status: "Closed-Won".into(),
                locked: true,
            },
            // Approved, but a validation rule of the org refuses the change.
            Registration {
                id: "a0Xxx0000000053AAA".into(),
                deal_id: "DR-2026-0053".into(),
                status: "Approved".into(),
                locked: true,
            },
        ];
        s.users = vec![
            ("005xx000000EastAAA".into(), "cam.east@example.com".into()),
            ("005xx000000DachAAA".into(), "cam.dach@example.com".into()),
            ("005xx000000JapnAAA".into(), "cam.japan@example.com".into()),
        ];
    });
    org
}

fn configure(stack: &Stack, org: &Org) -> std::path::PathBuf {
    let cfg = config(stack, &Wiring::plain(stack));
    let secret = stack.dir.join("sf-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "crm: {{salesforce: {{instance_url: '{}', client_id: {}, client_secret: {{file: {}}}, timeout_seconds: 5}}}}\n",
        org.url(),
        support::salesforce::CLIENT_ID,
        secret.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

const MAIL: [&str; 4] = [
    "en-purchase-order-direct",
    "poe-complete-en",
    "doc-poe-fields-only-in-docx-de",
    "poe-ja-complete",
];

/// What a finished run must have left in the org, whatever happened on the way.
fn assert_each_step_once(org: &Org) {
    org.with(|s| {
        let mut descriptions: Vec<&str> =
            s.versions.iter().map(|v| v.description.as_str()).collect();
        descriptions.sort_unstable();
        let n = descriptions.len();
        descriptions.dedup();
        assert_eq!(descriptions.len(), n, "an upload twice: {:?}", s.versions);
        // The PO and its terms on the opportunity, the PoE on the linked opportunity.
        assert_eq!(n, 3, "{:?}", s.versions);
        assert!(s
            .versions
            .iter()
            .all(|v| v.first_publish == "0065e00000AbCdEAAX" && v.bytes > 0));
        assert!(s.versions.iter().any(|v| v.title == "PO-4500012345.pdf"));
        assert_eq!(s.patches, 1, "one status change");
        assert_eq!(s.registrations[0].status, "Closed-Won");
        assert_eq!(s.feed.len(), 1, "one note: {:?}", s.feed);
        let note = &s.feed[0];
        assert_eq!(note.subject, "0065e00000AbCdEAAX");
        assert_eq!(note.mentions, ["005xx000000EastAAA"]);
        let poe = s
            .versions
            .iter()
            .find(|v| v.title.starts_with("PoE"))
            .expect("the PoE uploaded");
        assert_eq!(note.files.len(), 1, "one file on the note");
        assert_eq!(note.files[0], poe.document_id, "the note links the PoE");
    });
}

#[test]
fn each_crm_step_happens_once_in_salesforce() {
    let Some(stack) = Stack::start("salesforce") else {
        return;
    };
    let org = org();
    // The session expires on the first call, then the org is over its API limit once.
    org.with(|s| {
        s.faults.extend([
            Fault::ExpireSessions,
            Fault::LimitExceeded,
            Fault::Unavailable,
        ])
    });
    let cfg = configure(&stack, &org);
    for name in MAIL {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 4, Duration::from_secs(15));
    let first = run_once(&stack, &cfg);
    run_once(&stack, &cfg);
    assert_each_step_once(&org);
    assert!(
        org.with(|s| s.token_requests) >= 2,
        "the expired session was renewed"
    );

    // Salesforce's own answer for the registration it shows closed, and nothing sent.
    let human = human_reasons(&stack);
    assert!(
        human.values().any(|r| r.contains("DR-2026-0050")
            && r.contains("Closed-Won")
            && r.contains("nothing was sent")),
        "{human:?}"
    );
    let steps = journal_rows(&stack, "SELECT kind, state, place FROM crm_actions");
    let done = steps.iter().filter(|s| s[1] == "done").count();
    let refused: Vec<_> = steps.iter().filter(|s| s[1] == "refused").collect();
    assert_eq!((done, refused.len()), (4, 2), "{steps:?}");
    // The org's validation rule, in its own words.
    assert!(
        human
            .values()
            .any(|r| r.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION")
                && r.contains("A closed registration cannot be changed")),
        "{human:?}"
    );
    let refused = journal_rows(
        &stack,
        "SELECT detail FROM audit WHERE outcome = 'crm refused'",
    );
    assert_eq!(refused.len(), 2, "{refused:?}");

    // No secret or token in the logs, the journal or the audit.
    let logs = String::from_utf8_lossy(&first.stderr).to_string();
    let db = std::fs::read(stack.dir.join("triage.sqlite")).unwrap();
    for secret in [CLIENT_SECRET, "00Dxx0000001gPL!"] {
        assert!(!logs.contains(secret), "{secret} in the log");
        assert!(
            !String::from_utf8_lossy(&db).contains(secret),
            "{secret} in the journal"
        );
    }
}

#[test]
fn a_kill_right_after_each_crm_call_changes_nothing_twice() {
    let Some(stack) = Stack::start("salesforce-kill") else {
        return;
    };
    let org = org();
    let cfg = configure(&stack, &org);
    for name in MAIL {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 4, Duration::from_secs(15));
    let routes = [
        "POST /sobjects/ContentVersion",
        "PATCH /sobjects/Deal_Registration__c",
        "POST /chatter/feed-elements",
    ];
    let mut kills = 0;
    for _ in 0..20 {
        let mut child = triage(&stack, &cfg, &["run", "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The next change of each kind kills this run right after it took effect.
        let pid = child.id();
        org.with(|s| s.kill_on = routes.iter().map(|r| ((*r).to_string(), pid)).collect());
        let status = wait_exit(&mut child, Duration::from_secs(60));
        if status.success() {
            break;
        }
        kills += 1;
    }
    org.with(|s| s.kill_on.clear());
    run_once(&stack, &cfg);
    assert!(kills >= 3, "killed after each kind of change: {kills}");
    assert_each_step_once(&org);
    eprintln!("salesforce kill test: {kills} SIGKILLs");
}
