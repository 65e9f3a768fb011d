//! The journal's writes on one core: `cargo bench --bench journal`. N decisions
//! recorded in group commits of 500 (as a batch records them; JOURNAL_GROUP=25 as
//! before 2026-12-03), then their N filing outcomes in one transaction (as a filing
//! does), with SQLite's automatic checkpoint inside the commits, then with the
//! service's checkpoint thread. JOURNAL_N=10000.

use std::time::Instant;

use triage::core::config::Config;
use triage::core::plan::Playbook;
use triage::shell::journal::{Journal, MessageRef};

fn main() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&repo.join("deploy/triage.yaml")).expect("config");
    let book = Playbook::load(config, None).expect("playbook");
    let raw = std::fs::read(repo.join("tests/cases/en-quote-request-ops-copied.eml")).unwrap();
    let plan = book.decide(&raw);
    let n: u32 = std::env::var("JOURNAL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // As the service's GROUP_COMMIT (src/shell/service/inbox.rs).
    let group_commit: usize = std::env::var("JOURNAL_GROUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let json = serde_json::to_string(&plan).unwrap().len();
    println!("{n} plans of {json} bytes of JSON");
    for background in [false, true] {
        let dir = std::env::temp_dir().join(format!("triage-bench-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut journal = Journal::open(&dir.join("journal.sqlite")).unwrap();
        if background {
            journal.checkpoint_in_background();
        }
        let keys: Vec<String> = (0..n).map(|i| format!("m{i}@bench")).collect();
        let t = Instant::now();
        let uids: Vec<u32> = (1..=n).collect();
        for group in uids.chunks(group_commit) {
            journal
                .together(|| {
                    for &uid in group {
                        let key = &keys[uid as usize - 1];
                        journal.record_planned((7, uid), key, &plan, 12_000, None)?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        let planned = t.elapsed();
        let t = Instant::now();
        journal
            .together(|| {
                for &uid in &uids {
                    let at = MessageRef::new("INBOX", 7, uid);
                    journal.conclude_filed_as_planned(
                        at,
                        &keys[uid as usize - 1],
                        &plan,
                        "Triage/Orders",
                    )?;
                }
                Ok(())
            })
            .unwrap();
        let filed = t.elapsed();
        let how = if background {
            "checkpoint thread"
        } else {
            "checkpoints in the commits"
        };
        println!("{how:>27}: decisions recorded in {planned:.2?}, filing outcomes in {filed:.2?}");
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
