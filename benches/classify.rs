//! Decision throughput on one core, in-process: `cargo bench --bench classify`.
//! Uses the shipped cases, padded with realistic quoted history to ~12 KB each, as the
//! typical message on the desk (a reply with a long thread below it).

use std::path::PathBuf;
use std::time::Instant;

use triage::core::config::Config;
use triage::core::plan::Playbook;
use triage::review::casebook;

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&repo.join("deploy/triage.yaml")).expect("config");
    let book = Playbook::load(config, None).expect("playbook");
    let history = "> On Mon, Bob wrote:\n> Thanks for the update on the renewal, we will come back to you shortly with the numbers.\n".repeat(60);
    let mut messages: Vec<Vec<u8>> = Vec::new();
    for eml in casebook::cases(&repo.join("tests/cases")).expect("cases") {
        let raw = std::fs::read(&eml).unwrap();
        let text = String::from_utf8_lossy(&raw);
        // Pad single-part plain messages; keep the others (attachments, HTML) as they are.
        if text.contains("Content-Type: text/plain")
            && !text.contains("multipart")
            && raw.len() < 12_000
        {
            let mut padded = raw.clone();
            let pad = history.as_bytes();
            padded.extend_from_slice(&pad[..(12_000 - raw.len()).min(pad.len())]);
            messages.push(padded);
        } else {
            messages.push(raw);
        }
    }
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "{} messages, average {} bytes",
        messages.len(),
        bytes / messages.len()
    );
    // warm up
    for m in &messages {
        std::hint::black_box(book.decide(m));
    }
    let mut rates = Vec::new();
    for _ in 0..7 {
        let rounds = 40;
        let t = Instant::now();
        for _ in 0..rounds {
            for m in &messages {
                std::hint::black_box(book.decide(m));
            }
        }
        let secs = t.elapsed().as_secs_f64();
        rates.push((rounds * messages.len()) as f64 / secs);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "classify: median {:.0} messages/s on one core (min {:.0}, max {:.0}, 7 runs)",
        rates[3], rates[0], rates[6]
    );
}
