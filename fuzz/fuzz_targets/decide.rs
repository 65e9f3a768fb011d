//! The parser front and everything after it: any bytes through parse → guard → classify
//! → plan with the shipped config, rules, templates and directory. A panic, a hang or a
//! plan that sends with no reason is a finding.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use triage::core::config::Config;
use triage::core::plan::Playbook;

static BOOK: LazyLock<Playbook> = LazyLock::new(|| {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = Config::load(&root.join("deploy/triage.yaml")).expect("config loads");
    Playbook::load(config, None).expect("shipped playbook is valid")
});

fuzz_target!(|raw: &[u8]| {
    let plan = BOOK.decide(raw);
    assert!(!plan.reason.is_empty());
    if !plan.outgoing.is_empty() {
        let mail = triage::core::message::Mail::parse(raw).expect("answered mail parses");
        assert!(mail.damage.is_empty(), "answered damaged mail");
    }
});
