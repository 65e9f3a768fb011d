//! The journal's schema, as numbered steps. `PRAGMA user_version` says how many have
//! run; opening a journal runs the rest, each in its own transaction, so a journal from
//! any earlier release is brought up to date and a newer one is refused.

use rusqlite::Connection;

use super::Result;

/// Each step once, in order; never edit a step that has shipped, add one.
const STEPS: &[&str] = &[
    // 1: messages, their outgoing answers, the audit log and the brakes.
    "CREATE TABLE IF NOT EXISTS folders (
                 name TEXT PRIMARY KEY, uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS messages (
                 uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, message_id TEXT,
                 state INTEGER NOT NULL, plan TEXT, reason TEXT, updated TEXT NOT NULL,
                 PRIMARY KEY (uidvalidity, uid));
             CREATE INDEX IF NOT EXISTS messages_by_id ON messages(message_id);
             CREATE TABLE IF NOT EXISTS outbox (
                 message_id TEXT PRIMARY KEY, original TEXT, state TEXT NOT NULL, updated TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS audit (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, mailbox TEXT, uidvalidity INTEGER,
                 uid INTEGER, message_id TEXT, sender TEXT, subject TEXT, category TEXT, rule TEXT,
                 respond TEXT, reason TEXT, outcome TEXT NOT NULL, detail TEXT);
             CREATE INDEX IF NOT EXISTS audit_by_time ON audit(time);
             CREATE INDEX IF NOT EXISTS audit_by_sender ON audit(sender, category);
             -- The brakes count answers per sender and in the last minutes on every
             -- decision: these indexes answer those counts without reading the records.
             CREATE INDEX IF NOT EXISTS audit_answers_by_sender
                 ON audit(sender, category, outcome, time, message_id);
             CREATE INDEX IF NOT EXISTS audit_by_outcome ON audit(outcome, time);
             CREATE TABLE IF NOT EXISTS bounced (
                 address TEXT PRIMARY KEY, until TEXT NOT NULL, bounce TEXT, updated TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS breaker (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, opened TEXT NOT NULL, setting TEXT NOT NULL,
                 reason TEXT NOT NULL, closed TEXT, closed_by TEXT);",
    // 2: the size tells a restored copy of a message from another message that reuses
    // its Message-ID.
    "ALTER TABLE messages ADD COLUMN size INTEGER",
    // 3: the message as received, kept for `triage replay` (service.keep_messages_days).
    "ALTER TABLE messages ADD COLUMN raw BLOB",
    // 4: the audit record in full: the decision (plan as JSON: fields, evidence, guards,
    // outgoing), and for each message sent its recipients, template and documents.
    "ALTER TABLE audit ADD COLUMN plan TEXT;
     ALTER TABLE audit ADD COLUMN to_addrs TEXT;
     ALTER TABLE audit ADD COLUMN cc_addrs TEXT;
     ALTER TABLE audit ADD COLUMN template TEXT;
     ALTER TABLE audit ADD COLUMN attachments TEXT;
     ALTER TABLE audit ADD COLUMN error TEXT;",
    // 5: who looked at which decision on the review pages, and when.
    "CREATE TABLE IF NOT EXISTS views (
         id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, viewer TEXT NOT NULL,
         page TEXT NOT NULL, audit_id INTEGER);
     CREATE INDEX IF NOT EXISTS views_by_audit ON views(audit_id);",
    // 6: each CRM step, by its marker: exported (to which file), done, or refused.
    "CREATE TABLE IF NOT EXISTS crm_actions (
         external_id TEXT PRIMARY KEY, message_key TEXT NOT NULL, kind TEXT NOT NULL,
         target TEXT NOT NULL, state TEXT NOT NULL, place TEXT, detail TEXT,
         updated TEXT NOT NULL);",
    // 7: the bytes kept for replay move out to day files (journal/kept.rs); the row
    // keeps where they are. Rows written before keep theirs in `raw`.
    "ALTER TABLE messages ADD COLUMN raw_ref TEXT",
    // 8: shadow mode asks, for every message of every pass, whether it was decided
    // already: without an index by message that read the whole audit log each time.
    // (sender, category) is a prefix of audit_answers_by_sender: one index less to write.
    "CREATE INDEX IF NOT EXISTS audit_by_message ON audit(uidvalidity, uid);
     DROP INDEX IF EXISTS audit_by_sender;",
    // 9: the brakes count only what was sent: their indexes hold only those records, so
    // the other records (all of a sort job's) write two index entries fewer.
    "DROP INDEX IF EXISTS audit_answers_by_sender;
     CREATE INDEX audit_answers_by_sender ON audit(sender, category, time, message_id)
         WHERE outcome = 'replied';
     DROP INDEX IF EXISTS audit_by_outcome;
     CREATE INDEX audit_sent ON audit(time) WHERE outcome IN ('replied', 'forwarded');",
];

/// Brings the journal's schema up to date.
pub fn apply(db: &Connection) -> Result<()> {
    let mut version = version(db)?;
    if version == 0 && has_table(db, "messages")? {
        // Written before the schema was numbered: it had every step up to 4.
        adopt_unnumbered(db)?;
        version = 4;
        db.pragma_update(None, "user_version", version)?;
    }
    if version > STEPS.len() as i64 {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the journal's schema is version {version}, newer than this triage knows ({}); use the newer release or a fresh journal",
            STEPS.len()
        ))
        .into());
    }
    for (n, step) in STEPS.iter().enumerate().skip(version as usize) {
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE; {step}; PRAGMA user_version = {}; COMMIT;",
            n + 1
        ))
        .inspect_err(|_| {
            let _ = db.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}

pub fn version(db: &Connection) -> Result<i64> {
    Ok(db.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

fn has_table(db: &Connection, name: &str) -> Result<bool> {
    Ok(db
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])?)
}

fn has_column(db: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(db
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
        ))?
        .exists([column])?)
}

/// A journal from before numbered steps: its columns were added by probing, so add
/// whichever of steps 2-4 it is missing.
fn adopt_unnumbered(db: &Connection) -> Result<()> {
    db.execute_batch(STEPS[0])?;
    for (table, column, kind) in [
        ("messages", "size", "INTEGER"),
        ("messages", "raw", "BLOB"),
        ("audit", "plan", "TEXT"),
        ("audit", "to_addrs", "TEXT"),
        ("audit", "cc_addrs", "TEXT"),
        ("audit", "template", "TEXT"),
        ("audit", "attachments", "TEXT"),
        ("audit", "error", "TEXT"),
    ] {
        if !has_column(db, table, column)? {
            db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_journal_gets_every_step_and_an_old_one_is_adopted() {
        let db = Connection::open_in_memory().unwrap();
        apply(&db).unwrap();
        assert_eq!(version(&db).unwrap(), STEPS.len() as i64);
        assert!(has_column(&db, "audit", "error").unwrap());
        apply(&db).unwrap(); // a second open changes nothing

        // As the release before numbered steps left it: no size, no raw, no audit plan.
        let old = Connection::open_in_memory().unwrap();
        old.execute_batch(STEPS[0]).unwrap();
        apply(&old).unwrap();
        assert_eq!(version(&old).unwrap(), STEPS.len() as i64);
        assert!(has_column(&old, "messages", "raw").unwrap());
        assert!(has_column(&old, "audit", "attachments").unwrap());

        // The questions asked on every message are answered from an index, not by
        // reading the audit log.
        for (query, index) in [
            ("SELECT 1 FROM audit WHERE uidvalidity = 1 AND uid = 2 AND outcome = 'shadow'", "audit_by_message"),
            ("SELECT COUNT(DISTINCT message_id) FROM audit WHERE outcome = 'replied' AND sender = 'a' AND category = 'b' AND time >= 'c'", "audit_answers_by_sender"),
            ("SELECT COUNT(*) FROM audit WHERE outcome IN ('replied', 'forwarded') AND time >= 'c'", "audit_sent"),
        ] {
            let plan: Vec<String> = db
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap()
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(plan.iter().any(|p| p.contains(index)), "{query}: {plan:?}");
        }

        let newer = Connection::open_in_memory().unwrap();
        newer.pragma_update(None, "user_version", 99).unwrap();
        let err = apply(&newer).unwrap_err().to_string();
        assert!(err.contains("newer than this triage knows"), "{err}");
    }
}
