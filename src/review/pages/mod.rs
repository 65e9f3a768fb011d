//! The review pages as HTML, made from audit records: no I/O here; the shell's
//! `review_site` reads the journal, checks who is asking and serves what these make.
//! Every message-derived string goes through minijinja's HTML escaping (the templates
//! are `.html`), so a subject `<script>…` shows as text.

pub mod charts;
pub mod decisions;
pub mod summary;

use serde::Serialize;
use serde_json::{json, Value};

use crate::core::message::Mail;
use crate::core::plan::Plan;
use crate::shell::journal::{AuditRow, BounceBlock, BreakerEvent, View};
use decisions::{Decision, Filter};
use summary::Summary;

/// The stylesheet, served as a file so that the pages need no inline style (CSP).
pub const STYLE: &str = include_str!("templates/review.css");

const TEMPLATES: [(&str, &str); 5] = [
    ("layout.html", include_str!("templates/layout.html")),
    ("summary.html", include_str!("templates/summary.html")),
    ("decisions.html", include_str!("templates/decisions.html")),
    ("decision.html", include_str!("templates/decision.html")),
    ("queue.html", include_str!("templates/queue.html")),
];

/// What every page shows in its header.
#[derive(Debug, Clone, Serialize)]
pub struct Common {
    pub desk: String,
    pub viewer: String,
    /// Drafts waiting, for the navigation.
    pub waiting: usize,
}

pub struct Pages {
    env: minijinja::Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Pages::new()
    }
}

impl Pages {
    pub fn new() -> Pages {
        // Lenient about absent values: a plan recorded by an older release lacks fields
        // a newer page asks for, and such a page still shows.
        let mut env = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .expect("the review templates parse");
        }
        Pages { env }
    }

    fn render(&self, name: &str, page: &str, common: &Common, ctx: Value) -> String {
        let mut ctx = ctx;
        ctx["page"] = json!(page);
        ctx["desk"] = json!(common.desk);
        ctx["viewer"] = json!(common.viewer);
        ctx["waiting"] = json!(common.waiting);
        self.env
            .get_template(name)
            .and_then(|t| t.render(&ctx))
            .unwrap_or_else(|e| {
                // A template bug shows as a plain, escaped message rather than a blank page.
                format!(
                    "<!doctype html><title>error</title><p>This page could not be made: {}</p>",
                    crate::core::escape::html(&e.to_string())
                )
            })
    }

    pub fn summary(
        &self,
        common: &Common,
        days: u32,
        since: &str,
        s: &Summary,
        brakes: (&[BreakerEvent], &[BounceBlock]),
    ) -> String {
        let mut totals: Vec<(String, usize)> = s
            .by_outcome
            .iter()
            .map(|(o, v)| (o.clone(), v.iter().sum()))
            .collect();
        totals.sort_by_key(|t| std::cmp::Reverse(t.1));
        let ctx = json!({
            "days": days, "since": &since[..since.len().min(10)], "s": s,
            "outcome_totals": totals, "breakers": brakes.0, "bounces": brakes.1,
        });
        self.render("summary.html", "summary", common, ctx)
    }

    pub fn decisions(
        &self,
        common: &Common,
        f: &Filter,
        list: &[Decision],
        page_size: u32,
    ) -> String {
        let mut categories: Vec<&str> = list.iter().map(|d| d.category.as_str()).collect();
        let mut rules: Vec<&str> = list
            .iter()
            .map(|d| d.rule.as_str())
            .filter(|r| !r.is_empty())
            .collect();
        categories.sort_unstable();
        categories.dedup();
        rules.sort_unstable();
        rules.dedup();
        let kept: Vec<&Decision> = list.iter().filter(|d| f.keeps(d)).collect();
        let size = page_size.max(1) as usize;
        let pages = kept.len().div_ceil(size).max(1) as u32;
        let page = f.page.clamp(1, pages);
        let rows: Vec<&&Decision> = kept
            .iter()
            .skip((page as usize - 1) * size)
            .take(size)
            .collect();
        let ctx = json!({
            "f": f, "rows": rows, "total": kept.len(), "page": page, "pages": pages,
            "prev_query": f.query_for_page(page.saturating_sub(1).max(1)),
            "next_query": f.query_for_page(page + 1),
            "categories": categories, "rules": rules, "outcomes": decisions::OUTCOMES,
        });
        self.render("decisions.html", "decisions", common, ctx)
    }

    pub fn decision(&self, common: &Common, d: &Decision, shown: &Shown<'_>) -> String {
        let plan: Option<&Plan> = shown.records.iter().rev().find_map(|r| r.row.plan.as_ref());
        let ctx = json!({
            "d": d, "plan": plan, "message": shown.message, "records": shown.records,
            "views": shown.views, "journal_state": shown.journal_state,
        });
        self.render("decision.html", "decisions", common, ctx)
    }

    pub fn queue(
        &self,
        common: &Common,
        drafts: &[WaitingDraft],
        human: &[&Decision],
        days: u32,
        human_folder: Option<&str>,
    ) -> String {
        let ctx =
            json!({ "drafts": drafts, "human": human, "days": days, "human_folder": human_folder });
        self.render("queue.html", "queue", common, ctx)
    }
}

/// Everything one decision page shows besides the decision's summary.
pub struct Shown<'a> {
    pub message: Option<MessageView>,
    pub records: Vec<Record<'a>>,
    pub views: &'a [View],
    pub journal_state: Option<String>,
}

/// An audit record with the journal's state of the message it sent, when it sent one.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    #[serde(flatten)]
    pub row: &'a AuditRow,
    pub state: Option<String>,
}

/// A draft waiting in Drafts, as the queue shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingDraft {
    pub id: Option<i64>,
    pub sender: String,
    pub subject: String,
    pub minutes: f64,
    pub note: String,
}

/// The parts of a kept message a reviewer needs: its main headers, the partner's new
/// text, the names of its attachments. Not the documents, not the quoted history.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub headers: Vec<(String, String)>,
    pub new_text: String,
    pub attachments: Vec<String>,
}

/// The headers shown, in this order, as far as the message has them.
const SHOWN_HEADERS: [&str; 8] = [
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Date",
    "Subject",
    "Message-ID",
    "Authentication-Results",
];

pub fn message_view(raw: &[u8]) -> Option<MessageView> {
    let mail = Mail::parse(raw).ok()?;
    let mut headers = Vec::new();
    for name in SHOWN_HEADERS {
        for (n, v) in &mail.headers {
            if n.eq_ignore_ascii_case(name) {
                headers.push((name.to_string(), v.chars().take(2000).collect()));
            }
        }
    }
    Some(MessageView {
        headers,
        new_text: mail.new_text.chars().take(20_000).collect(),
        attachments: mail.attachments.iter().map(|a| a.name.clone()).collect(),
    })
}

/// The Message-ID an outgoing record names first in its detail ("<id> to … cc …").
pub fn sent_message_id(r: &AuditRow) -> Option<&str> {
    if !matches!(r.outcome.as_str(), "replied" | "forwarded" | "drafted") {
        return None;
    }
    r.detail.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, uid: u32, outcome: &str, subject: &str) -> AuditRow {
        AuditRow {
            subject: subject.into(),
            detail: "<a1@triage> to alice@reseller.example cc ; the server said 250 2.0.0 Ok"
                .into(),
            to: Some("alice@reseller.example".into()),
            cc: Some("rep@example.com".into()),
            template: Some("quote_request_routed".into()),
            attachments: Some(json!([{"name": "PO <1>.pdf", "sha256": "ab12"}])),
            ..decisions::tests::row(id, uid, outcome, "no opportunity found")
        }
    }

    /// Every page renders from records (no template error), and what came from a
    /// message is escaped wherever it shows.
    #[test]
    fn every_page_renders_and_escapes_what_the_message_wrote() {
        let evil = "<script>alert(1)</script>";
        let rows = vec![
            row(1, 7, "replied", evil),
            row(2, 7, "filed", evil),
            row(3, 8, "left for human", "plain"),
        ];
        let list = decisions::decisions(&rows);
        let pages = Pages::new();
        let common = Common {
            desk: "Desk <b>".into(),
            viewer: "lead".into(),
            waiting: 0,
        };
        let days = vec!["2026-11-30".to_string(), "2026-12-01".to_string()];
        let s = summary::summarize(&list, &rows, days);
        let records: Vec<Record> = rows
            .iter()
            .take(2)
            .map(|r| Record {
                row: r,
                state: Some("filed".into()),
            })
            .collect();
        let shown = Shown {
            message: message_view(
                b"From: a@b.example\r\nSubject: <b>x</b>\r\n\r\nhello <script>\r\n",
            ),
            records,
            views: &[],
            journal_state: None,
        };
        let human: Vec<&Decision> = list
            .iter()
            .filter(|d| d.outcome == "left for a person")
            .collect();
        let made = [
            pages.summary(&common, 2, "2026-11-30T00:00:00.000Z", &s, (&[], &[])),
            pages.decisions(&common, &Filter::default(), &list, 50),
            pages.decision(&common, &list[1], &shown),
            pages.queue(&common, &[], &human, 14, None),
        ];
        for html in &made {
            assert!(!html.contains("could not be made"), "{html}");
            assert!(!html.contains("<script"), "{html}");
            assert!(!html.contains("Desk <b>"), "{html}");
        }
        assert!(made[1].contains("&lt;script&gt;alert(1)"));
        assert!(made[2].contains("PO &lt;1&gt;.pdf") && made[2].contains("ab12"));
        assert!(made[2].contains("hello &lt;script&gt;"));
        assert!(made[0].contains("no opportunity found"));
    }
}
