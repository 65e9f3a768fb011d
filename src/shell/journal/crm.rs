//! The CRM steps' own rows: each step by its marker, so that it is done once.

use rusqlite::{params, OptionalExtension};

use super::{Journal, Result};

impl Journal {
    /// Where a step stands: (state, place), when it was carried out before.
    pub fn crm_state(&self, external_id: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .db
            .prepare_cached("SELECT state, place FROM crm_actions WHERE external_id = ?1")?
            .query_row([external_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// Records a step's outcome (`exported`, `done`, `refused`) and where it went.
    pub fn record_crm(
        &self,
        external_id: &str,
        message_key: &str,
        action: &crate::core::crm::CrmAction,
        state: &str,
        place: &str,
    ) -> Result<()> {
        self.db
            .prepare_cached(
                "INSERT INTO crm_actions(external_id, message_key, kind, target, state, place, detail, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
                 ON CONFLICT(external_id) DO UPDATE SET state = excluded.state,
                     place = excluded.place, detail = excluded.detail, updated = excluded.updated",
            )?
            .execute(params![
                external_id,
                message_key,
                action.kind(),
                action.target(),
                state,
                place,
                action.describe()
            ])?;
        Ok(())
    }
}
