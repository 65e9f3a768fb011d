//! `triage run`: the imperative shell. Drains the inbox, executes each message's plan,
//! and records every step in the journal before and after it happens. The only place
//! that retries.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, ImapConfig};
use crate::journal::{Journal, State};
use crate::mailbox::{self, Imap};
use crate::message::Mail;
use crate::outbox::{self, Refusal};
use crate::plan::{hex, Kind, Plan, Playbook};
use crate::rules::Respond;

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

pub struct Options {
    pub once: bool,
    pub shadow: bool,
    /// Becomes true on SIGTERM/SIGINT: the message in hand is finished, then we stop.
    pub stop: watch::Receiver<bool>,
}

impl Options {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, or returns early when asked to stop.
    async fn pause(&mut self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// Exponential backoff with jitter for reconnects: 1 s doubling to 5 minutes.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.attempt += 1;
        let base = 1u64 << self.attempt.min(9).saturating_sub(1);
        let base_ms = base.min(300) * 1000;
        // Jitter up to a quarter, so many instances do not reconnect in step.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        Duration::from_millis(base_ms + seed % (base_ms / 4 + 1))
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub async fn run(book: Playbook, mut opts: Options) -> Result<(), String> {
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
    let mut backoff = Backoff { attempt: 0 };

    // Health check at start: both servers, with a clear error (or retries, if configured).
    loop {
        let smtp_ok = match tokio::time::timeout(
            Duration::from_secs(smtp_cfg.timeout_seconds),
            smtp.test_connection(),
        )
        .await
        {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("the server did not answer NOOP".to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} s", smtp_cfg.timeout_seconds)),
        };
        let err = match smtp_ok {
            Err(e) => format!(
                "SMTP server {}:{} is not usable: {e}",
                smtp_cfg.host, smtp_cfg.port
            ),
            Ok(()) => match mailbox::connect(imap_cfg).await {
                Ok(session) => {
                    info!(
                        "logged in to {}:{} as {}; SMTP {}:{} answers",
                        imap_cfg.host,
                        imap_cfg.port,
                        imap_cfg.username,
                        smtp_cfg.host,
                        smtp_cfg.port
                    );
                    return serve_until_stopped(&book, &journal, &smtp, session, &mut opts).await;
                }
                Err(e) => format!("IMAP server {}:{}: {e}", imap_cfg.host, imap_cfg.port),
            },
        };
        if !config.service.retry_at_start || opts.once {
            return Err(err);
        }
        let d = backoff.next();
        warn!("{err}; retrying in {:.1} s", d.as_secs_f32());
        opts.pause(d).await;
        if opts.stopping() {
            return Ok(());
        }
    }
}

/// Serves one session after another: a dropped connection or a failed step ends the
/// session, and after a backoff a new one picks up where the journal says.
async fn serve_until_stopped(
    book: &Playbook,
    journal: &Journal,
    smtp: &Smtp,
    mut session: Imap,
    opts: &mut Options,
) -> Result<(), String> {
    let imap_cfg = book.config.imap.as_ref().expect("checked");
    let mut backoff = Backoff { attempt: 0 };
    loop {
        match serve(book, journal, smtp, session, opts, &mut backoff).await {
            Ok(mut s) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(imap_cfg.timeout_seconds), s.logout())
                        .await;
                info!("logged out");
                return Ok(());
            }
            Err(e) if opts.once => return Err(e),
            Err(e) => warn!("mailbox session ended: {e}"),
        }
        session = loop {
            if opts.stopping() {
                return Ok(());
            }
            let d = backoff.next();
            warn!(
                "reconnecting to {}:{} in {:.1} s (attempt {})",
                imap_cfg.host,
                imap_cfg.port,
                d.as_secs_f32(),
                backoff.attempt
            );
            opts.pause(d).await;
            if opts.stopping() {
                return Ok(());
            }
            match mailbox::connect(imap_cfg).await {
                Ok(s) => {
                    info!("reconnected to {}:{}", imap_cfg.host, imap_cfg.port);
                    break s;
                }
                Err(e) => warn!("reconnect failed: {e}"),
            }
        };
    }
}

/// One session: drain, wait for new mail (IDLE or polling), drain again. Returns the
/// session when done (`--once`, or asked to stop) and an error when the session broke.
async fn serve(
    book: &Playbook,
    journal: &Journal,
    smtp: &Smtp,
    mut session: Imap,
    opts: &mut Options,
    backoff: &mut Backoff,
) -> Result<Imap, String> {
    let imap_cfg = book.config.imap.as_ref().expect("checked");
    let t = imap_cfg.timeout_seconds;
    let caps = mailbox::within(t, "CAPABILITY", session.capabilities()).await?;
    let has_move = caps.has_str("MOVE");
    let use_idle = imap_cfg.idle && caps.has_str("IDLE");
    if !use_idle {
        info!(
            "polling every {} s (IDLE {})",
            imap_cfg.poll_seconds,
            if imap_cfg.idle {
                "not offered by the server"
            } else {
                "switched off"
            }
        );
    }
    loop {
        drain(book, journal, smtp, &mut session, has_move, opts).await?;
        // A whole drain went through: the connection is good again.
        backoff.reset();
        if opts.once || opts.stopping() {
            return Ok(session);
        }
        session = if use_idle {
            wait_idle(session, imap_cfg, opts).await?
        } else {
            opts.pause(Duration::from_secs(imap_cfg.poll_seconds)).await;
            session
        };
        if opts.stopping() {
            return Ok(session);
        }
    }
}

/// Waits in IDLE until the server reports a change, the refresh interval passes, or we
/// are asked to stop; then ends IDLE (DONE, under a timeout) and hands the session back.
async fn wait_idle(session: Imap, cfg: &ImapConfig, opts: &Options) -> Result<Imap, String> {
    let t = cfg.timeout_seconds;
    let unsolicited = session.unsolicited_responses.clone();
    // What the drain itself caused (EXPUNGE after MOVE, …) is not news.
    while unsolicited.try_recv().is_ok() {}
    let mut idle = session.idle();
    mailbox::within(t, "IDLE", idle.init()).await?;
    // Mail that arrived between the drain's listing and IDLE is announced while IDLE
    // starts; async-imap files those responses away, so look for them there.
    let mut news = false;
    while let Ok(r) = unsolicited.try_recv() {
        news |= !matches!(r, async_imap::types::UnsolicitedResponse::Expunge(_));
    }
    if !news && !opts.stopping() {
        let refresh = Duration::from_secs(cfg.idle_refresh_seconds);
        let mut stop = opts.stop.clone();
        let (wait, _interrupt) = idle.wait_with_timeout(refresh);
        // The crate's own timeout restarts on every keepalive ("* OK Still here"), so the
        // refresh is enforced here as well.
        tokio::select! {
            r = tokio::time::timeout(refresh, wait) => match r {
                Ok(Ok(IdleResponse::NewData(d))) => debug!("IDLE: {:?}", d.parsed()),
                Ok(Ok(_)) | Err(_) => debug!("IDLE refresh"),
                Ok(Err(e)) => return Err(format!("IDLE: {e}")),
            },
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    mailbox::within(t, "DONE (end of IDLE)", idle.done()).await
}

/// The journal's key for a message: its Message-ID, or for mail without one a digest of
/// its bytes (or its place, when it was too big to download), so that two such messages
/// never share outgoing Message-IDs.
fn message_key(plan: &Plan, raw: Option<&[u8]>, uidvalidity: u32, uid: u32) -> String {
    if let Some(id) = &plan.message_id {
        return id.clone();
    }
    match raw {
        Some(raw) => format!("sha256-{}@triage.invalid", &hex(&Sha256::digest(raw))[..32]),
        None => format!("uid-{uidvalidity}-{uid}@triage.invalid"),
    }
}

async fn drain(
    book: &Playbook,
    journal: &Journal,
    smtp: &Smtp,
    session: &mut Imap,
    has_move: bool,
    opts: &Options,
) -> Result<(), String> {
    let config = &book.config;
    let t = config.imap.as_ref().expect("checked").timeout_seconds;
    let inbox = config.folders.inbox.clone();
    let mb = mailbox::select(session, &inbox, t).await?;
    let uidvalidity = mb.uid_validity.unwrap_or(0);
    let db = |e: rusqlite::Error| format!("journal: {e}");
    if let Some((v, _)) = journal.folder(&inbox).map_err(db)? {
        if v != uidvalidity {
            warn!("{inbox}: UIDVALIDITY changed from {v} to {uidvalidity}; re-reading it, and mail handled before is recognised by Message-ID");
        }
    }
    // Messages left for a human stay in the inbox; the journal says they are done.
    let list = mailbox::listing(session, t).await?;
    settle_vanished(journal, &inbox, uidvalidity, &list)?;
    for item in list {
        if opts.stopping() {
            return Ok(());
        }
        let uid = item.uid;
        if let Some(state) = journal.state(uidvalidity, uid).map_err(db)? {
            if state.is_final() {
                continue;
            }
        } else if let Some(id) = &item.message_id {
            // Seen before under another UIDVALIDITY (or UID): carry its final state over.
            if let Some(state) = journal.state_by_message_id(id).map_err(db)? {
                if state.is_final() {
                    journal
                        .advance(
                            uidvalidity,
                            uid,
                            Some(id),
                            state,
                            None,
                            "handled before under another UID",
                        )
                        .map_err(db)?;
                    info!(uid, "{id}: handled before under another UID; left as it is");
                    continue;
                }
            }
        }
        if opts.shadow && journal.shadowed(uidvalidity, uid).map_err(db)? {
            continue;
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
            item,
        )
        .await?;
        journal.set_folder(&inbox, uidvalidity, uid).map_err(db)?;
    }
    journal.set_folder(&inbox, uidvalidity, 0).map_err(db)?;
    Ok(())
}

/// A message whose last step was moving it out of the inbox, killed before the journal
/// heard of the move, is no longer listed: its filing happened. Record that.
fn settle_vanished(
    journal: &Journal,
    inbox: &str,
    uidvalidity: u32,
    list: &[mailbox::Listed],
) -> Result<(), String> {
    let db = |e: rusqlite::Error| format!("journal: {e}");
    let present: std::collections::HashSet<u32> = list.iter().map(|l| l.uid).collect();
    for (uid, state, plan) in journal.unfinished(uidvalidity).map_err(db)? {
        if present.contains(&uid) {
            continue;
        }
        let Some(plan) = plan else { continue };
        let nothing_to_send = plan.respond != Respond::Auto || plan.outgoing.is_empty();
        let (to, reason) = if state >= State::Sent || nothing_to_send {
            if plan.original.human {
                (State::Human, plan.reason.clone())
            } else {
                (State::Filed, plan.reason.clone())
            }
        } else {
            (
                State::Human,
                "the message left the inbox before its answer was sent".to_string(),
            )
        };
        journal
            .advance(
                uidvalidity,
                uid,
                plan.message_id.as_deref(),
                to,
                None,
                &reason,
            )
            .map_err(db)?;
        let outcome = if to == State::Human {
            "left for human"
        } else {
            "filed"
        };
        journal
            .audit(
                inbox,
                uidvalidity,
                uid,
                &plan,
                outcome,
                "recorded after a restart",
            )
            .map_err(db)?;
        info!(uid, "{outcome} (recorded after a restart)");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    book: &Playbook,
    journal: &Journal,
    smtp: &Smtp,
    session: &mut Imap,
    has_move: bool,
    opts: &Options,
    inbox: &str,
    uidvalidity: u32,
    item: mailbox::Listed,
) -> Result<(), String> {
    let config = &book.config;
    let t = config.imap.as_ref().expect("checked").timeout_seconds;
    let smtp_t = config.smtp.as_ref().expect("checked").timeout_seconds;
    let db = |e: rusqlite::Error| format!("journal: {e}");
    let uid = item.uid;
    let size = item.size as usize;

    // Oversized: decided from the size alone, never downloaded.
    let (plan, raw) = if size > config.limits.max_message_bytes {
        (
            Plan::for_human(
                item.message_id.clone(),
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
        (plan, Some(raw))
    };
    let key = message_key(&plan, raw.as_deref(), uidvalidity, uid);
    journal
        .advance(
            uidvalidity,
            uid,
            Some(&key),
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
    let mail = raw.as_deref().and_then(|r| Mail::parse(r).ok());

    // The same message under another UID (mailbox rebuilt, copied back) was answered already.
    let answered_elsewhere = journal
        .state_by_message_id(&key)
        .map_err(db)?
        .is_some_and(|s| s >= State::Sent)
        && journal
            .state(uidvalidity, uid)
            .map_err(db)?
            .is_some_and(|s| s < State::Sending);

    let mut human_reason = None;
    let mut left_inbox = false;
    if plan.respond == Respond::Auto && !answered_elsewhere {
        let Some(mail) = &mail else {
            // decide() already sends unreadable mail to a human; this is belt and braces.
            return leave_for_human(
                journal,
                session,
                has_move,
                config,
                inbox,
                uidvalidity,
                uid,
                &key,
                &plan,
                "the message cannot be read".into(),
            )
            .await;
        };
        journal
            .advance(
                uidvalidity,
                uid,
                Some(&key),
                State::Sending,
                None,
                &plan.reason,
            )
            .map_err(db)?;
        for (i, out) in plan.outgoing.iter().enumerate() {
            let msg_id = outbox::message_id_for(&key, i, out, &config.desk.message_id_domain);
            let outcome = if out.kind == Kind::Reply {
                "replied"
            } else {
                "forwarded"
            };
            let state = journal.outbox_state(&msg_id).map_err(db)?;
            match state.as_deref() {
                Some("filed") => continue,
                Some("failed") => {
                    human_reason = Some("the SMTP server refused it before a restart".into());
                    break;
                }
                Some("sent") => {
                    // Accepted by the server; only the copy in Sent may be missing.
                    left_inbox = true;
                    if !mailbox::has_message_id(session, &config.folders.sent, &msg_id, t).await? {
                        if let Ok(m) = outbox::compose(config, mail, out, &msg_id) {
                            mailbox::append(session, &config.folders.sent, &m.formatted(), t)
                                .await?;
                        }
                    }
                    journal
                        .set_outbox(&msg_id, Some(&key), "filed")
                        .map_err(db)?;
                    continue;
                }
                Some("sending") => {
                    // Killed while sending: a copy in Sent means it went out.
                    left_inbox = true;
                    if mailbox::has_message_id(session, &config.folders.sent, &msg_id, t).await? {
                        journal
                            .set_outbox(&msg_id, Some(&key), "filed")
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
                .set_outbox(&msg_id, Some(&key), "sending")
                .map_err(db)?;
            match outbox::send(smtp, &message, smtp_t).await {
                Ok(()) => {}
                Err(Refusal::Permanent(e)) => {
                    error!(
                        uid,
                        "SMTP refused the {outcome} message to {:?}: {e}", out.to
                    );
                    human_reason = Some(format!(
                        "SMTP refused the {} to {} (cc {}): {e}",
                        if out.kind == Kind::Reply {
                            "reply"
                        } else {
                            "forward"
                        },
                        out.to.join(", "),
                        out.cc.join(", ")
                    ));
                    journal
                        .set_outbox(&msg_id, Some(&key), "failed")
                        .map_err(db)?;
                    break;
                }
                // Left `sending`: the next session looks in Sent, then sends.
                Err(Refusal::Transient(e)) => return Err(format!("SMTP: {e}")),
            }
            journal
                .record_sent(
                    &msg_id,
                    &key,
                    inbox,
                    uidvalidity,
                    uid,
                    &plan,
                    outcome,
                    &format!("{msg_id} to {} cc {}", out.to.join(","), out.cc.join(",")),
                )
                .map_err(db)?;
            mailbox::append(session, &config.folders.sent, &message.formatted(), t).await?;
            journal
                .set_outbox(&msg_id, Some(&key), "filed")
                .map_err(db)?;
        }
        if human_reason.is_none() {
            keep_documents(config, mail, &plan)?;
            journal
                .advance(
                    uidvalidity,
                    uid,
                    Some(&key),
                    State::Sent,
                    None,
                    &plan.reason,
                )
                .map_err(db)?;
        }
    }

    if left_inbox {
        // Settling a crash examined Sent; filing works on the inbox.
        mailbox::select(session, inbox, t).await?;
    }
    let to_human = plan.original.human || human_reason.is_some();
    if to_human {
        let reason = human_reason.unwrap_or_else(|| plan.reason.clone());
        leave_for_human(
            journal,
            session,
            has_move,
            config,
            inbox,
            uidvalidity,
            uid,
            &key,
            &plan,
            reason,
        )
        .await?;
    } else {
        mailbox::store(session, uid, "\\Seen \\Answered", t).await?;
        if let Some(folder) = &plan.original.folder {
            mailbox::move_to(session, uid, folder, has_move, t).await?;
        }
        journal
            .advance(
                uidvalidity,
                uid,
                Some(&key),
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

#[allow(clippy::too_many_arguments)]
async fn leave_for_human(
    journal: &Journal,
    session: &mut Imap,
    has_move: bool,
    config: &Config,
    inbox: &str,
    uidvalidity: u32,
    uid: u32,
    key: &str,
    plan: &Plan,
    reason: String,
) -> Result<(), String> {
    let t = config.imap.as_ref().expect("checked").timeout_seconds;
    let db = |e: rusqlite::Error| format!("journal: {e}");
    // Flag or move first, record after: a kill in between repeats a harmless step.
    match &config.folders.human {
        Some(folder) => mailbox::move_to(session, uid, folder, has_move, t).await?,
        None => mailbox::store(session, uid, "\\Flagged", t).await?,
    }
    journal
        .advance(uidvalidity, uid, Some(key), State::Human, None, &reason)
        .map_err(db)?;
    journal
        .audit(inbox, uidvalidity, uid, plan, "left for human", &reason)
        .map_err(db)?;
    info!(uid, category = %plan.category, "left for a human: {reason}");
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
