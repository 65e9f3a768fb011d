//! `triage audit`: the audit log as reviewers read it. A table that fits a 100-column
//! terminal, JSON lines for tools, CSV for spreadsheets, one record in full (explained the
//! way `classify` explains a decision), and the weekly summary by category and outcome.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::core::plan;
use crate::shell::journal::AuditRow;

/// Cuts to `width` characters, marking the cut.
fn fit(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_control() || crate::core::escape::is_invisible(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if clean.chars().count() <= width {
        format!("{clean:<width$}")
    } else {
        let mut s: String = clean.chars().take(width.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

pub const TABLE_HEADER: &str =
    "    ID  TIME (UTC)   OUTCOME         CATEGORY            SENDER                  SUBJECT";

/// Two lines of at most 100 characters: what came in and what it became, then to whom it
/// went or why it was left.
pub fn table_row(r: &AuditRow) -> String {
    // 2026-11-23T12:03:43.123Z -> 11-23 12:03
    let time = r.time.get(5..16).unwrap_or(&r.time).replace('T', " ");
    let line = format!(
        "{:>6}  {}  {}  {}  {}  {}",
        r.id,
        fit(&time, 11),
        fit(&r.outcome, 14),
        fit(&r.category, 18),
        fit(r.sender.as_deref().unwrap_or("-"), 22),
        r.subject
    );
    let second = match (&r.to, r.outcome.as_str()) {
        (Some(to), _) => {
            let mut s = format!("to {to}");
            if let Some(cc) = r.cc.as_ref().filter(|c| !c.is_empty()) {
                s.push_str(&format!("; cc {cc}"));
            }
            if let Some(t) = &r.template {
                s.push_str(&format!("; template {t}"));
            }
            s
        }
        (None, "filed") => format!(
            "filed to {}; rule {}",
            r.detail,
            r.rule.as_deref().unwrap_or("-")
        ),
        (None, "left for human") => format!("why: {}", r.detail),
        _ => format!("why: {}", r.reason),
    };
    format!(
        "{}\n{}",
        fit(&line, 100).trim_end(),
        fit(&format!("        {second}"), 100).trim_end()
    )
}

pub fn json_line(r: &AuditRow) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

pub const CSV_HEADER: [&str; 19] = [
    "id",
    "time",
    "mailbox",
    "uidvalidity",
    "uid",
    "message_id",
    "sender",
    "subject",
    "category",
    "rule",
    "outcome",
    "reason",
    "detail",
    "to",
    "cc",
    "template",
    "attachments",
    "fields",
    "error",
];

pub fn csv_record(r: &AuditRow) -> Vec<String> {
    let fields = r
        .plan
        .as_ref()
        .map(|p| {
            p.fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default();
    let cells = vec![
        r.id.to_string(),
        r.time.clone(),
        r.mailbox.clone(),
        r.uidvalidity.to_string(),
        r.uid.to_string(),
        r.message_id.clone().unwrap_or_default(),
        r.sender.clone().unwrap_or_default(),
        r.subject.clone(),
        r.category.clone(),
        r.rule.clone().unwrap_or_default(),
        r.outcome.clone(),
        r.reason.clone(),
        r.detail.clone(),
        r.to.clone().unwrap_or_default(),
        r.cc.clone().unwrap_or_default(),
        r.template.clone().unwrap_or_default(),
        attachments(r),
        fields,
        r.error.clone().unwrap_or_default(),
    ];
    cells
        .iter()
        .map(|c| crate::core::escape::for_spreadsheet(c))
        .collect()
}

fn attachments(r: &AuditRow) -> String {
    r.attachments
        .as_ref()
        .and_then(|a| a.as_array())
        .map(|list| {
            list.iter()
                .map(|a| {
                    format!(
                        "{} (sha256 {})",
                        a["name"].as_str().unwrap_or(""),
                        a["sha256"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// One record in full: what was done, then the decision behind it.
pub fn show(r: &AuditRow) -> String {
    use crate::core::escape::for_terminal as esc;
    let mut s = String::new();
    let _ = writeln!(s, "audit record {}", r.id);
    let _ = writeln!(s, "  time:       {}", r.time);
    let _ = writeln!(
        s,
        "  mailbox:    {} (UIDVALIDITY {}, UID {})",
        r.mailbox, r.uidvalidity, r.uid
    );
    let _ = writeln!(s, "  outcome:    {}", esc(&r.outcome));
    if !r.detail.is_empty() {
        let _ = writeln!(s, "  detail:     {}", esc(&r.detail));
    }
    if let Some(to) = &r.to {
        let _ = writeln!(s, "  sent to:    {}", esc(to));
    }
    if let Some(cc) = r.cc.as_ref().filter(|c| !c.is_empty()) {
        let _ = writeln!(s, "  cc:         {}", esc(cc));
    }
    if let Some(t) = &r.template {
        let _ = writeln!(s, "  template:   {}", esc(t));
    }
    let docs = attachments(r);
    if !docs.is_empty() {
        let _ = writeln!(s, "  documents:  {}", esc(&docs));
    }
    if let Some(e) = &r.error {
        let _ = writeln!(s, "  error:      {}", esc(e));
    }
    match &r.plan {
        Some(p) => s.push_str(&plan::explain("  the decision:", p)),
        None => {
            let _ = writeln!(s, "  the decision: (not recorded; older record)");
            let _ = writeln!(s, "  category:   {}", esc(&r.category));
            let _ = writeln!(s, "  rule:       {}", esc(r.rule.as_deref().unwrap_or("-")));
            let _ = writeln!(s, "  reason:     {}", esc(&r.reason));
        }
    }
    s
}

/// Outcomes in the order a reviewer reads them.
const OUTCOMES: [&str; 5] = ["replied", "forwarded", "filed", "left for human", "shadow"];

/// Counts by category and outcome, and messages per category.
pub fn summary(rows: &[AuditRow], period: &str) -> String {
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut messages: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for r in rows {
        *counts
            .entry(&r.category)
            .or_default()
            .entry(&r.outcome)
            .or_default() += 1;
        messages
            .entry(&r.category)
            .or_default()
            .insert(r.message_id.as_deref().unwrap_or(""));
    }
    let mut s = String::new();
    let _ = writeln!(s, "audit summary, {period}");
    let _ = writeln!(
        s,
        "{:<22}{:>9}{:>9}{:>10}{:>8}{:>16}{:>8}",
        "category", "messages", "replied", "forwarded", "filed", "left for human", "shadow"
    );
    let mut total = [0usize; 6];
    for (category, by) in &counts {
        let n = messages[category].len();
        let cells: Vec<usize> = OUTCOMES
            .iter()
            .map(|o| by.get(o).copied().unwrap_or(0))
            .collect();
        total[0] += n;
        for (i, c) in cells.iter().enumerate() {
            total[i + 1] += c;
        }
        let _ = writeln!(
            s,
            "{:<22}{:>9}{:>9}{:>10}{:>8}{:>16}{:>8}",
            fit(category, 21).trim_end(),
            n,
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4]
        );
    }
    let _ = writeln!(
        s,
        "{:<22}{:>9}{:>9}{:>10}{:>8}{:>16}{:>8}",
        "total", total[0], total[1], total[2], total[3], total[4], total[5]
    );
    s.push_str(&draft_table(rows));
    s
}

/// One rule's drafts: written, approved (sent by a person), discarded, and the share
/// approved of those settled, so the desk sees which rules are ready to answer alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DraftRate {
    pub rule: String,
    pub drafted: usize,
    pub approved: usize,
    pub discarded: usize,
    /// Approved of those settled, in percent.
    pub rate: Option<usize>,
}

/// Draft counts per rule, by rule name.
pub fn draft_rates(rows: &[AuditRow]) -> Vec<DraftRate> {
    let mut by_rule: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for r in rows {
        let slot = match r.outcome.as_str() {
            "drafted" => 0,
            "approved" => 1,
            "discarded" => 2,
            _ => continue,
        };
        by_rule.entry(r.rule.as_deref().unwrap_or("-")).or_default()[slot] += 1;
    }
    by_rule
        .into_iter()
        .map(|(rule, [drafted, approved, discarded])| DraftRate {
            rule: rule.to_string(),
            drafted,
            approved,
            discarded,
            rate: (approved * 100).checked_div(approved + discarded),
        })
        .collect()
}

/// The draft counts as the summary's second table; nothing when there were no drafts.
fn draft_table(rows: &[AuditRow]) -> String {
    let rates = draft_rates(rows);
    if rates.is_empty() {
        return String::new();
    }
    let mut s = String::from("\ndrafts by rule\n");
    let _ = writeln!(
        s,
        "{:<34}{:>8}{:>10}{:>11}{:>10}",
        "rule", "drafted", "approved", "discarded", "approved%"
    );
    for d in rates {
        let rate = d.rate.map_or_else(|| "-".to_string(), |r| format!("{r}%"));
        let _ = writeln!(
            s,
            "{:<34}{:>8}{:>10}{:>11}{rate:>10}",
            fit(&d.rule, 33).trim_end(),
            d.drafted,
            d.approved,
            d.discarded
        );
    }
    s
}

/// What each rule did over a period, for rule editors: which rules matter, which send
/// messages to a person and why, which never fire.
#[derive(Debug, Default, serde::Serialize)]
pub struct RuleCoverage {
    pub rule: String,
    /// Messages this rule decided (each counted once).
    pub messages: usize,
    pub answered: usize,
    pub drafted: usize,
    pub left_for_human: usize,
    /// Filed only: sorted, nothing sent.
    pub filed: usize,
    /// The most frequent reasons a message of this rule went to a person.
    pub human_reasons: Vec<(String, usize)>,
}

/// Coverage per rule from audit records; `rules` are today's rules, so those that never
/// fired show with zero messages. Messages no rule matched are under `(no rule)`.
pub fn coverage(rows: &[AuditRow], rules: &[String]) -> Vec<RuleCoverage> {
    use std::collections::BTreeSet;
    type Seen<'a> = BTreeMap<&'a str, BTreeSet<String>>;
    let mut by_rule: BTreeMap<String, Seen> = BTreeMap::new();
    let mut reasons: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in rows {
        let rule = r.rule.clone().unwrap_or_else(|| "(no rule)".into());
        let message =
            (r.message_id.clone()).unwrap_or_else(|| format!("{}/{}", r.uidvalidity, r.uid));
        let outcome = match r.outcome.as_str() {
            "replied" | "forwarded" => "answered",
            "drafted" => "drafted",
            "left for human" => "human",
            "filed" => "filed",
            _ => "other",
        };
        let seen = by_rule.entry(rule.clone()).or_default();
        seen.entry("all").or_default().insert(message.clone());
        if seen.entry(outcome).or_default().insert(message) && outcome == "human" {
            *reasons
                .entry(rule)
                .or_default()
                .entry(r.reason.clone())
                .or_default() += 1;
        }
    }
    for rule in rules {
        by_rule.entry(rule.clone()).or_default();
    }
    let count = |seen: &Seen, k: &str| seen.get(k).map_or(0, BTreeSet::len);
    let mut out: Vec<RuleCoverage> = by_rule
        .iter()
        .map(|(rule, seen)| {
            let answered_or_drafted = |m: &String| {
                seen.get("answered").is_some_and(|s| s.contains(m))
                    || seen.get("drafted").is_some_and(|s| s.contains(m))
            };
            let filed_only = seen
                .get("filed")
                .map_or(0, |s| s.iter().filter(|m| !answered_or_drafted(m)).count());
            let mut top: Vec<(String, usize)> = reasons
                .get(rule)
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(3);
            RuleCoverage {
                rule: rule.clone(),
                messages: count(seen, "all"),
                answered: count(seen, "answered"),
                drafted: count(seen, "drafted"),
                left_for_human: count(seen, "human"),
                filed: filed_only,
                human_reasons: top,
            }
        })
        .collect();
    out.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.rule.cmp(&b.rule)));
    out
}

/// The coverage as a table a rule editor reads, never-fired rules last.
pub fn coverage_table(rows: &[RuleCoverage], period: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "rule coverage, {period}");
    let _ = writeln!(
        s,
        "{:<34}{:>9}{:>9}{:>8}{:>7}{:>16}",
        "rule", "messages", "answered", "drafted", "filed", "left for human"
    );
    for c in rows.iter().filter(|c| c.messages > 0) {
        let _ = writeln!(
            s,
            "{:<34}{:>9}{:>9}{:>8}{:>7}{:>16}",
            fit(&c.rule, 33).trim_end(),
            c.messages,
            c.answered,
            c.drafted,
            c.filed,
            c.left_for_human
        );
        for (why, n) in &c.human_reasons {
            let why = crate::core::escape::for_terminal(&fit(why, 88));
            let _ = writeln!(s, "    {n:>4} x {}", why.trim_end());
        }
    }
    let never: Vec<&str> = rows
        .iter()
        .filter(|c| c.messages == 0)
        .map(|c| c.rule.as_str())
        .collect();
    if !never.is_empty() {
        let _ = writeln!(s, "never fired: {}", never.join(", "));
    }
    s
}
