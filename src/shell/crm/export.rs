//! Export mode: the day's CRM steps as the CSV files Salesforce's Data Loader and Bulk
//! API 2.0 import, one folder per day (UTC):
//! - `ContentVersion.csv` (insert): Title, Description, VersionData, PathOnClient,
//!   FirstPublishLocationId: each document uploaded onto its record; VersionData and
//!   PathOnClient are the kept file's full path, as Data Loader's content upload asks.
//! - `<registration object>.csv` (upsert on its External ID field): the deal id and the
//!   new status, and nothing else (Bulk API 2.0 refuses unknown columns).
//! - `FeedItem.csv` (insert): ParentId, Type, Body: the note for the Channel Manager.
//!
//! Rows carry the step's marker (`[triage-…]` in Description and Body), so a row written
//! just before a crash is found on the restart and not written twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::core::config::CrmExport;
use crate::core::crm::CrmAction;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the CRM import file {0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("the kept document {0} is missing; the CRM import would have nothing to upload")]
    Missing(PathBuf),
}

/// One file's rows for a step, and how to tell they are already there.
struct Rows {
    file: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Text that is in the file exactly when these rows are.
    mark: String,
}

/// Writes the step's rows (once); returns the files, relative to the export folder.
pub fn write(
    cfg: &CrmExport,
    documents: &Path,
    marker: &str,
    action: &CrmAction,
) -> Result<String, ExportError> {
    let day = crate::core::dates::day_of(crate::shell::clock::now());
    let mut places = Vec::new();
    for r in rows_for(cfg, documents, marker, action)? {
        append_once(&cfg.folder.join(&day).join(&r.file), &r)?;
        places.push(format!("{day}/{}", r.file));
    }
    Ok(places.join(" and "))
}

fn rows_for(
    cfg: &CrmExport,
    documents: &Path,
    marker: &str,
    action: &CrmAction,
) -> Result<Vec<Rows>, ExportError> {
    Ok(match action {
        CrmAction::AttachDocument {
            opportunity,
            document,
            under,
            ..
        } => {
            vec![upload(documents, opportunity, under, document, marker)?]
        }
        CrmAction::SetRegistrationStatus {
            registration, to, ..
        } => {
            let row = vec![registration.clone(), to.clone()];
            vec![Rows {
                file: format!("{}.csv", safe_name(&cfg.registration_object)),
                header: vec![
                    cfg.registration_key_field.clone(),
                    cfg.registration_status_field.clone(),
                ],
                mark: format!("\n{}\n", row.join(",")),
                rows: vec![row],
            }]
        }
        CrmAction::PostNote {
            opportunity,
            user,
            text,
            document,
            under,
        } => {
            let mut out = vec![Rows {
                file: "FeedItem.csv".into(),
                header: ["ParentId", "Type", "Body"].map(String::from).to_vec(),
                rows: vec![vec![
                    opportunity.clone(),
                    "TextPost".into(),
                    format!("{text} For {user}. [{marker}]"),
                ]],
                mark: format!("[{marker}]"),
            }];
            // The PoE goes onto the linked opportunity beside the note.
            if let (Some(d), Some(u)) = (document, under) {
                out.push(upload(
                    documents,
                    opportunity,
                    u,
                    d,
                    &format!("{marker}-file"),
                )?);
            }
            out
        }
    })
}

fn upload(
    documents: &Path,
    record: &str,
    under: &str,
    document: &str,
    marker: &str,
) -> Result<Rows, ExportError> {
    let path = documents.join(under).join(document);
    if !path.exists() {
        return Err(ExportError::Missing(path));
    }
    let full = path.display().to_string();
    Ok(Rows {
        file: "ContentVersion.csv".into(),
        header: [
            "Title",
            "Description",
            "VersionData",
            "PathOnClient",
            "FirstPublishLocationId",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![vec![
            document.to_string(),
            format!("Kept by triage [{marker}]"),
            full.clone(),
            full,
            record.to_string(),
        ]],
        mark: format!("[{marker}]"),
    })
}

/// Writes the rows unless the file already holds them (a restart after the write); a
/// new file gets the header first. Synced before the journal records the step.
fn append_once(path: &Path, r: &Rows) -> Result<(), ExportError> {
    let fail = |e| ExportError::File(path.to_path_buf(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let existing = std::fs::read_to_string(path).unwrap_or_default();
    if existing.contains(&r.mark) {
        return Ok(());
    }
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if existing.is_empty() {
        w.write_record(&r.header).map_err(|e| fail(e.into()))?;
    }
    for row in &r.rows {
        w.write_record(row).map_err(|e| fail(e.into()))?;
    }
    let bytes = w.into_inner().map_err(|e| fail(e.into_error()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(fail)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_data())
        .map_err(fail)
}

/// An object's API name as a file name: letters, digits and `_` only.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_is_one_row_in_its_import_file_even_written_twice() {
        let dir = std::env::temp_dir().join(format!("triage-crm-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let documents = dir.join("documents");
        std::fs::create_dir_all(documents.join("opportunity/006A")).unwrap();
        std::fs::write(documents.join("opportunity/006A/PO, 1.pdf"), b"%PDF").unwrap();
        let cfg = CrmExport {
            folder: dir.join("export"),
            registration_object: "Deal_Registration__c".into(),
            registration_key_field: "Deal_ID__c".into(),
            registration_status_field: "Status__c".into(),
        };
        let attach = CrmAction::AttachDocument {
            opportunity: "006A".into(),
            document: "PO, 1.pdf".into(),
            under: "opportunity/006A".into(),
            sha256: "ab".into(),
        };
        let status = CrmAction::SetRegistrationStatus {
            registration: "DR-1".into(),
            from: "Approved".into(),
            to: "Closed-Won".into(),
        };
        for _ in 0..2 {
            write(&cfg, &documents, "triage-aaa", &attach).unwrap();
            write(&cfg, &documents, "triage-bbb", &status).unwrap();
        }
        let day = std::fs::read_dir(&cfg.folder)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let cv = std::fs::read_to_string(day.join("ContentVersion.csv")).unwrap();
        let lines: Vec<&str> = cv.lines().collect();
        assert_eq!(
            lines[0],
            "Title,Description,VersionData,PathOnClient,FirstPublishLocationId"
        );
        assert_eq!(lines.len(), 2, "{cv}");
        assert!(
            lines[1].starts_with("\"PO, 1.pdf\",Kept by triage [triage-aaa],"),
            "{cv}"
        );
        assert!(lines[1].ends_with(",006A"), "{cv}");
        let reg = std::fs::read_to_string(day.join("Deal_Registration__c.csv")).unwrap();
        assert_eq!(reg, "Deal_ID__c,Status__c\nDR-1,Closed-Won\n");
        let missing = CrmAction::AttachDocument {
            opportunity: "006A".into(),
            document: "gone.pdf".into(),
            under: "opportunity/006A".into(),
            sha256: "ab".into(),
        };
        assert!(matches!(
            write(&cfg, &documents, "triage-ccc", &missing),
            Err(ExportError::Missing(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
