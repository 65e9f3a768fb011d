//! `triage replay`: today's rules (or a folder of rules not yet live) over the messages
//! already decided; prints where they would decide differently. Nothing is sent.

use std::path::Path;

use triage::core::plan::Playbook;
use triage::review::replay::differences;

use super::{Failure, Format};

pub fn execute(
    config: &Path,
    since: &str,
    rules: Option<&Path>,
    format: Format,
) -> Result<(), Failure> {
    let mut cfg = super::config(config)?;
    if let Some(r) = rules {
        cfg.rules = r.to_path_buf();
    }
    let journal = super::journal(&cfg)?;
    let mut book = Playbook::load(cfg, None).map_err(|problems| {
        Failure::Invalid(format!(
            "{problems}\ntriage: the rules to replay are not valid; nothing compared"
        ))
    })?;
    book.documents = triage::core::documents::Reader::child(book.config.limits.documents());
    let Ok(Some(from)) = journal.audit_time(since) else {
        return Err(super::bad_time("--since", since));
    };
    let messages = journal
        .replayable(&from)
        .map_err(|e| Failure::Failed(format!("triage: {e}")))?;
    let mut differ = 0;
    for (time, message_id, then, raw) in &messages {
        let Some(then) = then else { continue };
        let now = book.decide(raw);
        let diffs = differences(then, &now);
        if diffs.is_empty() {
            continue;
        }
        differ += 1;
        let id = message_id.as_deref().unwrap_or("(no Message-ID)");
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"time": time, "message_id": id, "subject": now.subject,
                    "differences": diffs, "then": then, "now": now})
            ),
            Format::Text => {
                println!("{time}  {id}  {:?}", now.subject);
                for d in &diffs {
                    println!("    {d}");
                }
            }
        }
    }
    eprintln!(
        "replayed {} messages decided since {from}: {differ} would be decided differently",
        messages.len()
    );
    Ok(())
}
