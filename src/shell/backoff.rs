//! How long to wait before trying again (reconnecting, refreshing a token): doubling
//! from `first` up to `cap`, plus up to a quarter more, so that many instances started
//! together do not retry in step.

use std::time::Duration;

/// The wait before try number `attempt` (1 for the first retry).
pub fn delay(attempt: u32, first: Duration, cap: Duration) -> Duration {
    let doublings = attempt.max(1).saturating_sub(1).min(20);
    let base_ms = (first.as_millis() as u64)
        .saturating_mul(1 << doublings)
        .min(cap.as_millis() as u64);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(base_ms + seed % (base_ms / 4 + 1))
}
