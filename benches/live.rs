//! `cargo bench --bench live`: the service against a real Dovecot + Postfix on loopback.
//!
//! 1. Latency: one partner message at a time is delivered through Postfix while the
//!    service idles (IDLE); the clock runs from Postfix's "250 queued" to the reply being
//!    in the partner's INBOX (seen over IMAP, polled every 10 ms). p50/p95 over N.
//! 2. Backlog: M messages (the six live-test kinds: orders, quotes, PoEs, loop bait, an
//!    ambiguous lookup), delivered through Postfix, wait in the inbox; `triage run --once`
//!    drains them, sending every reply and forward and waiting for the own copies.
//!
//! LIVE_BENCH_LATENCY=N (default 60) and LIVE_BENCH_BACKLOG=M (default 1000).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The partner's view: a logged-in IMAP session asked "is the reply to X here yet?".
struct Partner {
    rt: tokio::runtime::Runtime,
    session: ImapSession,
}

impl Partner {
    fn login(stack: &Stack) -> Partner {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let session = rt.block_on(async {
            let mut s = login(stack, PARTNER).await;
            s.select("INBOX").await.unwrap();
            s
        });
        Partner { rt, session }
    }

    fn has_reply_to(&mut self, id: &str) -> bool {
        let s = &mut self.session;
        self.rt.block_on(async {
            // NOOP lets Dovecot notice new mail in the selected folder.
            s.noop().await.unwrap();
            while s.unsolicited_responses.try_recv().is_ok() {}
            let found = s
                .search(format!("HEADER In-Reply-To \"{id}\""))
                .await
                .unwrap();
            !found.is_empty()
        })
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n_latency = env_usize("LIVE_BENCH_LATENCY", 60);
    let n_backlog = env_usize("LIVE_BENCH_BACKLOG", 1000);

    let stack = Stack::start("bench")
        .expect("the mail stack: run as root after tools/mailstack/install.sh");
    let mut wiring = Wiring::plain(&stack);
    wiring.imap = wiring.imap.replace("poll_seconds: 1", "poll_seconds: 600");
    let cfg = config(&stack, &wiring);

    // ---- 1. latency while idling
    let mut service = start_service(&stack, &cfg, "bench-service.log");
    std::thread::sleep(Duration::from_millis(500));
    let mut partner = Partner::login(&stack);
    let mut samples = Vec::new();
    for i in 0..n_latency {
        let raw = numbered_case("en-quote-request-ops-copied", 10_000 + i);
        let id = format!(
            "case-en-quote-request-ops-copied-{}@reseller.example",
            10_000 + i
        );
        let t0 = Instant::now();
        deliver(&stack, &raw);
        loop {
            if partner.has_reply_to(&id) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no reply to message {i} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        samples.push(t0.elapsed().as_secs_f64());
        // Let the own copy come back and be removed before the next one.
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&service, "TERM");
    wait_exit(&mut service, Duration::from_secs(30));
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "latency, delivered -> reply in the partner's INBOX, {} messages while idling: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        samples[samples.len() - 1]
    );

    // ---- 2. backlog
    let t = Instant::now();
    let kinds: Vec<&str> = ANSWERED.iter().chain(&NOT_ANSWERED).copied().collect();
    for i in 0..n_backlog {
        deliver(&stack, &numbered_case(kinds[i % kinds.len()], i));
    }
    // The latency phase left nothing in the inbox: every message there was answered.
    wait_for(&stack, DESK, "INBOX", n_backlog, Duration::from_secs(600));
    println!(
        "backlog: {n_backlog} messages delivered through Postfix in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let sent_before = mailbox(&stack, DESK, "Sent").len();
    let t = Instant::now();
    run_once(&stack, &cfg);
    let secs = t.elapsed().as_secs_f64();
    let answered = n_backlog * ANSWERED.len() / (ANSWERED.len() + NOT_ANSWERED.len());
    println!(
        "backlog: triage run --once drained {n_backlog} messages ({answered} answered, {} replies and forwards sent) in {secs:.1} s: {:.0} messages/s",
        mailbox(&stack, DESK, "Sent").len() - sent_before,
        n_backlog as f64 / secs
    );
}
