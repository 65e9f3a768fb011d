//! Each page made from the journal: read the records, group them, hand them to
//! `review::pages`. Runs on the blocking pool with its own journal connection.

use super::{records_of, since_days, Site};
use crate::review::pages::{self, charts, decisions, summary, Common, Record, Shown, WaitingDraft};
use crate::shell::journal::{AuditFilter, AuditRow, Error, Journal};

type Result<T> = std::result::Result<T, Error>;

/// Audit records from `since` (an audit time) up to `until` (exclusive), oldest first.
fn rows(journal: &Journal, since: String, until: Option<String>) -> Result<Vec<AuditRow>> {
    journal.audit_rows(&AuditFilter {
        since: Some(since),
        until,
        ..AuditFilter::default()
    })
}

fn common(site: &Site, journal: &Journal, viewer: &str) -> Result<Common> {
    Ok(Common {
        desk: site.desk.clone(),
        viewer: viewer.to_string(),
        waiting: journal.drafts_waiting()?,
    })
}

pub fn summary(site: &Site, journal: &Journal, viewer: &str, days: u32) -> Result<String> {
    let (list, since) = since_days(days);
    let all = rows(journal, since.clone(), None)?;
    let decided = decisions::decisions(&all);
    let s = summary::summarize(&decided, &all, list);
    let breakers = journal.breaker_events(&since)?;
    let bounces = journal.bounce_blocks(&since)?;
    journal.record_view(viewer, &format!("/?days={days}"), None)?;
    let c = common(site, journal, viewer)?;
    Ok(site
        .pages
        .summary(&c, days, &since, &s, (&breakers, &bounces)))
}

pub fn summary_csv(_site: &Site, journal: &Journal, days: u32) -> Result<String> {
    let (list, since) = since_days(days);
    let all = rows(journal, since, None)?;
    Ok(summary::csv(&decisions::decisions(&all), &list))
}

pub fn chart(_site: &Site, journal: &Journal, name: &str, days: u32) -> Result<Option<String>> {
    let (list, since) = since_days(days);
    let all = rows(journal, since, None)?;
    let decided = decisions::decisions(&all);
    let s = summary::summarize(&decided, &all, list);
    let labels: Vec<String> = s.days.iter().map(|d| d[5..].to_string()).collect();
    let series = |m: &std::collections::BTreeMap<String, Vec<usize>>| -> Vec<(String, Vec<usize>)> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    Ok(match name {
        "by-category.svg" => Some(charts::stacked(
            "Messages per day by category",
            &labels,
            &series(&s.by_category),
        )),
        "by-outcome.svg" => Some(charts::stacked(
            "Messages per day by outcome",
            &labels,
            &series(&s.by_outcome),
        )),
        "latency.svg" => Some(charts::latency(
            "Time from arrival to answer",
            &s.latency_minutes,
        )),
        _ => None,
    })
}

/// The decisions list. Without a start date it shows the last 30 days, and says so in
/// the form.
pub fn decisions(
    site: &Site,
    journal: &Journal,
    viewer: &str,
    mut f: decisions::Filter,
) -> Result<String> {
    if f.since.trim().is_empty() {
        f.since = since_days(30).0[0].clone();
    }
    let since = journal
        .audit_time(&f.since)?
        .unwrap_or_else(|| since_days(30).1);
    let until = match f.until.trim() {
        "" => None,
        u => journal.audit_time(&format!("{u}T23:59:59.999"))?,
    };
    let all = journal.audit_rows(&AuditFilter {
        since: Some(since),
        until,
        without_plans: true,
        ..AuditFilter::default()
    })?;
    let list = decisions::decisions(&all);
    journal.record_view(
        viewer,
        &format!("/decisions?{}", f.query_for_page(f.page.max(1))),
        None,
    )?;
    let c = common(site, journal, viewer)?;
    Ok(site.pages.decisions(&c, &f, &list, site.page_size))
}

pub fn decision(site: &Site, journal: &Journal, viewer: &str, id: i64) -> Result<Option<String>> {
    let rows = records_of(journal, id)?;
    let Some(d) = decisions::decisions(&rows).into_iter().next() else {
        return Ok(None);
    };
    // Recorded before it is shown: a look that fails half-way still counts.
    journal.record_view(viewer, &format!("/decisions/{id}"), Some(d.id))?;
    let first = &rows[0];
    let raw = journal.raw_at(first.uidvalidity, first.uid)?;
    let mut records = Vec::new();
    for r in &rows {
        let state = match pages::sent_message_id(r) {
            Some(m) => journal.outbox_state(m)?.map(|s| s.as_str().to_string()),
            None => None,
        };
        records.push(Record { row: r, state });
    }
    let views = journal.views_of(d.id)?;
    let journal_state = journal
        .state(first.uidvalidity, first.uid)?
        .map(|s| format!("{s:?}").to_lowercase());
    let shown = Shown {
        message: raw.as_deref().and_then(pages::message_view),
        records,
        views: &views,
        journal_state,
    };
    let c = common(site, journal, viewer)?;
    Ok(Some(site.pages.decision(&c, &d, &shown)))
}

/// Drafts waiting and messages left for a person, over the last 14 days.
pub fn queue(site: &Site, journal: &Journal, viewer: &str) -> Result<String> {
    const DAYS: u32 = 14;
    let (_, since) = since_days(DAYS);
    let all = rows(journal, since, None)?;
    let list = decisions::decisions(&all);
    let now = crate::shell::clock::now();
    let drafts: Vec<WaitingDraft> = list
        .iter()
        .filter(|d| d.outcome == "draft waiting")
        .map(|d| {
            let drafted = all
                .iter()
                .find(|r| d.records.contains(&r.id) && r.outcome == "drafted");
            let plan = drafted.and_then(|r| r.plan.as_ref());
            WaitingDraft {
                id: Some(d.id),
                sender: d.sender.clone(),
                subject: d.subject.clone(),
                minutes: drafted
                    .and_then(|r| summary::epoch(&r.time))
                    .map_or(0.0, |t| (now - t) / 60.0),
                note: plan
                    .and_then(|p| p.draft_note.clone())
                    .unwrap_or_else(|| d.to_whom.clone()),
            }
        })
        .collect();
    let human: Vec<&decisions::Decision> = list
        .iter()
        .filter(|d| d.outcome == "left for a person")
        .collect();
    journal.record_view(viewer, "/queue", None)?;
    let c = common(site, journal, viewer)?;
    Ok(site
        .pages
        .queue(&c, &drafts, &human, DAYS, site.human_folder.as_deref()))
}
