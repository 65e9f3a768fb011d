//! POs and PoEs kept for the CRM, under the opportunity or deal they belong to
//! (`service.documents`). A name already taken in the folder by another document gets
//! ` (2)`; the same bytes under a name are a retry and are left as they are.

use std::path::PathBuf;

use crate::core::config::Config;
use crate::core::message::{sanitize_name, unique_name, Mail};
use crate::core::plan::Plan;

/// A document that could not be written: the folder or the file, and the system's words.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("cannot keep the documents: folder {0}: {1}")]
    Folder(PathBuf, std::io::Error),
    #[error("cannot keep the documents: {0}: {1}")]
    File(PathBuf, std::io::Error),
}

pub fn keep(config: &Config, mail: &Mail, plan: &Plan) -> Result<(), KeepError> {
    for d in &plan.keep_documents {
        let Some(a) = mail.attachments.get(d.attachment_index) else {
            continue;
        };
        let dir = config.service.documents.join(&d.under);
        std::fs::create_dir_all(&dir).map_err(|e| KeepError::Folder(dir.clone(), e))?;
        let same = |n: &str| std::fs::read(dir.join(n)).is_ok_and(|b| b == a.bytes);
        // The first name that is free or already holds these bytes.
        let name = unique_name(&sanitize_name(&d.name), |n| {
            dir.join(n).exists() && !same(n)
        });
        let path = dir.join(&name);
        if path.exists() {
            continue; // the same document, kept before a restart
        }
        let tmp = dir.join(format!(".keep-{}.tmp", &d.sha256[..d.sha256.len().min(16)]));
        std::fs::write(&tmp, &a.bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| KeepError::File(path, e))?;
    }
    Ok(())
}
