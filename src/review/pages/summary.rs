//! The weekly review's figures: messages per day by category and by outcome, the time
//! from arrival to answer, the reasons messages went to a person, how often each rule's
//! drafts were approved. The same counts as CSV.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decisions::Decision;
pub use crate::core::dates::{day_of, epoch, last_days};
use crate::review::audit::{draft_rates, DraftRate};
use crate::shell::journal::AuditRow;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The days covered, oldest first (`2026-12-01`).
    pub days: Vec<String>,
    pub messages: usize,
    /// Per category, messages per day (same order as `days`).
    pub by_category: BTreeMap<String, Vec<usize>>,
    pub by_outcome: BTreeMap<String, Vec<usize>>,
    /// Minutes from arrival to the first answer, per answered message.
    pub latency_minutes: Vec<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p90: Option<f64>,
    /// The same two in words ("under a minute", "3.5 hours").
    pub latency_text: Option<(String, String)>,
    pub top_reasons: Vec<Reason>,
    pub drafts: Vec<DraftRate>,
}

/// A reason messages went to a person, with how many and the newest one's page.
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub reason: String,
    pub count: usize,
    pub example: i64,
}

/// The figures for these decisions over these days.
pub fn summarize(decisions: &[Decision], rows: &[AuditRow], days: Vec<String>) -> Summary {
    let mut s = Summary {
        messages: decisions.len(),
        ..Summary::default()
    };
    let slot = |time: &str| days.iter().position(|d| time.starts_with(d.as_str()));
    for d in decisions {
        let Some(i) = slot(&d.time) else { continue };
        s.by_category
            .entry(d.category.clone())
            .or_insert_with(|| vec![0; days.len()])[i] += 1;
        s.by_outcome
            .entry(d.outcome.clone())
            .or_insert_with(|| vec![0; days.len()])[i] += 1;
    }
    s.latency_minutes = latencies(decisions, rows);
    s.latency_p50 = percentile(&s.latency_minutes, 0.5);
    s.latency_p90 = percentile(&s.latency_minutes, 0.9);
    s.latency_text = s
        .latency_p50
        .zip(s.latency_p90)
        .map(|(a, b)| (in_words(a), in_words(b)));
    s.top_reasons = top_reasons(decisions);
    s.drafts = draft_rates(rows);
    s.days = days;
    s
}

/// Minutes from arrival to the first message sent for it. Arrival is the message's Date
/// header when it is plausible (not after the decision, at most a week before: a desk
/// back from a long weekend), else the time it was decided.
fn latencies(decisions: &[Decision], rows: &[AuditRow]) -> Vec<f64> {
    let by_id: BTreeMap<i64, &AuditRow> = rows.iter().map(|r| (r.id, r)).collect();
    let mut out = Vec::new();
    for d in decisions {
        let records: Vec<&AuditRow> = d
            .records
            .iter()
            .filter_map(|i| by_id.get(i).copied())
            .collect();
        let Some(first) = records.first() else {
            continue;
        };
        let Some(sent) = records
            .iter()
            .find(|r| matches!(r.outcome.as_str(), "replied" | "forwarded" | "approved"))
        else {
            continue;
        };
        let (Some(decided), Some(sent)) = (epoch(&first.time), epoch(&sent.time)) else {
            continue;
        };
        let dated = first
            .plan
            .as_ref()
            .and_then(|p| p.date.as_deref())
            .and_then(epoch);
        let arrived = dated
            .filter(|t| *t <= decided + 60.0 && *t >= decided - 7.0 * 86400.0)
            .unwrap_or(decided);
        out.push(((sent - arrived) / 60.0).max(0.0));
    }
    out
}

/// A duration as a reviewer reads it.
fn in_words(minutes: f64) -> String {
    if minutes < 1.0 {
        "under a minute".into()
    } else if minutes < 90.0 {
        format!("{minutes:.0} min")
    } else if minutes < 48.0 * 60.0 {
        format!("{:.1} hours", minutes / 60.0)
    } else {
        format!("{:.1} days", minutes / 1440.0)
    }
}

fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    Some(v[i])
}

/// Reasons for a person, with the particulars (names in quotes, ids, numbers) taken
/// out so that the same reason counts once: the ten most frequent.
fn top_reasons(decisions: &[Decision]) -> Vec<Reason> {
    static PARTICULAR: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""[^"]*"|\([^)]*\)|\S*\d\S*|\S+@\S+"#).expect("particulars")
    });
    let mut counts: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for d in decisions
        .iter()
        .filter(|d| d.outcome == "left for a person")
    {
        let general = PARTICULAR.replace_all(&d.to_whom, "…").to_string();
        let e = counts.entry(general).or_insert((0, d.id));
        e.0 += 1;
    }
    let mut list: Vec<Reason> = counts
        .into_iter()
        .map(|(reason, (count, example))| Reason {
            reason,
            count,
            example,
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    list.truncate(10);
    list
}

/// The counts as CSV: one line per day, category and outcome.
pub fn csv(decisions: &[Decision], days: &[String]) -> String {
    let mut counts: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for d in decisions {
        if let Some(day) = days.iter().find(|day| d.time.starts_with(day.as_str())) {
            *counts
                .entry((day.clone(), d.category.clone(), d.outcome.clone()))
                .or_default() += 1;
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["day", "category", "outcome", "messages"]);
    for ((day, category, outcome), n) in counts {
        let _ = w.write_record([day, category, outcome, n.to_string()]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_seconds() {
        assert_eq!(epoch("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch("2026-12-01T10:00:00.500Z"), Some(1_796_119_200.5));
        assert_eq!(epoch("2026-12-01T11:00:00+01:00"), Some(1_796_119_200.0));
        assert_eq!(epoch("yesterday"), None);
        assert_eq!(day_of(1_796_119_200.5), "2026-12-01");
        assert_eq!(day_of(951_782_400.0), "2000-02-29");
        assert_eq!(last_days(2, 1_796_119_200.0), ["2026-11-30", "2026-12-01"]);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(in_words(0.2), "under a minute");
        assert_eq!(in_words(150.0), "2.5 hours");
    }
}
