//! `triage run`: the imperative shell. Drains the inbox, executes each message's plan,
//! and records every step in the journal before and after it happens. The only place
//! that retries.

use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::Config;
use crate::journal::{Journal, State};
use crate::mailbox::{self, Imap};
use crate::message::Mail;
use crate::outbox;
use crate::plan::{Plan, Playbook};
use crate::rules::Respond;

pub struct Options {
    pub once: bool,
    pub shadow: bool,
}

pub async fn run(book: Playbook, opts: Options) -> Result<(), String> {
    let config = &book.config;
    let imap_cfg = config
        .imap
        .as_ref()
        .ok_or("the config has no `imap` section")?;
    let smtp_cfg = config
        .smtp
        .as_ref()
        .ok_or("the config has no `smtp` section")?;
    let journal = Journal::open(&config.service.state)
        .map_err(|e| format!("journal {}: {e}", config.service.state.display()))?;
    let smtp = outbox::transport(smtp_cfg)?;
    // Health check at start: both servers, with a clear error.
    match smtp.test_connection().await {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            return Err(format!(
                "SMTP server {}:{} is not reachable",
                smtp_cfg.host, smtp_cfg.port
            ))
        }
    }
    let mut backoff = 1u64;
    loop {
        let mut session = match mailbox::connect(imap_cfg).await {
            Ok(s) => {
                backoff = 1;
                s
            }
            Err(e) if opts.once => return Err(format!("IMAP: {e}")),
            Err(e) => {
                let jitter = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_millis())
                    .unwrap_or(0)
                    % 1000) as u64;
                warn!("IMAP connection failed: {e}; reconnecting in {backoff} s");
                tokio::time::sleep(Duration::from_millis(backoff * 1000 + jitter)).await;
                backoff = (backoff * 2).min(300);
                continue;
            }
        };
        info!(
            "logged in to {}:{} as {}",
            imap_cfg.host, imap_cfg.port, imap_cfg.username
        );
        let result = drain_and_wait(&book, &journal, &smtp, &mut session, &opts).await;
        match result {
            Ok(()) if opts.once => {
                let _ = session.logout().await;
                return Ok(());
            }
            Ok(()) => {}
            Err(e) => {
                if opts.once {
                    return Err(e);
                }
                warn!("mailbox session ended: {e}; reconnecting");
            }
        }
    }
}

async fn drain_and_wait(
    book: &Playbook,
    journal: &Journal,
    smtp: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    session: &mut Imap,
    opts: &Options,
) -> Result<(), String> {
    let imap_cfg = book.config.imap.as_ref().expect("checked");
    let t = imap_cfg.timeout_seconds;
    let caps = session.capabilities().await.map_err(|e| e.to_string())?;
    let has_move = caps.has_str("MOVE");
    loop {
        drain(book, journal, smtp, session, has_move, opts).await?;
        if opts.once {
            return Ok(());
        }
        // Wait for new mail: NOOP polling keeps this simple and works on every server.
        tokio::time::sleep(Duration::from_secs(imap_cfg.poll_seconds.max(1))).await;
        let _ = tokio::time::timeout(Duration::from_secs(t), session.noop()).await;
    }
}

async fn drain(
    book: &Playbook,
    journal: &Journal,
    smtp: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    session: &mut Imap,
    has_move: bool,
    opts: &Options,
) -> Result<(), String> {
    let config = &book.config;
    let t = config.imap.as_ref().expect("checked").timeout_seconds;
    let inbox = config.folders.inbox.clone();
    let mb = mailbox::select(session, &inbox, t).await?;
    let uidvalidity = mb.uid_validity.unwrap_or(0);
    let from_uid = match journal.folder(&inbox).map_err(|e| e.to_string())? {
        Some((v, last)) if v == uidvalidity => last + 1,
        Some((v, _)) => {
            warn!("{inbox}: UIDVALIDITY changed from {v} to {uidvalidity}; re-reading, answered mail is recognised by Message-ID");
            1
        }
        None => 1,
    };
    // Messages left for a human stay in the inbox; the journal says they are done.
    let list = mailbox::sizes(session, 1, t).await?;
    for (uid, size) in list {
        if let Some(state) = journal.state(uidvalidity, uid).map_err(|e| e.to_string())? {
            if state.is_final() {
                continue;
            }
        }
        handle(
            book,
            journal,
            smtp,
            session,
            has_move,
            opts,
            &inbox,
            uidvalidity,
            uid,
            size as usize,
        )
        .await?;
        if uid >= from_uid {
            journal
                .set_folder(&inbox, uidvalidity, uid)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    book: &Playbook,
    journal: &Journal,
    smtp: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    session: &mut Imap,
    has_move: bool,
    opts: &Options,
    inbox: &str,
    uidvalidity: u32,
    uid: u32,
    size: usize,
) -> Result<(), String> {
    let config = &book.config;
    let t = config.imap.as_ref().expect("checked").timeout_seconds;
    let db = |e: rusqlite::Error| format!("journal: {e}");

    // Oversized: decided from the size alone, never downloaded.
    let (plan, mail) = if size > config.limits.max_message_bytes {
        (
            Plan::for_human(
                None,
                format!(
                    "message is {size} bytes, over the limit of {} bytes",
                    config.limits.max_message_bytes
                ),
                config,
            ),
            None,
        )
    } else {
        let raw = mailbox::fetch(session, uid, t).await?.unwrap_or_default();
        let plan = match journal.plan(uidvalidity, uid).map_err(db)? {
            Some(p) => p, // decided before a crash: execute the same plan, not a new one
            None => book.decide(&raw),
        };
        (plan, Mail::parse(&raw).ok())
    };
    let mid = plan.message_id.clone();
    journal
        .advance(
            uidvalidity,
            uid,
            mid.as_deref(),
            State::Planned,
            Some(&plan),
            &plan.reason,
        )
        .map_err(db)?;

    if opts.shadow {
        journal
            .audit(inbox, uidvalidity, uid, &plan, "shadow", "")
            .map_err(db)?;
        info!(uid, category = %plan.category, respond = ?plan.respond, "shadow: {}", plan.reason);
        return Ok(());
    }

    // The same message under another UID (mailbox rebuilt, copied back) was answered already.
    let answered_elsewhere = match &mid {
        Some(id) => {
            journal
                .state_by_message_id(id)
                .map_err(db)?
                .is_some_and(|s| s >= State::Sent)
                && journal
                    .state(uidvalidity, uid)
                    .map_err(db)?
                    .is_some_and(|s| s < State::Sending)
        }
        None => false,
    };

    let mut human_reason = None;
    if plan.respond == Respond::Auto && !answered_elsewhere {
        let Some(mail) = &mail else {
            return Err("plan says answer but the message cannot be read".into());
        };
        journal
            .advance(
                uidvalidity,
                uid,
                mid.as_deref(),
                State::Sending,
                None,
                &plan.reason,
            )
            .map_err(db)?;
        for (i, out) in plan.outgoing.iter().enumerate() {
            let msg_id =
                outbox::message_id_for(mid.as_deref(), i, out, &config.desk.message_id_domain);
            match journal.outbox_state(&msg_id).map_err(db)?.as_deref() {
                Some("sent") => continue,
                Some("sending") => {
                    // Crashed between send and record: Sent knows.
                    if mailbox::has_message_id(session, &config.folders.sent, &msg_id, t).await? {
                        journal
                            .set_outbox(&msg_id, mid.as_deref(), "sent")
                            .map_err(db)?;
                        continue;
                    }
                }
                _ => {}
            }
            let message = match outbox::compose(config, mail, out, &msg_id) {
                Ok(m) => m,
                Err(e) => {
                    human_reason = Some(format!("cannot write the reply: {e}"));
                    break;
                }
            };
            journal
                .set_outbox(&msg_id, mid.as_deref(), "sending")
                .map_err(db)?;
            if let Err(e) = outbox::send(smtp, &message).await {
                error!(uid, "SMTP refused {:?}: {e}", out.to);
                human_reason = Some(format!(
                    "SMTP refused the {:?} to {}: {e}",
                    out.kind,
                    out.to.join(", ")
                ));
                journal
                    .set_outbox(&msg_id, mid.as_deref(), "failed")
                    .map_err(db)?;
                break;
            }
            mailbox::append(session, &config.folders.sent, &message.formatted(), t).await?;
            journal
                .set_outbox(&msg_id, mid.as_deref(), "sent")
                .map_err(db)?;
            journal
                .audit(
                    inbox,
                    uidvalidity,
                    uid,
                    &plan,
                    if out.kind == crate::plan::Kind::Reply {
                        "replied"
                    } else {
                        "forwarded"
                    },
                    &format!("{msg_id} to {} cc {}", out.to.join(","), out.cc.join(",")),
                )
                .map_err(db)?;
        }
        if human_reason.is_none() {
            keep_documents(config, mail, &plan)?;
            journal
                .advance(
                    uidvalidity,
                    uid,
                    mid.as_deref(),
                    State::Sent,
                    None,
                    &plan.reason,
                )
                .map_err(db)?;
        }
    }

    // Back to the inbox: settling a crash may have examined Sent.
    mailbox::select(session, inbox, t).await?;
    let to_human = plan.original.human || human_reason.is_some();
    if to_human {
        let reason = human_reason.unwrap_or_else(|| plan.reason.clone());
        match &config.folders.human {
            Some(folder) => mailbox::move_to(session, uid, folder, has_move, t).await?,
            None => mailbox::store(session, uid, "\\Flagged", t).await?,
        }
        journal
            .advance(
                uidvalidity,
                uid,
                mid.as_deref(),
                State::Human,
                None,
                &reason,
            )
            .map_err(db)?;
        journal
            .audit(inbox, uidvalidity, uid, &plan, "left for human", &reason)
            .map_err(db)?;
        info!(uid, category = %plan.category, "left for a human: {reason}");
    } else {
        mailbox::store(session, uid, "\\Seen \\Answered", t).await?;
        if let Some(folder) = &plan.original.folder {
            mailbox::move_to(session, uid, folder, has_move, t).await?;
        }
        journal
            .advance(
                uidvalidity,
                uid,
                mid.as_deref(),
                State::Filed,
                None,
                &plan.reason,
            )
            .map_err(db)?;
        journal
            .audit(
                inbox,
                uidvalidity,
                uid,
                &plan,
                "filed",
                plan.original.folder.as_deref().unwrap_or(inbox),
            )
            .map_err(db)?;
        info!(uid, category = %plan.category, "answered and filed: {}", plan.reason);
    }
    Ok(())
}

/// POs and PoEs kept for the CRM, under the opportunity or deal they belong to.
fn keep_documents(config: &Config, mail: &Mail, plan: &Plan) -> Result<(), String> {
    for d in &plan.keep_documents {
        let Some(a) = mail.attachments.get(d.attachment_index) else {
            continue;
        };
        let dir = config.service.documents.join(&d.under);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("documents folder {}: {e}", dir.display()))?;
        let path = dir.join(&d.name);
        let tmp = dir.join(format!(".{}.tmp", d.name));
        std::fs::write(&tmp, &a.bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("keep {}: {e}", path.display()))?;
    }
    Ok(())
}
