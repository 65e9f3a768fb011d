//! One row per message: the audit log writes a record per step (decided, replied,
//! forwarded, filed, drafted …); reviewers think in messages.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::shell::journal::AuditRow;

/// A message and what became of it, as the decisions list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The first record's id: the decision page's address.
    pub id: i64,
    pub time: String,
    pub sender: String,
    /// The sender's domain, which names the partner in the directory.
    pub partner: String,
    pub subject: String,
    pub category: String,
    pub rule: String,
    /// What became of it, in a reviewer's words ("answered", "left for a person" …).
    pub outcome: String,
    /// To whom it went, or why not.
    pub to_whom: String,
    /// Every outcome the audit log recorded for it, in order.
    pub steps: Vec<String>,
    /// The records' ids, oldest first.
    pub records: Vec<i64>,
}

/// The outcomes a reviewer filters by, in the order the list offers them.
pub const OUTCOMES: [&str; 7] = [
    "answered",
    "draft waiting",
    "draft approved",
    "draft discarded",
    "left for a person",
    "filed",
    "shadow",
];

/// What the reviewer asked for; every part optional. Time bounds are applied when the
/// records are read; the rest here.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    pub since: String,
    pub until: String,
    pub category: String,
    pub outcome: String,
    pub rule: String,
    pub sender: String,
    pub partner: String,
    /// Free text over subject and sender.
    pub q: String,
    pub page: u32,
}

/// The audit records (oldest first) grouped per message, newest message first.
pub fn decisions(rows: &[AuditRow]) -> Vec<Decision> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<&AuditRow>> = Vec::new();
    for r in rows {
        let key = message_key(r);
        match index.get(&key) {
            Some(&i) => groups[i].push(r),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![r]);
            }
        }
    }
    groups.iter().rev().map(|g| decision(g)).collect()
}

/// Which message a record belongs to: its place in the mailbox, else its Message-ID.
pub fn message_key(r: &AuditRow) -> String {
    if r.uid != 0 {
        format!("{}\u{0}{}\u{0}{}", r.mailbox, r.uidvalidity, r.uid)
    } else {
        format!("id\u{0}{}", r.message_id.as_deref().unwrap_or(""))
    }
}

fn decision(group: &[&AuditRow]) -> Decision {
    let first = group[0];
    // The latest record says best what the message became (a draft approved later).
    let last = group[group.len() - 1];
    let steps: Vec<String> = group.iter().map(|r| r.outcome.clone()).collect();
    let outcome = outcome_of(&steps);
    let sender = first.sender.clone().unwrap_or_default();
    Decision {
        id: first.id,
        time: first.time.clone(),
        partner: sender
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default(),
        sender,
        subject: first.subject.clone(),
        category: last.category.clone(),
        rule: last.rule.clone().unwrap_or_default(),
        to_whom: to_whom(group, &outcome),
        outcome,
        steps,
        records: group.iter().map(|r| r.id).collect(),
    }
}

fn outcome_of(steps: &[String]) -> String {
    let has = |o: &str| steps.iter().any(|s| s == o);
    let label = if has("replied") || has("forwarded") {
        "answered"
    } else if has("approved") {
        "draft approved"
    } else if has("discarded") {
        "draft discarded"
    } else if has("drafted") {
        "draft waiting"
    } else if has("left for human") {
        "left for a person"
    } else if has("filed") {
        "filed"
    } else if has("shadow") {
        "shadow"
    } else {
        return steps.last().cloned().unwrap_or_default();
    };
    label.to_string()
}

fn to_whom(group: &[&AuditRow], outcome: &str) -> String {
    let sent: Vec<String> = group
        .iter()
        .filter(|r| matches!(r.outcome.as_str(), "replied" | "forwarded" | "drafted"))
        .map(|r| {
            let cc = r.cc.as_deref().unwrap_or("");
            let to = r.to.as_deref().unwrap_or("");
            let verb = if r.outcome == "forwarded" {
                "forwarded to "
            } else {
                ""
            };
            if cc.is_empty() {
                format!("{verb}{to}")
            } else {
                format!("{verb}{to} (cc {cc})")
            }
        })
        .collect();
    if !sent.is_empty() && outcome != "left for a person" {
        return sent.join("; ");
    }
    group
        .iter()
        .rev()
        .map(|r| r.reason.as_str())
        .find(|r| !r.is_empty())
        .unwrap_or("")
        .to_string()
}

impl Filter {
    /// Whether the message is one the reviewer asked for.
    pub fn keeps(&self, d: &Decision) -> bool {
        let contains = |hay: &str, needle: &str| {
            needle.trim().is_empty() || hay.to_lowercase().contains(&needle.trim().to_lowercase())
        };
        (self.category.is_empty() || d.category == self.category)
            && (self.outcome.is_empty()
                || d.outcome == self.outcome
                || d.steps.iter().any(|s| s == &self.outcome))
            && (self.rule.is_empty() || d.rule == self.rule)
            && contains(&d.sender, &self.sender)
            && contains(&d.partner, &self.partner)
            && (contains(&d.subject, &self.q) || contains(&d.sender, &self.q))
    }

    /// The same filter on another page, as a query string for links.
    pub fn query_for_page(&self, page: u32) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("since", &self.since),
            ("until", &self.until),
            ("category", &self.category),
            ("outcome", &self.outcome),
            ("rule", &self.rule),
            ("sender", &self.sender),
            ("partner", &self.partner),
            ("q", &self.q),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("page", &page.to_string());
        q.finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record of message `uid` as the audit log writes it (shared with the page tests).
    pub(crate) fn row(id: i64, uid: u32, outcome: &str, reason: &str) -> AuditRow {
        AuditRow {
            id,
            time: format!("2026-12-01T10:00:0{id}.000Z"),
            mailbox: "INBOX".into(),
            uidvalidity: 1,
            uid,
            message_id: Some(format!("m{uid}@x")),
            sender: Some("alice@reseller.example".into()),
            subject: format!("Quote {uid}"),
            category: "quote_request".into(),
            rule: Some("quote-request".into()),
            respond: "auto".into(),
            reason: reason.into(),
            outcome: outcome.into(),
            detail: String::new(),
            to: (outcome == "replied").then(|| "alice@reseller.example".into()),
            cc: (outcome == "replied").then(|| "rep@example.com".into()),
            template: None,
            attachments: None,
            error: None,
            plan: None,
        }
    }

    #[test]
    fn records_become_one_decision_per_message_newest_first() {
        let rows = vec![
            row(1, 7, "replied", ""),
            row(2, 7, "filed", ""),
            row(3, 8, "left for human", "no opportunity found"),
        ];
        let list = decisions(&rows);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].id, 3);
        assert_eq!(list[0].outcome, "left for a person");
        assert_eq!(list[0].to_whom, "no opportunity found");
        assert_eq!(list[1].outcome, "answered");
        assert_eq!(
            list[1].to_whom,
            "alice@reseller.example (cc rep@example.com)"
        );
        assert_eq!(list[1].records, [1, 2]);
        let f = Filter {
            outcome: "left for a person".into(),
            ..Filter::default()
        };
        assert!(f.keeps(&list[0]) && !f.keeps(&list[1]));
        let f = Filter {
            q: "QUOTE 7".into(),
            partner: "reseller".into(),
            ..Filter::default()
        };
        assert!(!f.keeps(&list[0]) && f.keeps(&list[1]));
    }
}
