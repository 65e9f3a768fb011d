//! The CRM steps the handbook ends with (seed 002: "Attach the PO to the correct
//! opportunity in SFDC"; for a Service Attach PoE "update the registration to
//! Closed-Won, and chatter the Channel Manager on the linked opportunity, uploading the
//! PoE"), as plain actions in the plan. The shell carries each out exactly once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One step in the CRM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CrmAction {
    /// Upload a kept document onto an opportunity (the PO).
    AttachDocument {
        opportunity: String,
        /// The kept document's file name, under `service.documents`/`under`.
        document: String,
        under: String,
        sha256: String,
    },
    /// Move a registration's status, only if it still has the `from` status.
    SetRegistrationStatus {
        registration: String,
        from: String,
        to: String,
    },
    /// A note on an opportunity for a person (the Channel Manager), with a kept document.
    PostNote {
        opportunity: String,
        /// The person's email address, as the directory has it.
        user: String,
        text: String,
        document: Option<String>,
        under: Option<String>,
    },
}

impl CrmAction {
    pub fn kind(&self) -> &'static str {
        match self {
            CrmAction::AttachDocument { .. } => "attach_document",
            CrmAction::SetRegistrationStatus { .. } => "set_registration_status",
            CrmAction::PostNote { .. } => "post_note",
        }
    }

    /// The record the action is about.
    pub fn target(&self) -> &str {
        match self {
            CrmAction::AttachDocument { opportunity, .. }
            | CrmAction::PostNote { opportunity, .. } => opportunity,
            CrmAction::SetRegistrationStatus { registration, .. } => registration,
        }
    }

    /// One line for the audit log and `classify`.
    pub fn describe(&self) -> String {
        match self {
            CrmAction::AttachDocument {
                opportunity,
                document,
                ..
            } => {
                format!("attach {document} to opportunity {opportunity}")
            }
            CrmAction::SetRegistrationStatus {
                registration,
                from,
                to,
            } => {
                format!("registration {registration}: {from} -> {to} (only if still {from})")
            }
            CrmAction::PostNote {
                opportunity,
                user,
                document,
                ..
            } => format!(
                "note on opportunity {opportunity} for {user}{}",
                document
                    .as_deref()
                    .map(|d| format!(" with {d}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The action's marker in the CRM: the same for the same message and step whatever
/// happens, so that after a crash a search by it tells whether the step was done.
pub fn external_id(message_key: &str, index: usize, action: &CrmAction) -> String {
    let digest = Sha256::new()
        .chain_update(message_key.as_bytes())
        .chain_update([0])
        .chain_update(index.to_string().as_bytes())
        .chain_update([0])
        .chain_update(action.kind().as_bytes())
        .chain_update([0])
        .chain_update(action.target().as_bytes())
        .finalize();
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("triage-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_stable_and_distinct() {
        let a = CrmAction::SetRegistrationStatus {
            registration: "DR-2026-0042".into(),
            from: "Approved".into(),
            to: "Closed-Won".into(),
        };
        let one = external_id("<m1@x>", 1, &a);
        assert_eq!(one, external_id("<m1@x>", 1, &a));
        assert_ne!(one, external_id("<m2@x>", 1, &a));
        assert_ne!(one, external_id("<m1@x>", 2, &a));
        assert!(one.starts_with("triage-") && one.len() == 27);
        assert_eq!(
            a.describe(),
            "registration DR-2026-0042: Approved -> Closed-Won (only if still Approved)"
        );
    }
}
