//! The CRM steps in export mode, against the real Dovecot and Postfix: a PO, a complete
//! PoE and a PoE whose registration is already Closed-Won. Afterwards the day's import
//! files hold exactly one upload of the PO onto its opportunity, one of the PoE onto the
//! registration's linked opportunity, one status change and one note naming the Channel
//! Manager; the closed registration went to a person. A second run writes nothing more.

mod support;

use std::time::Duration;

use support::*;

fn read_day(folder: &std::path::Path, file: &str) -> String {
    let day = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .next()
        .expect("a folder for today")
        .unwrap()
        .path();
    std::fs::read_to_string(day.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn the_crm_steps_are_exported_once_as_import_files() {
    let Some(stack) = Stack::start("crm") else {
        return;
    };
    let cfg = config(&stack, &Wiring::plain(&stack));
    let export = stack.dir.join("crm-import");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "crm: {{export: {{folder: {}}}}}\n",
        export.display()
    ));
    std::fs::write(&cfg, text).unwrap();

    for name in [
        "en-purchase-order-direct",
        "poe-complete-en",
        "poe-registration-already-closed",
    ] {
        deliver(&stack, &case(name));
    }
    wait_for(&stack, DESK, "INBOX", 3, Duration::from_secs(15));
    run_once(&stack, &cfg);
    run_once(&stack, &cfg); // a second pass writes nothing more

    let uploads = read_day(&export, "ContentVersion.csv");
    let lines: Vec<&str> = uploads.lines().collect();
    assert_eq!(
        lines[0],
        "Title,Description,VersionData,PathOnClient,FirstPublishLocationId"
    );
    // The PO message carries the PO and the terms: both are kept, both uploaded.
    assert_eq!(
        lines.len(),
        4,
        "the PO, its terms and the PoE, once each:\n{uploads}"
    );
    let po = lines
        .iter()
        .find(|l| l.ends_with(",0065e00000AbCdEAAX") && l.contains("PO-4500012345.pdf"));
    assert!(po.is_some(), "the PO on its opportunity:\n{uploads}");
    // Each upload names a file that is there, with the bytes the partner sent.
    for l in &lines[1..] {
        let path = l.split(',').nth(2).unwrap().trim_matches('"');
        assert!(std::path::Path::new(path).is_file(), "{path}");
    }
    let status = read_day(&export, "Deal_Registration__c.csv");
    assert_eq!(status, "Deal_ID__c,Status__c\nDR-2026-0042,Closed-Won\n");
    let notes = read_day(&export, "FeedItem.csv");
    let notes: Vec<&str> = notes.lines().collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[1].starts_with("0065e00000AbCdEAAX,TextPost,"),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("cam.east@example.com") && notes[1].contains("[triage-"),
        "{notes:?}"
    );

    // The journal and the audit log say where each step went.
    let steps = journal_rows(
        &stack,
        "SELECT kind, state, place FROM crm_actions ORDER BY kind",
    );
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps.iter().all(|s| s[1] == "exported"), "{steps:?}");
    let audited = journal_rows(
        &stack,
        "SELECT detail FROM audit WHERE outcome = 'crm exported'",
    );
    assert_eq!(audited.len(), 4, "{audited:?}");
    assert!(audited.iter().all(|d| d[0].contains("waiting for import")));
    let human = human_reasons(&stack);
    assert!(
        human.values().any(|r| r.contains("Closed-Won")),
        "the closed registration went to a person: {human:?}"
    );
}
