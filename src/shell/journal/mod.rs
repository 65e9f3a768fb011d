//! The journal: what happened to every message, in SQLite (WAL), so that a restart after
//! a crash neither answers anything twice nor forgets anything.
//!
//! A message's state only moves forward: seen → planned → sending → sent → filed, or
//! → human. Each outgoing message has its own row: `sending` before the SMTP transaction,
//! `committing` just before its final dot, `sent` the moment the server has accepted it,
//! `filed` once its copy is in Sent. After a crash, `sending` means nothing went out; a
//! row still `committing` is settled by looking for its deterministic Message-ID in Sent
//! or for the desk's own copy (`received`). Messages are keyed by Message-ID as well as by (UIDVALIDITY, UID),
//! so a mailbox rebuilt with new UIDs is not answered again.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::core::plan::{Kind, Outgoing, Plan};

mod checkpoint;
mod crm;
mod kept;
pub use kept::Kept;
mod migrations;
mod review;
pub use review::{BounceBlock, BreakerEvent, View};

pub struct Journal {
    /// Stopped before `db` closes (fields drop in order), so that closing the last
    /// connection makes the final checkpoint.
    checkpointer: Option<checkpoint::Checkpointer>,
    db: Connection,
    /// The messages' bytes, kept beside the journal for replay.
    kept: std::sync::Arc<Kept>,
}

/// The journal's error: SQLite's, named as the journal's so that the service can tell it
/// from a mailbox or SMTP failure.
#[derive(Debug, thiserror::Error)]
#[error("journal: {0}")]
pub struct Error(#[from] rusqlite::Error);

pub type Result<T> = std::result::Result<T, Error>;

/// Where a message is: the folder and its place there. The audit log records all three.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    pub mailbox: &'a str,
    pub uidvalidity: u32,
    pub uid: u32,
}

impl<'a> MessageRef<'a> {
    pub fn new(mailbox: &'a str, uidvalidity: u32, uid: u32) -> MessageRef<'a> {
        MessageRef {
            mailbox,
            uidvalidity,
            uid,
        }
    }
}

/// What an audit record says beyond the plan: the outcome, its detail, the message sent
/// (recipients, template, documents) and the server's words when it refused.
#[derive(Clone, Copy)]
struct Record<'a> {
    outcome: &'a str,
    detail: &'a str,
    sent: Option<&'a Outgoing>,
    error: Option<&'a str>,
}

/// An outgoing message's row in the outbox, in the order it moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    /// Before the SMTP transaction: nothing can have gone out.
    Sending,
    /// The server said 354 to DATA and the message's final dot is on its way.
    Committing,
    /// The desk's own copy came back to the inbox: the server accepted it.
    Received,
    /// The server said 250.
    Sent,
    /// Its copy's APPEND to Sent is on its way: after a crash the server may still be
    /// saving it (`COPY_SETTLES_SECONDS`).
    Appending,
    /// The server refused it for good (5xx).
    Failed,
    /// Its copy is in Sent (or the server keeps its own): nothing more to do.
    Filed,
    /// A draft for a person, before its APPEND to Drafts.
    Drafting,
    /// The draft is in Drafts, waiting for a person.
    Drafted,
    /// A person sent the draft.
    Approved,
    /// The draft left Drafts unsent.
    Discarded,
}

impl Outbox {
    pub fn as_str(self) -> &'static str {
        match self {
            Outbox::Sending => "sending",
            Outbox::Committing => "committing",
            Outbox::Received => "received",
            Outbox::Sent => "sent",
            Outbox::Appending => "appending",
            Outbox::Failed => "failed",
            Outbox::Filed => "filed",
            Outbox::Drafting => "drafting",
            Outbox::Drafted => "drafted",
            Outbox::Approved => "approved",
            Outbox::Discarded => "discarded",
        }
    }

    fn parse(s: &str) -> Option<Outbox> {
        [
            Outbox::Sending,
            Outbox::Committing,
            Outbox::Received,
            Outbox::Sent,
            Outbox::Appending,
            Outbox::Failed,
            Outbox::Filed,
            Outbox::Drafting,
            Outbox::Drafted,
            Outbox::Approved,
            Outbox::Discarded,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// An audit record's plan when it is the one its message's row holds (a filing done as
/// planned): stored once, there. Only `record_planned` writes a message's plan, and not
/// once the message is finished, so the record keeps reading the plan it was made with.
const AS_PLANNED: &str = "=";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Seen = 0,
    Planned = 1,
    Sending = 2,
    Sent = 3,
    Filed = 4,
    Human = 5,
}

impl State {
    fn from_i64(v: i64) -> State {
        match v {
            0 => State::Seen,
            1 => State::Planned,
            2 => State::Sending,
            3 => State::Sent,
            4 => State::Filed,
            _ => State::Human,
        }
    }
    pub fn is_final(self) -> bool {
        matches!(self, State::Filed | State::Human)
    }
}

impl Journal {
    pub fn open(path: &Path) -> Result<Journal> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a commit survives the process being killed (it is in the
        // OS cache) without an fsync. That keeps the gap between the SMTP server's
        // "250 queued" and our `sent` record to microseconds, which is what matters
        // for answering exactly once; only a power cut can lose the last commits.
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Without the service's checkpoint thread (the command-line tools, the review
        // pages): checkpoint every ~16 MB of WAL rather than every 4 MB.
        db.pragma_update(None, "wal_autocheckpoint", 4000)?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        // A statement that may change several rows (an upsert, INSERT … SELECT) keeps
        // the pages it changes in a statement journal, to undo itself alone. Once that
        // outgrew 64 KB in a long transaction it became a temporary file written with a
        // system call per page: a quarter of a filing outcome's time (`perf`). In memory
        // it is only ever one statement's pages.
        db.pragma_update(None, "temp_store", "MEMORY")?;
        // Every statement here is prepared once and reused (a batch of 200 messages runs
        // each of them hundreds of times).
        db.set_prepared_statement_cache_capacity(64);
        migrations::apply(&db)?;
        let kept = std::sync::Arc::new(Kept::beside(path));
        Ok(Journal {
            checkpointer: None,
            db,
            kept,
        })
    }

    /// For the service: checkpoints every second in a thread of their own instead of
    /// inside a commit (see `checkpoint`). Without the thread the automatic checkpoint
    /// stays on.
    pub fn checkpoint_in_background(&mut self) {
        self.checkpoint_in_background_every(checkpoint::EVERY);
    }

    /// With the checkpoint thread: its next checkpoint now (see `Checkpointer::soon`).
    pub fn checkpoint_soon(&self) {
        if let Some(c) = &self.checkpointer {
            c.soon();
        }
    }

    fn checkpoint_in_background_every(&mut self, every: std::time::Duration) {
        let path = Path::new(self.db.path().unwrap_or_default());
        match checkpoint::Checkpointer::start(path, every) {
            Ok(c) => match self.db.pragma_update(None, "wal_autocheckpoint", 0) {
                Ok(()) => self.checkpointer = Some(c),
                Err(e) => tracing::warn!("journal: automatic checkpoints stay on: {e}"),
            },
            Err(e) => tracing::warn!(
                "journal: no checkpoint thread, checkpoints stay in the commits: {e}"
            ),
        }
    }

    /// The folder's UIDVALIDITY and last UID handled, if known.
    pub fn folder(&self, name: &str) -> Result<Option<(u32, u32)>> {
        self.db
            .prepare_cached("SELECT uidvalidity, last_uid FROM folders WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(Error::from)
    }

    pub fn set_folder(&self, name: &str, uidvalidity: u32, last_uid: u32) -> Result<()> {
        self.db.prepare_cached("INSERT INTO folders(name, uidvalidity, last_uid) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET uidvalidity = ?2, last_uid = MAX(CASE WHEN uidvalidity = ?2 THEN last_uid ELSE 0 END, ?3)")?.execute(
            params![name, uidvalidity, last_uid],
        )?;
        Ok(())
    }

    pub fn state(&self, uidvalidity: u32, uid: u32) -> Result<Option<State>> {
        self.db
            .prepare_cached("SELECT state FROM messages WHERE uidvalidity = ?1 AND uid = ?2")?
            .query_row([uidvalidity, uid], |r| r.get::<_, i64>(0))
            .optional()
            .map(|o| o.map(State::from_i64))
            .map_err(Error::from)
    }

    /// The highest UID recorded under this UIDVALIDITY: nothing is known above it, so a
    /// backlog's new mail needs no lookup at all (one per UID cost ~30 ms at 10,000).
    pub fn highest_uid(&self, uidvalidity: u32) -> Result<Option<u32>> {
        self.db
            .prepare_cached("SELECT MAX(uid) FROM messages WHERE uidvalidity = ?1")?
            .query_row([uidvalidity], |r| r.get::<_, Option<u32>>(0))
            .map_err(Error::from)
    }

    /// The furthest state any copy of this Message-ID reached (another UID, another
    /// UIDVALIDITY): a message already answered is never answered again.
    pub fn state_by_message_id(&self, message_id: &str) -> Result<Option<State>> {
        self.db
            .prepare_cached("SELECT MAX(state) FROM messages WHERE message_id = ?1")?
            .query_row([message_id], |r| r.get::<_, Option<i64>>(0))
            .map(|o| o.map(State::from_i64))
            .map_err(Error::from)
    }

    /// The furthest state this Message-ID reached, and whether a copy of the same size
    /// (or of unknown size) is among them: only then is it the same message.
    pub fn seen_before(&self, message_id: &str, size: u32) -> Result<Option<(State, bool)>> {
        self.db.prepare_cached("SELECT MAX(state), MAX(size IS NULL OR size = ?2) FROM messages WHERE message_id = ?1")?.query_row(
                params![message_id, size],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<bool>>(1)?)),
            )
            .map(|(state, same)| state.map(|s| (State::from_i64(s), same.unwrap_or(false))))
            .map_err(Error::from)
    }

    /// Keeps the message's bytes for `triage replay` (once: a message decided again
    /// after a restart is not written twice). A disk that refuses them costs the replay
    /// of this message, not its handling.
    pub fn keep_raw(&self, uidvalidity: u32, uid: u32, raw: &[u8]) -> Result<()> {
        let kept: bool = self
            .db
            .prepare_cached(
                "SELECT raw IS NOT NULL OR raw_ref IS NOT NULL FROM messages WHERE uidvalidity = ?1 AND uid = ?2",
            )?
            .query_row(params![uidvalidity, uid], |r| r.get(0))
            .optional()?
            .unwrap_or(false);
        if kept {
            return Ok(());
        }
        if let Some(reference) = self.kept.keep(uid, raw) {
            self.db
                .prepare_cached(
                    "UPDATE messages SET raw_ref = ?3 WHERE uidvalidity = ?1 AND uid = ?2",
                )?
                .execute(params![uidvalidity, uid, reference])?;
        }
        Ok(())
    }

    /// The bytes of a row: in the row itself (older journals) or in a day file.
    fn bytes(&self, raw: Option<Vec<u8>>, reference: Option<String>) -> Option<Vec<u8>> {
        raw.or_else(|| reference.and_then(|r| self.kept.read(&r)))
    }

    /// Forgets the bytes of messages last touched more than `days` ago.
    pub fn expire_raw(&self, days: u32) -> Result<usize> {
        self.kept.expire(days);
        self.db
            .prepare_cached(
                "UPDATE messages SET raw = NULL, raw_ref = NULL
             WHERE (raw IS NOT NULL OR raw_ref IS NOT NULL)
             AND updated < strftime('%Y-%m-%dT%H:%M:%fZ','now', ?1)",
            )?
            .execute([format!("-{days} days")])
            .map_err(Error::from)
    }

    /// Messages decided since `since` (an audit time) whose bytes are kept.
    pub fn replayable(&self, since: &str) -> Result<Vec<Decided>> {
        let mut stmt = self.db.prepare(
            "SELECT updated, message_id, plan, raw, raw_ref FROM messages
             WHERE (raw IS NOT NULL OR raw_ref IS NOT NULL) AND updated >= ?1 ORDER BY updated",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?
                    .and_then(|p| serde_json::from_str(&p).ok()),
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (time, id, plan, raw, reference) = row?;
            if let Some(raw) = self.bytes(raw, reference) {
                out.push((time, id, plan, raw));
            }
        }
        Ok(out)
    }

    pub fn plan(&self, uidvalidity: u32, uid: u32) -> Result<Option<Plan>> {
        let text: Option<Option<String>> = self
            .db
            .prepare_cached("SELECT plan FROM messages WHERE uidvalidity = ?1 AND uid = ?2")?
            .query_row([uidvalidity, uid], |r| r.get(0))
            .optional()?;
        Ok(text.flatten().and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Where the messages' bytes are kept: the deciders write them as they decide.
    pub fn kept(&self) -> std::sync::Arc<Kept> {
        self.kept.clone()
    }

    /// A decision made durable in one statement: the plan, the message's size, and
    /// where its bytes were kept (`Kept::write`), if they were.
    pub fn record_planned(
        &self,
        at: (u32, u32),
        key: &str,
        plan: &Plan,
        size: u32,
        kept: Option<&str>,
    ) -> Result<()> {
        let (uidvalidity, uid) = at;
        let json = serde_json::to_string(plan).unwrap_or_default();
        self.db.prepare_cached("INSERT INTO messages(uidvalidity, uid, message_id, state, plan, reason, updated, size, raw_ref)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?9, ?7, ?8)
             ON CONFLICT(uidvalidity, uid) DO UPDATE SET
                 state = MAX(state, ?4), plan = CASE WHEN state >= ?10 THEN plan ELSE ?5 END,
                 reason = ?6, updated = ?9,
                 size = ?7, raw_ref = COALESCE(raw_ref, ?8)")?.execute(
            params![uidvalidity, uid, key, State::Planned as i64, json, plan.reason, size, kept, now(), State::Filed as i64],
        )?;
        Ok(())
    }

    /// Moves the message forward to `state`; never backward.
    pub fn advance(
        &self,
        uidvalidity: u32,
        uid: u32,
        message_id: Option<&str>,
        state: State,
        reason: &str,
    ) -> Result<()> {
        // The plan is `record_planned`'s alone to write.
        self.db
            .prepare_cached(
                "INSERT INTO messages(uidvalidity, uid, message_id, state, reason, updated)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(uidvalidity, uid) DO UPDATE SET
                 state = MAX(state, ?4), reason = ?5, updated = ?6",
            )?
            .execute(params![
                uidvalidity,
                uid,
                message_id,
                state as i64,
                reason,
                now()
            ])?;
        Ok(())
    }

    /// Messages of this UIDVALIDITY whose plan is not finished: (uid, state, plan).
    pub fn unfinished(&self, uidvalidity: u32) -> Result<Vec<(u32, State, Option<Plan>)>> {
        let mut stmt = self.db.prepare(
            "SELECT uid, state, plan FROM messages WHERE uidvalidity = ?1 AND state < ?2 ORDER BY uid",
        )?;
        let rows = stmt.query_map(params![uidvalidity, State::Filed as i64], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                State::from_i64(r.get(1)?),
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        rows.map(|r| r.map(|(uid, st, p)| (uid, st, p.and_then(|t| serde_json::from_str(&t).ok()))))
            .collect::<rusqlite::Result<_>>()
            .map_err(Error::from)
    }

    /// Was this message already decided in shadow mode?
    pub fn shadowed(&self, uidvalidity: u32, uid: u32) -> Result<bool> {
        self.db.prepare_cached("SELECT 1 FROM audit WHERE uidvalidity = ?1 AND uid = ?2 AND outcome = 'shadow' LIMIT 1")?.query_row(
                [uidvalidity, uid],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(Error::from)
    }

    pub fn outbox_state(&self, message_id: &str) -> Result<Option<Outbox>> {
        let state: Option<String> = self
            .db
            .prepare_cached("SELECT state FROM outbox WHERE message_id = ?1")?
            .query_row([message_id], |r| r.get(0))
            .optional()?;
        Ok(state.as_deref().and_then(Outbox::parse))
    }

    /// The original's key of an answer that may have gone out (any outbox state past
    /// `sending`, which never leaves the machine); None for ids we never sent.
    pub fn sent_answer_original(&self, message_id: &str) -> Result<Option<String>> {
        self.db
            .prepare_cached(
                "SELECT original FROM outbox WHERE lower(message_id) = lower(?1) AND state NOT IN ('sending', 'failed', 'drafting', 'drafted', 'discarded')",
            )?
            .query_row([message_id], |r| r.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(Error::from)
    }

    /// The stored plans of the messages with this key (Message-ID or digest).
    pub fn plans_by_key(&self, key: &str) -> Result<Vec<Plan>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT plan FROM messages WHERE message_id = ?1 AND plan IS NOT NULL",
        )?;
        let rows = stmt.query_map([key], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            if let Ok(plan) = serde_json::from_str(&row?) {
                out.push(plan);
            }
        }
        Ok(out)
    }

    /// Seconds since the outbox row last changed state (for a `committing` row: since
    /// the message's final dot may have gone out).
    pub fn outbox_age_seconds(&self, message_id: &str) -> Result<Option<f64>> {
        self.db
            .prepare_cached(
                "SELECT (julianday('now') - julianday(updated)) * 86400.0 FROM outbox WHERE message_id = ?1",
            )?
            .query_row([message_id], |r| r.get(0))
            .optional()
            .map_err(Error::from)
    }

    pub fn set_outbox(
        &self,
        message_id: &str,
        original: Option<&str>,
        state: Outbox,
    ) -> Result<()> {
        self.db.prepare_cached("INSERT INTO outbox(message_id, original, state, updated) VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
             ON CONFLICT(message_id) DO UPDATE SET state = ?3, updated = strftime('%Y-%m-%dT%H:%M:%fZ','now')")?.execute(
            params![message_id, original, state.as_str()],
        )?;
        Ok(())
    }

    /// The SMTP server accepted an outgoing message: its outbox row and its audit record
    /// are written in one transaction, so neither exists without the other.
    pub fn record_sent(
        &self,
        message_id: &str,
        original: &str,
        at: MessageRef,
        plan: &Plan,
        sent: &Outgoing,
        detail: &str,
    ) -> Result<()> {
        let outcome = match sent.kind {
            Kind::Reply => "replied",
            _ => "forwarded",
        };
        self.together(|| {
            self.set_outbox(message_id, Some(original), Outbox::Sent)?;
            let record = Record {
                outcome,
                detail,
                sent: Some(sent),
                error: None,
            };
            self.insert_audit(at, plan, &record)
        })
    }

    /// The message's final state (filed, or left for a human) and its audit record, in
    /// one transaction: a kill between the two would leave a decision nobody can review.
    #[allow(clippy::too_many_arguments)]
    pub fn conclude(
        &self,
        at: MessageRef,
        key: Option<&str>,
        state: State,
        plan: &Plan,
        reason: &str,
        outcome: &str,
        detail: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.together(|| {
            self.advance(at.uidvalidity, at.uid, key, state, reason)?;
            let record = Record {
                outcome,
                detail,
                sent: None,
                error,
            };
            self.insert_audit(at, plan, &record)
        })
    }

    /// A draft is in Drafts: its outbox row and its audit record (recipients, template,
    /// documents) together.
    pub fn record_drafted(
        &self,
        message_id: &str,
        original: &str,
        at: MessageRef,
        plan: &Plan,
        draft: &Outgoing,
        detail: &str,
    ) -> Result<()> {
        self.together(|| {
            self.set_outbox(message_id, Some(original), Outbox::Drafted)?;
            let record = Record {
                outcome: "drafted",
                detail,
                sent: Some(draft),
                error: None,
            };
            self.insert_audit(at, plan, &record)
        })
    }

    /// What became of a draft (approved or discarded), with its audit record.
    pub fn settle_draft(
        &self,
        message_id: &str,
        state: Outbox,
        at: MessageRef,
        plan: &Plan,
        detail: &str,
    ) -> Result<()> {
        self.together(|| {
            self.set_outbox(message_id, None, state)?;
            self.audit(at, plan, state.as_str(), detail)
        })
    }

    /// Drafts waiting for a person: (draft Message-ID, original's key, minutes since
    /// written), oldest first, at most `limit`.
    pub fn waiting_drafts(&self, limit: u32) -> Result<Vec<(String, String, f64)>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT message_id, original, (julianday('now') - julianday(updated)) * 1440.0
             FROM outbox WHERE state = 'drafted' ORDER BY updated LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The bytes of the message with this key, when they are still kept.
    pub fn raw_of(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row: Option<(Option<Vec<u8>>, Option<String>)> = self
            .db
            .prepare_cached(
                "SELECT raw, raw_ref FROM messages WHERE message_id = ?1
                 AND (raw IS NOT NULL OR raw_ref IS NOT NULL) LIMIT 1",
            )?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(row.and_then(|(raw, reference)| self.bytes(raw, reference)))
    }

    /// How many drafts wait for a person.
    pub fn drafts_waiting(&self) -> Result<usize> {
        let n: i64 = self
            .db
            .prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'drafted'")?
            .query_row([], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// Where the message with this key was last seen, and its plan.
    pub fn place_of(&self, key: &str) -> Result<Option<(u32, u32, Option<Plan>)>> {
        let row: Option<(u32, u32, Option<String>)> = self
            .db
            .prepare_cached(
                "SELECT uidvalidity, uid, plan FROM messages WHERE message_id = ?1
                 ORDER BY updated DESC LIMIT 1",
            )?
            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(row.map(|(v, u, p)| (v, u, p.and_then(|t| serde_json::from_str(&t).ok()))))
    }

    /// Filed where `folder` says: the plan done.
    pub fn conclude_filed(
        &self,
        at: MessageRef,
        key: &str,
        plan: &Plan,
        folder: &str,
    ) -> Result<()> {
        self.conclude(
            at,
            Some(key),
            State::Filed,
            plan,
            &plan.reason,
            "filed",
            folder,
            None,
        )
    }

    /// As `conclude_filed`, for a plan known to be the one recorded as planned for this
    /// message: its audit record says so (`AS_PLANNED`) instead of holding the JSON a
    /// second time, and is read with the message's (`audit_rows`): the sort job of
    /// 10,000, alternating, medians 0.77 against 0.81 s. Falls back to writing the plan
    /// out when no plan is stored.
    pub fn conclude_filed_as_planned(
        &self,
        at: MessageRef,
        key: &str,
        plan: &Plan,
        folder: &str,
    ) -> Result<()> {
        self.together(|| {
            // Single-row statements: an upsert or INSERT … SELECT may change several
            // rows, and SQLite then keeps a statement journal of every page it changes
            // (a third of an audit INSERT's time, `perf`).
            let (now, state) = (now(), State::Filed as i64);
            let stored = self.db.prepare_cached(
                "UPDATE messages SET state = MAX(state, ?1), reason = ?2, updated = ?3
                 WHERE uidvalidity = ?4 AND uid = ?5 AND plan IS NOT NULL",
            )?.execute(params![state, plan.reason, now, at.uidvalidity, at.uid])?;
            if stored == 0 {
                self.advance(at.uidvalidity, at.uid, Some(key), State::Filed, &plan.reason)?;
                return self.audit(at, plan, "filed", folder);
            }
            self.db.prepare_cached(
                "INSERT INTO audit(time, mailbox, uidvalidity, uid, message_id, sender, subject, category, rule, respond, reason, outcome, detail, plan)
                 VALUES (?12, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'filed', ?11, ?13)",
            )?.execute(rusqlite::params_from_iter(
                audit_head(&at, plan).into_iter().chain(params![folder, now, AS_PLANNED].iter().copied()),
            ))?;
            Ok(())
        })
    }

    /// Left for a person, with the reason (and the SMTP server's words, if it refused).
    pub fn conclude_human(
        &self,
        at: MessageRef,
        key: &str,
        plan: &Plan,
        reason: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.conclude(
            at,
            Some(key),
            State::Human,
            plan,
            reason,
            "left for human",
            reason,
            error,
        )
    }

    /// Runs the steps in one transaction (or in the one already open): a batch of
    /// records costs one commit.
    pub fn together(&self, steps: impl FnOnce() -> Result<()>) -> Result<()> {
        if !self.db.is_autocommit() {
            return steps();
        }
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        match steps() {
            Ok(()) => Ok(self.db.execute_batch("COMMIT")?),
            Err(e) => {
                let _ = self.db.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Runs the lookups in one read transaction (or in the one already open). On its
    /// own each lookup is a transaction of its own, and each takes and drops a lock on
    /// the WAL index with two fcntl calls: 40,000 of them in a 10,000 backlog (`strace`).
    /// Nothing may be written inside: a write would need the snapshot to be the newest.
    pub fn reading<T, E: From<Error>>(
        &self,
        lookups: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        if !self.db.is_autocommit() {
            return lookups();
        }
        self.db
            .execute_batch("BEGIN DEFERRED")
            .map_err(Error::from)?;
        let done = lookups();
        // Only read: ending it cannot lose anything, and its error is not the caller's.
        let _ = self
            .db
            .execute_batch(if done.is_ok() { "COMMIT" } else { "ROLLBACK" });
        done
    }

    /// One audit record: a decision or an action. Append-only.
    pub fn audit(&self, at: MessageRef, plan: &Plan, outcome: &str, detail: &str) -> Result<()> {
        let record = Record {
            outcome,
            detail,
            sent: None,
            error: None,
        };
        self.insert_audit(at, plan, &record)
    }

    fn insert_audit(&self, at: MessageRef, plan: &Plan, record: &Record) -> Result<()> {
        let Record {
            outcome,
            detail,
            sent,
            error,
        } = *record;
        let attachments = sent.map(|o| {
            let list: Vec<serde_json::Value> = o
                .attachments
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    serde_json::json!({"name": name, "sha256": o.attachment_sha256.get(i)})
                })
                .collect();
            serde_json::Value::Array(list).to_string()
        });
        self.db.prepare_cached("INSERT INTO audit(time, mailbox, uidvalidity, uid, message_id, sender, subject, category, rule, respond, reason, outcome, detail,
                               plan, to_addrs, cc_addrs, template, attachments, error)
             VALUES (?19, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)")?.execute(
            rusqlite::params_from_iter(audit_head(&at, plan).into_iter().chain(
                params![
                    outcome,
                    detail,
                    serde_json::to_string(plan).ok(),
                    sent.map(|o| o.to.join(", ")),
                    sent.map(|o| o.cc.join(", ")),
                    sent.map(|o| o.template.as_str()),
                    attachments,
                    error,
                    now(),
                ]
                .iter()
                .copied(),
            )),
        )?;
        Ok(())
    }

    /// Audit records older than `days` are deleted (`service.audit_retention_days`),
    /// and the record of who looked at them with them.
    pub fn expire_audit(&self, days: u32) -> Result<usize> {
        let age = format!("-{days} days");
        self.db
            .prepare_cached(
                "DELETE FROM views WHERE time < strftime('%Y-%m-%dT%H:%M:%fZ','now', ?1)",
            )?
            .execute([&age])?;
        self.db
            .prepare_cached(
                "DELETE FROM audit WHERE time < strftime('%Y-%m-%dT%H:%M:%fZ','now', ?1)",
            )?
            .execute([&age])
            .map_err(Error::from)
    }

    /// Automatic replies to this sender in this category within the last `hours`.
    pub fn answers_to_sender(&self, sender: &str, category: &str, hours: u32) -> Result<u32> {
        self.db.prepare_cached("SELECT COUNT(DISTINCT message_id) FROM audit WHERE outcome = 'replied' AND sender = ?1
             AND category = ?2 AND time >= strftime('%Y-%m-%dT%H:%M:%fZ','now', ?3)")?.query_row(
            params![sender, category, format!("-{hours} hours")],
            |r| r.get(0),
        )
            .map_err(Error::from)
    }

    /// Messages (replies and forwards) sent within the last `minutes`.
    pub fn sent_recently(&self, minutes: u32) -> Result<u32> {
        self.db
            .prepare_cached(
                "SELECT COUNT(*) FROM audit WHERE outcome IN ('replied', 'forwarded')
             AND time >= strftime('%Y-%m-%dT%H:%M:%fZ','now', ?1)",
            )?
            .query_row([format!("-{minutes} minutes")], |r| r.get(0))
            .map_err(Error::from)
    }

    /// The open circuit breaker for this setting: "since TIME: REASON". One opened under
    /// another setting no longer counts: the operator changed the limit on purpose.
    pub fn breaker_open(&self, setting: &str) -> Result<Option<String>> {
        self.db
            .prepare_cached(
                "SELECT opened, reason FROM breaker WHERE closed IS NULL AND setting = ?1
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([setting], |r| {
                Ok(format!(
                    "since {}: {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?
                ))
            })
            .optional()
            .map_err(Error::from)
    }

    pub fn open_breaker(&self, setting: &str, reason: &str) -> Result<()> {
        self.db.prepare_cached("INSERT INTO breaker(opened, setting, reason) VALUES (strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?1, ?2)")?.execute(
            params![setting, reason],
        )?;
        Ok(())
    }

    /// Closes every open breaker; returns how many were open.
    pub fn reset_breaker(&self, by: &str) -> Result<usize> {
        self.db.prepare_cached("UPDATE breaker SET closed = strftime('%Y-%m-%dT%H:%M:%fZ','now'), closed_by = ?1 WHERE closed IS NULL")?.execute(
            [by],
        )
            .map_err(Error::from)
    }

    /// Blocks automatic answers to these addresses for `days`, from now.
    pub fn block_bounced(&self, addresses: &[String], days: u32, bounce: &str) -> Result<()> {
        for a in addresses {
            self.db.prepare_cached("INSERT INTO bounced(address, until, bounce, updated)
                 VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ','now', ?2), ?3, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
                 ON CONFLICT(address) DO UPDATE SET until = excluded.until, bounce = excluded.bounce, updated = excluded.updated")?.execute(
                params![a.to_lowercase(), format!("+{days} days"), bounce],
            )?;
        }
        Ok(())
    }

    /// Those of `addresses` still blocked after a bounce, with the end of the block.
    pub fn bounced<'a>(
        &self,
        addresses: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<(String, String)>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT until FROM bounced WHERE address = ?1 AND until > strftime('%Y-%m-%dT%H:%M:%SZ','now')",
        )?;
        let mut out = Vec::new();
        for a in addresses {
            let a = a.to_lowercase();
            if let Some(until) = stmt.query_row([&a], |r| r.get::<_, String>(0)).optional()? {
                out.push((a, until));
            }
        }
        Ok(out)
    }

    /// Audit records matching the filter, oldest first.
    pub fn audit_rows(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        // The plans are the bulk of the records: a list that does not show them skips them.
        let plan = if f.without_plans {
            "NULL"
        } else {
            "CASE WHEN plan = ?2 THEN (SELECT m.plan FROM messages m
                 WHERE m.uidvalidity = audit.uidvalidity AND m.uid = audit.uid) ELSE plan END"
        };
        let mut sql = format!(
            "SELECT id, time, mailbox, uidvalidity, uid, message_id, sender, subject, category, rule,
                    respond, reason, outcome, detail, {plan}, to_addrs, cc_addrs, template, attachments, error
             FROM audit WHERE id > ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![f.after_id.into()];
        if !f.without_plans {
            args.push(AS_PLANNED.to_string().into());
        }
        let mut push = |clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(t) = &f.since {
            push(" AND time >= ?", t.clone().into());
        }
        if let Some(t) = &f.until {
            push(" AND time < ?", t.clone().into());
        }
        if let Some(v) = &f.category {
            push(" AND category = ?", v.clone().into());
        }
        if let Some(v) = &f.outcome {
            push(" AND outcome = ?", v.clone().into());
        }
        if let Some(v) = &f.sender {
            push(
                " AND lower(sender) LIKE ?",
                format!("%{}%", v.to_lowercase()).into(),
            );
        }
        if let Some(v) = &f.rule {
            push(" AND rule = ?", v.clone().into());
        }
        if let Some(v) = &f.message_id {
            push(
                " AND message_id = ?",
                v.trim_matches(['<', '>']).to_string().into(),
            );
        }
        if let Some(id) = f.id {
            push(" AND id = ?", id.into());
        }
        sql.push_str(" ORDER BY id");
        let mut stmt = self.db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                time: r.get(1)?,
                mailbox: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                uidvalidity: r.get::<_, Option<u32>>(3)?.unwrap_or_default(),
                uid: r.get::<_, Option<u32>>(4)?.unwrap_or_default(),
                message_id: r.get(5)?,
                sender: r.get(6)?,
                subject: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                category: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                rule: r.get(9)?,
                respond: r.get::<_, Option<String>>(10)?.unwrap_or_default(),
                reason: r.get::<_, Option<String>>(11)?.unwrap_or_default(),
                outcome: r.get(12)?,
                detail: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
                plan: r
                    .get::<_, Option<String>>(14)?
                    .and_then(|p| serde_json::from_str(&p).ok()),
                to: r.get(15)?,
                cc: r.get(16)?,
                template: r.get(17)?,
                attachments: r
                    .get::<_, Option<String>>(18)?
                    .and_then(|a| serde_json::from_str(&a).ok()),
                error: r.get(19)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A time as the audit log writes it, from a date, a date and time, or an age
    /// (`24h`, `7d`, `30m`); None when SQLite cannot read it.
    pub fn audit_time(&self, text: &str) -> Result<Option<String>> {
        let t = text.trim();
        let relative = t
            .strip_suffix(['m', 'h', 'd'])
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| {
                let unit = match t.chars().last() {
                    Some('m') => "minutes",
                    Some('h') => "hours",
                    _ => "days",
                };
                format!("-{n} {unit}")
            });
        let (base, modifier) = match relative {
            Some(m) => ("now".to_string(), m),
            None => (
                t.trim_end_matches('Z').replace(' ', "T"),
                "+0 seconds".to_string(),
            ),
        };
        self.db
            .prepare_cached("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1, ?2)")?
            .query_row(params![base, modifier], |r| r.get(0))
            .map_err(Error::from)
    }
}

/// An audit record's first ten columns, as both INSERTs list them: where the message
/// is (mailbox, uidvalidity, uid), then from the plan (message_id, sender, subject,
/// category, rule, respond, reason).
fn audit_head<'a>(at: &'a MessageRef<'a>, plan: &'a Plan) -> [&'a dyn rusqlite::ToSql; 10] {
    [
        &at.mailbox,
        &at.uidvalidity,
        &at.uid,
        &plan.message_id,
        &plan.from,
        &plan.subject,
        &plan.category,
        &plan.rule,
        &plan.respond,
        &plan.reason,
    ]
}

impl rusqlite::ToSql for crate::core::rules::Category {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::ToSql for crate::core::rules::Respond {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

/// The time a row is written, as SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ','now')` gives
/// it (the same clock): made here, because SQLite's date function was 8 % of
/// `bench --bench journal` (three rows per message filed).
fn now() -> String {
    crate::core::dates::journal_time(crate::shell::clock::now_ms())
}

/// A message as decided then: (time, Message-ID, plan, bytes), for `triage replay`.
pub type Decided = (String, Option<String>, Option<Plan>, Vec<u8>);

/// Which audit records `triage audit` shows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub category: Option<String>,
    pub outcome: Option<String>,
    pub sender: Option<String>,
    pub rule: Option<String>,
    pub message_id: Option<String>,
    pub id: Option<i64>,
    /// Only records after this id (`--follow`).
    pub after_id: i64,
    /// Leave out each record's plan (lists that show no decision in full).
    pub without_plans: bool,
}

/// One audit record as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub time: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
    pub message_id: Option<String>,
    pub sender: Option<String>,
    pub subject: String,
    pub category: String,
    pub rule: Option<String>,
    pub respond: String,
    pub reason: String,
    pub outcome: String,
    pub detail: String,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub template: Option<String>,
    pub attachments: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The decision in full (fields, evidence, guards, outgoing), as `classify` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_uid_is_the_highest_recorded_under_that_uidvalidity_only() {
        let dir = std::env::temp_dir().join(format!("triage-highest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(&dir.join("journal.sqlite")).unwrap();
        assert_eq!(journal.highest_uid(7).unwrap(), None);
        for (uidvalidity, uid) in [(7, 3), (7, 41), (7, 12), (8, 900)] {
            journal
                .advance(uidvalidity, uid, None, State::Seen, "r")
                .unwrap();
        }
        assert_eq!(journal.highest_uid(7).unwrap(), Some(41));
        assert_eq!(journal.highest_uid(8).unwrap(), Some(900));
        assert_eq!(journal.highest_uid(9).unwrap(), None);
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lookups_read_together_leave_no_transaction_open_even_when_one_fails() {
        let dir = std::env::temp_dir().join(format!("triage-reading-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(&dir.join("journal.sqlite")).unwrap();
        journal
            .advance(7, 1, Some("a@x"), State::Filed, "r")
            .unwrap();
        let seen = journal
            .reading(|| Ok::<_, Error>((journal.state(7, 1)?, journal.state(7, 2)?)))
            .unwrap();
        assert_eq!(seen, (Some(State::Filed), None));
        assert!(journal.db.is_autocommit());
        let failed: std::result::Result<(), Error> = journal.reading(|| {
            journal.state(7, 1)?;
            Err(rusqlite::Error::InvalidQuery.into())
        });
        assert!(failed.is_err());
        assert!(
            journal.db.is_autocommit(),
            "a failed read left its transaction open"
        );
        // A write after them commits on its own, as before.
        journal
            .advance(7, 2, Some("b@x"), State::Seen, "r")
            .unwrap();
        drop(journal);
        let again = Journal::open(&dir.join("journal.sqlite")).unwrap();
        assert_eq!(again.state(7, 2).unwrap(), Some(State::Seen));
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_plan_filed_as_planned_is_audited_as_if_written_out() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = crate::core::config::Config::load(&repo.join("deploy/triage.yaml")).unwrap();
        let book = crate::core::plan::Playbook::load(config, None).unwrap();
        let raw = std::fs::read(repo.join("tests/cases/en-quote-request-ops-copied.eml")).unwrap();
        let plan = book.decide(&raw);
        let dir = std::env::temp_dir().join(format!("triage-as-planned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(&dir.join("journal.sqlite")).unwrap();
        let at = |uid| MessageRef::new("INBOX", 7, uid);
        for uid in [1, 2] {
            journal
                .record_planned((7, uid), "k", &plan, 100, None)
                .unwrap();
        }
        journal.conclude_filed(at(1), "k", &plan, "Orders").unwrap();
        journal
            .conclude_filed_as_planned(at(2), "k", &plan, "Orders")
            .unwrap();
        // No plan stored: written out, not lost.
        journal.advance(7, 3, Some("k"), State::Seen, "r").unwrap();
        journal
            .conclude_filed_as_planned(at(3), "k", &plan, "Orders")
            .unwrap();
        let rows = journal.audit_rows(&AuditFilter::default()).unwrap();
        assert_eq!(rows.len(), 3);
        let shown = |r: &AuditRow| {
            let mut v = serde_json::to_value(r).unwrap();
            for volatile in ["id", "time", "uid"] {
                v.as_object_mut().unwrap().remove(volatile);
            }
            v
        };
        assert!(rows.iter().all(|r| r.plan.as_ref() == Some(&plan)));
        assert_eq!(shown(&rows[0]), shown(&rows[1]));
        assert_eq!(shown(&rows[0]), shown(&rows[2]));
        for uid in [1, 2, 3] {
            assert_eq!(journal.state(7, uid).unwrap(), Some(State::Filed));
        }
        // Stored once, in the message's row; the record says so.
        let stored: String = journal
            .db
            .query_row("SELECT plan FROM audit WHERE uid = 2", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, AS_PLANNED);
        // A finished message keeps the plan its record was made with.
        let mut other = plan.clone();
        other.reason = "decided again".into();
        journal
            .record_planned((7, 2), "k", &other, 100, None)
            .unwrap();
        let again = journal.audit_rows(&AuditFilter::default()).unwrap();
        assert_eq!(shown(&again[1]), shown(&rows[1]));
        let listed = AuditFilter {
            without_plans: true,
            ..AuditFilter::default()
        };
        let listed = journal.audit_rows(&listed).unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|r| r.plan.is_none()));
        let by_outcome = AuditFilter {
            outcome: Some("filed".into()),
            ..AuditFilter::default()
        };
        assert_eq!(journal.audit_rows(&by_outcome).unwrap().len(), 3);
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn row_times_are_written_as_sqlite_writes_them() {
        let db = Connection::open_in_memory().unwrap();
        let now = crate::shell::clock::now_ms();
        // Leap days, ends of days and years, the epoch, and today.
        let samples = [
            0,
            999,
            59_999,
            86_399_999,
            951_782_400_001,
            1_704_067_199_999,
            now,
        ];
        for ms in samples
            .into_iter()
            .chain((0..2000).map(|k| now + k * 7_777_777))
        {
            let sqlite: String = db
                .query_row(
                    "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')",
                    [ms],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(crate::core::dates::journal_time(ms), sqlite, "at {ms} ms");
        }
    }
}
