//! The handbook's CRM steps, each carried out exactly once: looked up by its marker in
//! the journal, done, then recorded with where it went. Export mode writes the import
//! files a CRM team loads with Salesforce's Data Loader or Bulk API 2.0 (`export`).

mod export;

use crate::core::config::CrmConfig;
use crate::core::crm::{external_id, CrmAction};
use crate::core::plan::Plan;
use crate::shell::journal::{self, Journal, MessageRef};

pub use export::ExportError;

/// A step that could not be carried out: the message goes to a person with this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Journal(#[from] journal::Error),
}

/// Carries out the plan's CRM steps not yet done; each is recorded in the journal and
/// the audit log with the file (or record) it went to.
pub fn carry_out(
    crm: &CrmConfig,
    documents: &std::path::Path,
    journal: &Journal,
    key: &str,
    at: MessageRef,
    plan: &Plan,
) -> Result<(), Error> {
    for (i, action) in plan.crm_actions.iter().enumerate() {
        let marker = external_id(key, i, action);
        if journal.crm_state(&marker)?.is_some() {
            continue; // done before a restart
        }
        let place = export::write(&crm.export, documents, &marker, action)?;
        journal.together(|| {
            journal.record_crm(&marker, key, action, "exported", &place)?;
            let detail = format!(
                "{}; {marker} in {place}, waiting for import",
                action.describe()
            );
            journal.audit(at, plan, "crm exported", &detail)
        })?;
    }
    Ok(())
}

/// What `classify` and `audit show` say a step will be called in the CRM.
pub fn describe(key: &str, plan: &Plan) -> Vec<(String, CrmAction)> {
    plan.crm_actions
        .iter()
        .enumerate()
        .map(|(i, a)| (external_id(key, i, a), a.clone()))
        .collect()
}
