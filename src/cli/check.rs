//! `triage check [--connect]`: config, rules, templates and directory validated as the
//! service would load them, every problem with file:line:col; with `--connect`, also
//! what the IMAP server says about folders.

use std::path::Path;

use triage::core::config::Config;
use triage::core::plan;
use triage::shell::{folders, mailbox, oauth};

use super::Failure;

pub fn execute(config: &Path, directory: Option<&Path>, connect: bool) -> Result<(), Failure> {
    let (book, warnings) = plan::check(config, directory).map_err(|problems| {
        // Exit 1, not 2: finding problems is this command's job, not a usage error.
        eprintln!("{problems}");
        eprintln!("{} problem(s) found", problems.0.len());
        Failure::Said(1)
    })?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    println!("ok: {}", book.summary());
    if connect {
        let rt = super::runtime()?;
        rt.block_on(discover(&book.config, book.prepares_drafts()))
            .map_err(|e| Failure::Failed(format!("triage check --connect: {e}")))?;
    }
    Ok(())
}

/// Signs in, discovers the folders as the service would at start, and says what it found.
async fn discover(config: &Config, drafts: bool) -> Result<(), String> {
    let imap = config
        .imap
        .clone()
        .ok_or("the config has no `imap` section")?;
    let (sign_in, _) = oauth::sign_ins(config, None)?;
    let sign_in = sign_in.ok_or("the config has no `imap` section")?;
    let mut session = mailbox::connect(&imap, &sign_in).await?;
    let t = imap.timeout_seconds;
    let caps = mailbox::within(t, "CAPABILITY", session.capabilities()).await?;
    let gmail = caps.has_str("X-GM-EXT-1");
    let places = folders::discover(&mut session, config, gmail, drafts, t)
        .await
        .map_err(String::from)?;
    let used: Vec<&str> = [
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "SPECIAL-USE",
        "NAMESPACE",
        "X-GM-EXT-1",
    ]
    .into_iter()
    .filter(|c| caps.has_str(c))
    .collect();
    println!(
        "imap {}:{}: signed in as {}",
        imap.host, imap.port, imap.username
    );
    println!("  capabilities used: {}", used.join(" "));
    println!(
        "  personal namespace: {:?}, separator {:?}",
        places.prefix, places.delimiter
    );
    let own_copies = if places.sent.is_none() {
        "; the server keeps its own copies, no APPEND"
    } else {
        ""
    };
    println!(
        "  sent: {} ({}){own_copies}",
        places.sent_lookup, places.sent_found_by
    );
    if let Some(drafts) = &places.drafts {
        println!("  drafts: {drafts}");
    }
    if !caps.has_str("MOVE") {
        let expunge = if caps.has_str("UIDPLUS") {
            "UID EXPUNGE of just those messages"
        } else {
            "no expunge (no UIDPLUS): originals stay marked \\Deleted until the server or a person expunges"
        };
        println!("  no MOVE: filing is COPY, \\Deleted and {expunge}");
    }
    let mut by_role: Vec<(String, String)> = config
        .folders
        .by_category
        .iter()
        .map(|(c, f)| (c.clone(), places.resolve(f)))
        .collect();
    if let Some(h) = &config.folders.human {
        by_role.push(("left for a human".into(), places.resolve(h)));
    }
    for (role, folder) in by_role {
        println!("  {role}: {folder} (exists, selectable)");
    }
    let _ = session.logout().await;
    Ok(())
}
