//! What the review pages read besides the audit log: the brakes' events, and who looked
//! at which decision (written here: a view of a message is itself recorded).

use rusqlite::params;

use super::{Journal, Result};

/// A circuit breaker that opened, and when and by whom it was closed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BreakerEvent {
    pub opened: String,
    pub setting: String,
    pub reason: String,
    pub closed: Option<String>,
    pub closed_by: Option<String>,
}

/// An address blocked from automatic answers after a bounce.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BounceBlock {
    pub address: String,
    pub until: String,
    pub bounce: Option<String>,
    pub since: String,
}

/// One look at a page that shows a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct View {
    pub time: String,
    pub viewer: String,
    pub page: String,
}

impl Journal {
    /// Breakers opened since `since` (an audit time), newest first.
    pub fn breaker_events(&self, since: &str) -> Result<Vec<BreakerEvent>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT opened, setting, reason, closed, closed_by FROM breaker
             WHERE opened >= ?1 OR closed IS NULL ORDER BY id DESC LIMIT 200",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(BreakerEvent {
                opened: r.get(0)?,
                setting: r.get(1)?,
                reason: r.get(2)?,
                closed: r.get(3)?,
                closed_by: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Bounce blocks written since `since`, or still in force; newest first.
    pub fn bounce_blocks(&self, since: &str) -> Result<Vec<BounceBlock>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT address, until, bounce, updated FROM bounced
             WHERE updated >= ?1 OR until > strftime('%Y-%m-%dT%H:%M:%SZ','now')
             ORDER BY updated DESC LIMIT 200",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(BounceBlock {
                address: r.get(0)?,
                until: r.get(1)?,
                bounce: r.get(2)?,
                since: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that `viewer` looked at `page` (showing audit record `audit_id`).
    pub fn record_view(&self, viewer: &str, page: &str, audit_id: Option<i64>) -> Result<()> {
        self.db
            .prepare_cached(
                "INSERT INTO views(time, viewer, page, audit_id)
                 VALUES (strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?1, ?2, ?3)",
            )?
            .execute(params![viewer, page, audit_id])?;
        Ok(())
    }

    /// The message as received, when it is still kept (`service.keep_messages_days`).
    pub fn raw_at(&self, uidvalidity: u32, uid: u32) -> Result<Option<Vec<u8>>> {
        use rusqlite::OptionalExtension;
        let row: Option<(Option<Vec<u8>>, Option<String>)> = self
            .db
            .prepare_cached(
                "SELECT raw, raw_ref FROM messages WHERE uidvalidity = ?1 AND uid = ?2",
            )?
            .query_row(params![uidvalidity, uid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(raw, reference)| self.bytes(raw, reference)))
    }

    /// Who looked at the decision whose first record is `audit_id`, newest first.
    pub fn views_of(&self, audit_id: i64) -> Result<Vec<View>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT time, viewer, page FROM views WHERE audit_id = ?1 ORDER BY id DESC LIMIT 100",
        )?;
        let rows = stmt.query_map([audit_id], |r| {
            Ok(View {
                time: r.get(0)?,
                viewer: r.get(1)?,
                page: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
