//! The SpamAssassin public corpus (ham and spam, 2002-2005, from people and programs that
//! never wrote to this desk) through the decision core. None of it is from a partner, so
//! none may be answered: not as it is, and not with the receiving server's
//! Authentication-Results saying DMARC passed for its From domain. Nothing may panic.
//! `tools/corpus.sh` (run by the test command) fetches it into target/corpus.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use triage::core::config::Config;
use triage::core::plan::Playbook;
use triage::core::rules::Respond;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn messages(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "file_list.json")
            {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                let text = v["text"].as_str().unwrap_or("").to_string();
                // The corpus keeps mbox's "From " line: not part of the message.
                let text = match text.split_once('\n') {
                    Some((first, rest)) if first.starts_with("From ") => rest.to_string(),
                    _ => text,
                };
                out.push((p.display().to_string(), text.into_bytes()));
            }
        }
    }
    out.sort();
    out
}

/// The From domain as a receiving server would read it, for the forged-pass variant.
fn from_domain(raw: &[u8]) -> Option<String> {
    let mail = triage::core::message::Mail::parse(raw).ok()?;
    mail.from.map(|f| f.domain().to_string())
}

#[test]
fn no_message_of_the_spamassassin_corpus_is_answered_or_stops_the_desk() {
    let dir = repo().join("target/corpus/spam-assassin");
    assert!(
        dir.join(".complete").exists(),
        "the corpus is missing: run tools/corpus.sh (the test command does)"
    );
    let config = Config::load(&repo().join("deploy/triage.yaml")).unwrap();
    let book = Playbook::load(config, None).unwrap();
    let all = messages(&dir);
    assert!(all.len() >= 6000, "only {} messages", all.len());
    let mut categories: BTreeMap<String, usize> = BTreeMap::new();
    let mut answered = Vec::new();
    let mut internal = Vec::new();
    for (name, raw) in &all {
        let mut variants = vec![raw.clone()];
        if let Some(domain) = from_domain(raw) {
            let forged = format!(
                "Authentication-Results: mx.example.com; dmarc=pass header.from={domain}\n"
            );
            variants.push([forged.as_bytes(), raw].concat());
        }
        for (n, v) in variants.iter().enumerate() {
            let plan = book.decide(v);
            if n == 1 {
                *categories.entry(plan.category.to_string()).or_default() += 1;
            }
            if plan.respond == Respond::Auto || !plan.outgoing.is_empty() {
                answered.push(format!("{name} (variant {n}): {}", plan.reason));
            }
            if plan.reason.contains("internal error") {
                internal.push(format!("{name}: {}", plan.reason));
            }
            assert!(!plan.reason.is_empty(), "{name}: no reason");
        }
    }
    println!(
        "corpus report: messages={} categories={categories:?}",
        all.len()
    );
    assert!(
        internal.is_empty(),
        "{} panics: {:?}",
        internal.len(),
        &internal[..internal.len().min(5)]
    );
    assert!(
        answered.is_empty(),
        "{} answered: {:?}",
        answered.len(),
        &answered[..answered.len().min(5)]
    );
}
