//! The weekly review's figures: messages per day by category and by outcome, the time
//! from arrival to answer, the reasons messages went to a person, how often each rule's
//! drafts were approved. The same counts as CSV.

use std::collections::BTreeMap;

use serde::Serialize;

use super::decisions::Decision;
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

#[derive(Debug, Clone, Serialize)]
pub struct DraftRate {
    pub rule: String,
    pub drafted: usize,
    pub approved: usize,
    pub discarded: usize,
    /// Approved of those settled, in percent.
    pub rate: Option<u32>,
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

fn draft_rates(rows: &[AuditRow]) -> Vec<DraftRate> {
    let mut by_rule: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for r in rows {
        let slot = match r.outcome.as_str() {
            "drafted" => 0,
            "approved" => 1,
            "discarded" => 2,
            _ => continue,
        };
        by_rule
            .entry(r.rule.clone().unwrap_or_else(|| "-".into()))
            .or_default()[slot] += 1;
    }
    by_rule
        .into_iter()
        .map(|(rule, [drafted, approved, discarded])| DraftRate {
            rule,
            drafted,
            approved,
            discarded,
            rate: ((approved * 100) as u32).checked_div((approved + discarded) as u32),
        })
        .collect()
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

/// Seconds since 1970 of an RFC 3339 time (`2026-12-01T10:00:00.123Z`, `…+01:00`).
pub fn epoch(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let rest = &t[17..];
    let secs_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let s: f64 = rest[..secs_end].parse().ok()?;
    let zone = &rest[secs_end..];
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z if z.len() == 6 => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().ok()? * 3600 + z[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + h * 3600 + mi * 60 - offset) as f64 + s)
}

/// The date (`2026-12-01`) of a time in seconds since 1970, UTC.
pub fn day_of(epoch: f64) -> String {
    // Civil date from days (Howard Hinnant's algorithm).
    let z = (epoch / 86400.0).floor() as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The last `n` days up to the one `now` is in, oldest first.
pub fn last_days(n: u32, now: f64) -> Vec<String> {
    (0..n)
        .rev()
        .map(|k| day_of(now - f64::from(k) * 86400.0))
        .collect()
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
    }
}
