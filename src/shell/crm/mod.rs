//! The handbook's CRM steps, each carried out exactly once: looked up by its marker in
//! the journal, done, then recorded with where it went. Export mode writes the import
//! files a CRM team loads with Salesforce's Data Loader or Bulk API 2.0 (`export`).

mod export;
mod salesforce;

use crate::core::config::CrmConfig;
use crate::core::crm::{external_id, CrmAction};
use crate::core::plan::Plan;
use crate::shell::journal::{self, Journal, MessageRef};

pub use export::ExportError;
pub use salesforce::Failure;

use std::sync::{Arc, Mutex};

/// A step that could not be carried out: the message goes to a person with this.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    #[error(transparent)]
    Salesforce(#[from] Failure),
}

/// Carries out the plan's CRM steps not yet done; each is recorded in the journal and
/// the audit log with the file or the records it went to. The first step that fails
/// stops the rest (a note must not announce a status that was refused).
pub async fn carry_out(
    crm: &CrmConfig,
    documents: &std::path::Path,
    journal: &Journal,
    key: &str,
    at: MessageRef<'_>,
    plan: &Plan,
) -> Result<(), Error> {
    for (i, action) in plan.crm_actions.iter().enumerate() {
        let marker = external_id(key, i, action);
        let before = journal.crm_state(&marker)?;
        if before.as_ref().is_some_and(|(state, _)| state != "started") {
            continue; // done before a restart
        }
        let resumed = before.is_some();
        let (state, place, detail) = if let Some(cfg) = &crm.export {
            let place = export::write(cfg, documents, &marker, action)?;
            let detail = format!(
                "{}; {marker} in {place}, waiting for import",
                action.describe()
            );
            ("exported", place, detail)
        } else if let Some(cfg) = &crm.salesforce {
            // Written before the call: after a crash, a registration found already in
            // its new status was changed by us, not by someone else.
            journal.record_crm(&marker, key, action, "started", "")?;
            let done = in_salesforce(cfg, documents, &marker, action, resumed).await;
            let place = match done {
                Ok(place) => place,
                Err(e) => {
                    let detail = format!("{}; {marker}: {e}", action.describe());
                    journal.together(|| {
                        journal.record_crm(&marker, key, action, "refused", &e.to_string())?;
                        journal.audit(at, plan, "crm refused", &detail)
                    })?;
                    return Err(e.into());
                }
            };
            let detail = format!(
                "{}; {marker}: done in Salesforce: {place}",
                action.describe()
            );
            ("done", place, detail)
        } else {
            return Ok(());
        };
        let outcome = format!("crm {state}");
        journal.together(|| {
            journal.record_crm(&marker, key, action, state, &place)?;
            journal.audit(at, plan, &outcome, &detail)
        })?;
    }
    Ok(())
}

/// One step on tokio's blocking pool (the HTTP client blocks), with a client kept per
/// configuration so that its token is reused.
async fn in_salesforce(
    cfg: &crate::core::config::SalesforceConfig,
    documents: &std::path::Path,
    marker: &str,
    action: &CrmAction,
    resumed: bool,
) -> Result<String, Failure> {
    static CLIENT: Mutex<
        Option<(
            crate::core::config::SalesforceConfig,
            Arc<salesforce::Salesforce>,
        )>,
    > = Mutex::new(None);
    let client = {
        let mut slot = CLIENT.lock().expect("salesforce client");
        match slot.as_ref() {
            Some((c, client)) if c == cfg => client.clone(),
            _ => {
                let client =
                    Arc::new(salesforce::Salesforce::new(cfg).map_err(Failure::Unreachable)?);
                *slot = Some((cfg.clone(), client.clone()));
                client
            }
        }
    };
    let (marker, action, documents) = (marker.to_string(), action.clone(), documents.to_path_buf());
    tokio::task::spawn_blocking(move || client.carry(&marker, &action, &documents, resumed))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?
}
