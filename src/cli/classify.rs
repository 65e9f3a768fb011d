//! `triage classify FILE…`: what the service would do with each message, and why. No
//! network: the plan the decision core makes, printed.

use std::path::{Path, PathBuf};

use triage::core::plan::{self, Plan};

use super::{Failure, Format};

pub fn execute(
    config: &Path,
    directory: Option<&Path>,
    format: Format,
    why_not: Option<&str>,
    render: Option<&str>,
    files: &[PathBuf],
) -> Result<(), Failure> {
    if let Some(template) = render {
        let mut book = super::playbook(config, directory)?;
        for file in files {
            let raw = std::fs::read(file)
                .map_err(|e| Failure::Failed(format!("{}: cannot read: {e}", file.display())))?;
            let mail = book.preview(&raw, template).map_err(Failure::Invalid)?;
            super::print_lines(&mail);
        }
        return Ok(());
    }
    let book = super::playbook(config, directory)?;
    if let Some(rule) = why_not {
        return explain_rule(&book, rule, files);
    }
    let mut unreadable = false;
    for file in files {
        let plan = match std::fs::read(file) {
            Ok(raw) => book.decide(&raw),
            Err(e) => {
                // One unreadable file does not stop the others.
                eprintln!("{}: cannot read: {e}", file.display());
                unreadable = true;
                continue;
            }
        };
        match format {
            Format::Json => println!("{}", json_line(file, &plan)),
            Format::Text => print!("{}", plan::explain(&file.display().to_string(), &plan)),
        }
    }
    if unreadable {
        return Err(Failure::Said(1));
    }
    Ok(())
}

/// `--why-not RULE`: the rule's conditions on each message, held or failed, and why.
fn explain_rule(
    book: &triage::core::plan::Playbook,
    rule: &str,
    files: &[PathBuf],
) -> Result<(), Failure> {
    for file in files {
        let raw = std::fs::read(file)
            .map_err(|e| Failure::Failed(format!("{}: cannot read: {e}", file.display())))?;
        let lines = book.why_not(&raw, rule).map_err(Failure::Invalid)?;
        println!(
            "{}",
            triage::core::escape::for_terminal(&file.display().to_string())
        );
        for line in lines {
            println!("  {}", triage::core::escape::for_terminal(&line));
        }
    }
    Ok(())
}

/// The plan as JSON with the file it came from, one line per message.
fn json_line(file: &Path, plan: &Plan) -> String {
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "file".into(),
            serde_json::Value::String(file.display().to_string()),
        );
    }
    value.to_string()
}
