//! `triage run`: the imperative shell. Drains the inbox, executes each message's plan,
//! and records every step in the journal before and after it happens. The only place
//! that retries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::core::config::{Config, ImapConfig};
use crate::core::message::Mail;
use crate::core::plan::{hex, Kind, Plan, Playbook};
use crate::core::restraint::{self, Brake, History};
use crate::core::rules::Respond;
use crate::core::threading;
use crate::shell::folders::{self, Places};
use crate::shell::health::Health;
use crate::shell::journal::{Journal, State};
use crate::shell::mailbox::{self, Imap, Trouble};
use crate::shell::oauth;
use crate::shell::outbox::{self, Refusal};

type Smtp = outbox::Submission;

pub struct Options {
    pub once: bool,
    pub shadow: bool,
    /// Becomes true on SIGTERM/SIGINT: the message in hand is finished, then we stop.
    pub stop: watch::Receiver<bool>,
    /// The rules, templates and directory in force; a reload swaps them between
    /// messages. Connection settings stay those the service started with.
    pub playbook: watch::Receiver<Arc<Playbook>>,
    /// Metrics and readiness, read by the HTTP listener.
    pub health: Arc<Health>,
}

impl Options {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps, or returns early when asked to stop.
    async fn pause(&self, d: Duration) {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }
}

/// Reconnect attempts in a row: the wait grows from 1 s to 256 s (with jitter).
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.attempt += 1;
        crate::shell::backoff::delay(
            self.attempt,
            Duration::from_secs(1),
            Duration::from_secs(256),
        )
    }
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub async fn run(mut opts: Options) -> Result<(), String> {
    let book = opts.playbook.borrow().clone();
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
    expire_audit(&journal, config)?;
    let (imap_in, smtp_in) = oauth::sign_ins(config, Some(opts.health.clone()))?;
    let imap_in = imap_in.ok_or("the config has no `imap` section")?;
    // Tokens are kept fresh in the background, so a failing refresh shows the moment
    // it happens (once per token source; IMAP and SMTP may share one).
    if !opts.once {
        let mut sources: Vec<&Arc<oauth::Tokens>> = Vec::new();
        for sign_in in [Some(&imap_in), smtp_in.as_ref()].into_iter().flatten() {
            if let oauth::SignIn::OAuth2(t) = sign_in {
                if !sources.iter().any(|k| Arc::ptr_eq(k, t)) {
                    sources.push(t);
                }
            }
        }
        for tokens in sources {
            tokio::spawn(tokens.clone().keep_fresh(opts.stop.clone()));
        }
    }
    let smtp = outbox::Submission::new(smtp_cfg, smtp_in)?;
    let mut backoff = Backoff { attempt: 0 };

    // Health check at start: both servers, with a clear error (or retries, if configured).
    loop {
        let err = match smtp.check().await {
            Err(e) => format!(
                "SMTP server {}:{} is not usable: {e}",
                smtp_cfg.host, smtp_cfg.port
            ),
            Ok(()) => match mailbox::connect(imap_cfg, &imap_in).await {
                Ok(mut session) => {
                    // Every folder the service files into must exist and be selectable
                    // before the first answer goes out: a refusal is a clear exit 1.
                    let gmail = mailbox::within(
                        imap_cfg.timeout_seconds,
                        "CAPABILITY",
                        session.capabilities(),
                    )
                    .await?
                    .has_str("X-GM-EXT-1");
                    let places = match folders::discover(
                        &mut session,
                        config,
                        gmail,
                        imap_cfg.timeout_seconds,
                    )
                    .await
                    {
                        Ok(p) => p,
                        Err(Trouble::Refused(w)) => {
                            return Err(format!(
                                "IMAP server {}:{}: {w}",
                                imap_cfg.host, imap_cfg.port
                            ))
                        }
                        Err(Trouble::Broken(w)) => {
                            let err =
                                format!("IMAP server {}:{}: {w}", imap_cfg.host, imap_cfg.port);
                            if !config.service.retry_at_start || opts.once {
                                return Err(err);
                            }
                            warn!("{err}; retrying");
                            opts.pause(backoff.next()).await;
                            continue;
                        }
                    };
                    opts.health.smtp(true);
                    opts.health.imap(true);
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                    info!(
                        "logged in to {}:{} as {}; SMTP {}:{} answers",
                        imap_cfg.host,
                        imap_cfg.port,
                        imap_cfg.username,
                        smtp_cfg.host,
                        smtp_cfg.port
                    );
                    let r = serve_until_stopped(
                        &book, &journal, &smtp, &imap_in, &places, session, &mut opts,
                    )
                    .await;
                    smtp.quit().await;
                    return r;
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
    imap_in: &oauth::SignIn,
    places: &Places,
    mut session: Imap,
    opts: &mut Options,
) -> Result<(), String> {
    let imap_cfg = book.config.imap.as_ref().expect("checked");
    let mut backoff = Backoff { attempt: 0 };
    loop {
        match serve(book, journal, smtp, places, session, opts, &mut backoff).await {
            Ok(mut s) => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(imap_cfg.timeout_seconds), s.logout())
                        .await;
                info!("logged out");
                return Ok(());
            }
            Err(e) if opts.once => return Err(e),
            Err(e) => {
                opts.health.imap(false);
                opts.health.error(if e.starts_with("SMTP") {
                    "smtp"
                } else if e.starts_with("journal") {
                    "journal"
                } else {
                    "imap"
                });
                warn!("mailbox session ended: {e}");
            }
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
            opts.health.beat();
            match mailbox::connect(imap_cfg, imap_in).await {
                Ok(s) => {
                    opts.health.reconnected();
                    opts.health.imap(true);
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
    places: &Places,
    mut session: Imap,
    opts: &mut Options,
    backoff: &mut Backoff,
) -> Result<Imap, String> {
    let imap_cfg = book.config.imap.as_ref().expect("checked");
    let t = imap_cfg.timeout_seconds;
    let caps = mailbox::within(t, "CAPABILITY", session.capabilities()).await?;
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
    let caps = mailbox::Caps {
        r#move: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
    };
    let mut awaiting_copies = HashSet::new();
    let mut expired_at = tokio::time::Instant::now();
    loop {
        if expired_at.elapsed() > Duration::from_secs(24 * 3600) {
            expire_audit(journal, &book.config)?;
            expired_at = tokio::time::Instant::now();
        }
        let current = opts.playbook.borrow_and_update().clone();
        let mut shell = Shell {
            book: &current,
            journal,
            smtp,
            opts,
            caps,
            places,
            awaiting_copies: &mut awaiting_copies,
            repeated_ids: HashSet::new(),
        };
        shell.drain(&mut session).await?;
        if opts.once {
            shell.collect_own_copies(&mut session).await?;
        }
        opts.health.checked();
        // A whole drain went through: the connection is good again.
        backoff.reset();
        if opts.once || opts.stopping() {
            return Ok(session);
        }
        session = if use_idle {
            let s = wait_idle(session, imap_cfg, opts).await?;
            opts.health.beat();
            s
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

/// The flags of a message filed with its plan done: answered when something went out.
fn filing_flags(plan: &Plan) -> &'static str {
    if plan.outgoing.is_empty() {
        "\\Seen"
    } else {
        "\\Seen \\Answered"
    }
}

/// Messages fetched and recorded together.
const BATCH: usize = 200;
/// Decisions that send nothing are made durable (recorded, flagged or moved) after this
/// many messages or this long, whichever comes first.
const GROUP_COMMIT: usize = 25;
const GROUP_COMMIT_AFTER: Duration = Duration::from_millis(200);

/// One pass over the inbox and the state it needs between messages.
struct Shell<'a> {
    book: &'a Playbook,
    journal: &'a Journal,
    smtp: &'a Smtp,
    opts: &'a Options,
    caps: mailbox::Caps,
    places: &'a Places,
    /// Messages sent by this process whose own copy has not come back yet.
    awaiting_copies: &'a mut HashSet<String>,
    /// Message-IDs that appear more than once in the current listing.
    repeated_ids: HashSet<String>,
}

fn db(e: rusqlite::Error) -> String {
    format!("journal: {e}")
}

impl Shell<'_> {
    fn config(&self) -> &Config {
        &self.book.config
    }
    fn t(&self) -> u64 {
        self.config()
            .imap
            .as_ref()
            .expect("checked")
            .timeout_seconds
    }

    async fn drain(&mut self, session: &mut Imap) -> Result<(), String> {
        let t = self.t();
        let inbox = self.config().folders.inbox.clone();
        let journal = self.journal;
        let mb = mailbox::select(session, &inbox, t).await?;
        let uidvalidity = mb.uid_validity.unwrap_or(0);
        let setting = self.config().limits.circuit_breaker.setting();
        let open = journal.breaker_open(&setting).map_err(db)?.is_some();
        self.opts.health.breaker(open);
        if let Some((v, _)) = journal.folder(&inbox).map_err(db)? {
            if v != uidvalidity {
                warn!("{inbox}: UIDVALIDITY changed from {v} to {uidvalidity}; re-reading it, and mail handled before is recognised by Message-ID");
            }
        }
        // Messages left for a human stay in the inbox; the journal says they are done.
        let list = mailbox::listing(session, t).await?;
        settle_vanished(journal, &inbox, uidvalidity, &list)?;
        let mut todo = Vec::new();
        let mut own_copies = Vec::new();
        // Message-IDs listed more than once: only those need a second look when their
        // turn comes (a copy earlier in this same pass may have been handled by then).
        let mut ids = std::collections::HashMap::new();
        for item in &list {
            if let Some(id) = &item.message_id {
                *ids.entry(id.clone()).or_insert(0u32) += 1;
            }
        }
        self.repeated_ids = ids
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id)
            .collect();
        for item in list {
            if self.opts.stopping() {
                return Ok(());
            }
            let uid = item.uid;
            if let Some(id) = &item.message_id {
                let ours = format!("<{id}>");
                if let Some(state) = journal.outbox_state(&ours).map_err(db)? {
                    // Our own copy of a message we sent: the server's receipt.
                    if state == "committing" || state == "sending" {
                        journal.set_outbox(&ours, None, "received").map_err(db)?;
                    }
                    // Without UIDPLUS a copy stays, marked \Deleted: not marked again
                    // on every pass.
                    if !item.deleted {
                        own_copies.push(uid);
                    }
                    self.awaiting_copies.remove(&ours);
                    debug!(uid, "own copy of {ours} received");
                    continue;
                }
            }
            if let Some(state) = journal.state(uidvalidity, uid).map_err(db)? {
                if state.is_final() {
                    continue;
                }
            } else if self
                .seen_elsewhere(session, &inbox, uidvalidity, &item)
                .await?
            {
                continue;
            }
            if self.opts.shadow && journal.shadowed(uidvalidity, uid).map_err(db)? {
                continue;
            }
            todo.push(item);
        }
        // The receipts are recorded; the copies themselves go in one step.
        mailbox::delete_many(session, &own_copies, self.caps.uidplus, t).await?;
        self.work_through(session, &inbox, uidvalidity, todo)
            .await?;
        journal.set_folder(&inbox, uidvalidity, 0).map_err(db)?;
        Ok(())
    }

    /// A message this journal knows by Message-ID from another UID: a restored copy
    /// carries its final state over; another message reusing the Message-ID (a broken
    /// mailer, a script) is left for a human, never skipped and never answered by
    /// guesswork. True when the message needs nothing more.
    async fn seen_elsewhere(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        item: &mailbox::Listed,
    ) -> Result<bool, String> {
        let journal = self.journal;
        let uid = item.uid;
        let Some(id) = &item.message_id else {
            return Ok(false);
        };
        let Some((state, same)) = journal.seen_before(id, item.size).map_err(db)? else {
            return Ok(false);
        };
        if !state.is_final() {
            return Ok(false);
        }
        if !same {
            let reason = format!(
                "another message with the Message-ID <{id}> was handled before, with a different size ({} bytes here)",
                item.size
            );
            let plan = Plan::for_human(Some(id.clone()), reason.clone(), self.config());
            journal
                .advance(
                    uidvalidity,
                    uid,
                    Some(id),
                    State::Planned,
                    Some(&plan),
                    &reason,
                )
                .map_err(db)?;
            journal.set_size(uidvalidity, uid, item.size).map_err(db)?;
            if self.opts.shadow {
                journal
                    .audit(inbox, uidvalidity, uid, &plan, "shadow", "")
                    .map_err(db)?;
                self.opts.health.message(plan.category.as_str(), "shadow");
                return Ok(true);
            }
            self.leave_for_human(session, inbox, uidvalidity, uid, id, &plan, reason, None)
                .await?;
            return Ok(true);
        }
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
        Ok(true)
    }

    /// Decides the messages in batches: one UID FETCH per batch, and what sends nothing
    /// (filed, or left for a human) recorded in one transaction and flagged or moved
    /// with one UID STORE / UID MOVE per folder. What sends mail goes one at a time.
    async fn work_through(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        todo: Vec<mailbox::Listed>,
    ) -> Result<(), String> {
        let t = self.t();
        let limit = self.config().limits.max_message_bytes;
        for chunk in todo.chunks(BATCH) {
            if self.opts.stopping() {
                return Ok(());
            }
            if self.opts.shadow {
                for item in chunk {
                    self.handle(session, inbox, uidvalidity, item.clone(), None)
                        .await?;
                }
                continue;
            }
            let wanted: Vec<u32> = chunk
                .iter()
                .filter(|i| i.size as usize <= limit)
                .map(|i| i.uid)
                .collect();
            let mut bodies: std::collections::HashMap<u32, Vec<u8>> =
                mailbox::fetch_many(session, &wanted, t)
                    .await?
                    .into_iter()
                    .collect();
            let mut quiet = Vec::new();
            let mut quiet_since = std::time::Instant::now();
            for item in chunk {
                if self.opts.stopping() {
                    break;
                }
                // A copy handled earlier in this same pass (same Message-ID) is known now.
                let repeated = item
                    .message_id
                    .as_ref()
                    .is_some_and(|id| self.repeated_ids.contains(id));
                if repeated
                    && self
                        .journal
                        .state(uidvalidity, item.uid)
                        .map_err(db)?
                        .is_none()
                    && self
                        .seen_elsewhere(session, inbox, uidvalidity, item)
                        .await?
                {
                    continue;
                }
                // Oversized (or gone meanwhile): the one-at-a-time path says why.
                let Some(raw) = bodies.remove(&item.uid) else {
                    self.handle(session, inbox, uidvalidity, item.clone(), None)
                        .await?;
                    continue;
                };
                let plan = match self.journal.plan(uidvalidity, item.uid).map_err(db)? {
                    Some(p) => p,
                    None => {
                        let mut plan = self.book.decide(&raw);
                        self.restrain(&mut plan)?;
                        plan
                    }
                };
                if plan.respond == Respond::Auto && !plan.outgoing.is_empty() {
                    self.handle(session, inbox, uidvalidity, item.clone(), Some((plan, raw)))
                        .await?;
                } else {
                    if quiet.is_empty() {
                        quiet_since = std::time::Instant::now();
                    }
                    quiet.push((item.uid, item.size, plan, raw));
                }
                // Group commit by count and by time, not only at the end of the batch: a
                // service killed every second must still keep what it decided.
                if quiet.len() >= GROUP_COMMIT || quiet_since.elapsed() >= GROUP_COMMIT_AFTER {
                    let group = std::mem::take(&mut quiet);
                    self.file_quietly(session, inbox, uidvalidity, group)
                        .await?;
                }
            }
            self.file_quietly(session, inbox, uidvalidity, quiet)
                .await?;
        }
        Ok(())
    }

    /// Messages whose plan sends nothing, as one batch. Recorded as planned first and as
    /// done last, like one message: a kill in between repeats harmless flags and moves,
    /// and what already left the inbox is settled at the next start.
    async fn file_quietly(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        mut quiet: Vec<(u32, u32, Plan, Vec<u8>)>,
    ) -> Result<(), String> {
        if quiet.is_empty() {
            return Ok(());
        }
        let t = self.t();
        let config = self.config();
        let journal = self.journal;
        let keep_raw = config.service.keep_messages_days > 0;
        let keys: Vec<String> = quiet
            .iter()
            .map(|(uid, _, plan, raw)| message_key(plan, Some(raw), uidvalidity, *uid))
            .collect();
        journal
            .together(|| {
                for ((uid, size, plan, raw), key) in quiet.iter().zip(&keys) {
                    journal.advance(
                        uidvalidity,
                        *uid,
                        Some(key),
                        State::Planned,
                        Some(plan),
                        &plan.reason,
                    )?;
                    journal.set_size(uidvalidity, *uid, *size)?;
                    if keep_raw {
                        journal.keep_raw(uidvalidity, *uid, raw)?;
                    }
                }
                Ok(())
            })
            .map_err(db)?;
        let mut human = Vec::new();
        let mut by_flags: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        let mut by_folder: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        let mut filed_to: std::collections::HashMap<u32, String> = Default::default();
        for (uid, _, plan, _) in &quiet {
            if plan.original.human {
                human.push(*uid);
                continue;
            }
            by_flags.entry(filing_flags(plan)).or_default().push(*uid);
            if let Some(folder) = self.filing_target(plan) {
                filed_to.insert(*uid, folder.clone());
                by_folder.entry(folder).or_default().push(*uid);
            }
        }
        for (flags, uids) in &by_flags {
            mailbox::store_many(session, uids, flags, t).await?;
        }
        // A folder the server refuses is those messages' problem: they go to a person
        // with the server's words, and the rest of the batch is filed.
        let mut refused: std::collections::HashMap<u32, String> = Default::default();
        for (folder, uids) in &by_folder {
            if let Some(why) = self.file_into(session, inbox, uids, folder).await? {
                for uid in uids {
                    refused.insert(*uid, why.clone());
                    human.push(*uid);
                }
            }
        }
        for (uid, _, plan, _) in quiet.iter_mut() {
            if let Some(why) = refused.remove(uid) {
                plan.original.human = true;
                plan.reason = why;
            }
        }
        self.set_aside(session, &human).await?;
        journal
            .together(|| {
                for ((uid, _, plan, _), key) in quiet.iter().zip(&keys) {
                    if plan.original.human {
                        journal.conclude(
                            inbox,
                            uidvalidity,
                            *uid,
                            Some(key),
                            State::Human,
                            plan,
                            &plan.reason,
                            "left for human",
                            &plan.reason,
                            None,
                        )?;
                    } else {
                        journal.conclude(
                            inbox,
                            uidvalidity,
                            *uid,
                            Some(key),
                            State::Filed,
                            plan,
                            &plan.reason,
                            "filed",
                            filed_to.get(uid).map(String::as_str).unwrap_or(inbox),
                            None,
                        )?;
                    }
                }
                Ok(())
            })
            .map_err(db)?;
        for (uid, _, plan, _) in &quiet {
            let outcome = if plan.original.human {
                info!(uid, category = %plan.category, "left for a human: {}", plan.reason);
                "left for human"
            } else {
                info!(uid, category = %plan.category, "filed: {}", plan.reason);
                "filed"
            };
            self.opts.health.message(plan.category.as_str(), outcome);
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        item: mailbox::Listed,
        prepared: Option<(Plan, Vec<u8>)>,
    ) -> Result<(), String> {
        let config = &self.book.config;
        let journal = self.journal;
        let t = self.t();
        let smtp_cfg = config.smtp.as_ref().expect("checked");
        let uid = item.uid;
        let size = item.size as usize;

        // Oversized: decided from the size alone, never downloaded.
        let (plan, raw) = if let Some((plan, raw)) = prepared {
            (plan, Some(raw))
        } else if size > config.limits.max_message_bytes {
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
                None => {
                    let mut plan = self.book.decide(&raw);
                    self.restrain(&mut plan)?;
                    plan
                }
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
        journal.set_size(uidvalidity, uid, item.size).map_err(db)?;
        if let Some(raw) = raw
            .as_deref()
            .filter(|_| config.service.keep_messages_days > 0)
        {
            journal.keep_raw(uidvalidity, uid, raw).map_err(db)?;
        }

        if self.opts.shadow {
            journal
                .audit(inbox, uidvalidity, uid, &plan, "shadow", "")
                .map_err(db)?;
            self.opts.health.message(plan.category.as_str(), "shadow");
            info!(uid, category = %plan.category, respond = ?plan.respond, "shadow: {}", plan.reason);
            return Ok(());
        }
        // The plan's attachment positions count winmail.dat's files, not winmail.dat.
        // Parsed again for its attachments; a parser panic here (decide() already caught
        // it once) must not stop the service either: the message then has no mail.
        let mail = raw.as_deref().and_then(|r| {
            std::panic::catch_unwind(|| {
                let mut m = Mail::parse(r).ok()?;
                crate::core::plan::unwrap_attachments(&mut m);
                Some(m)
            })
            .ok()
            .flatten()
        });

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
        // The SMTP server's own answer when it refused a message, for the audit log.
        let mut smtp_error = None;
        let mut left_inbox = false;
        // A Sent folder that refused a copy: the message goes to a person afterwards.
        let mut copy_refused: Option<String> = None;
        if plan.respond == Respond::Auto && !answered_elsewhere {
            let Some(mail) = &mail else {
                // decide() already sends unreadable mail to a human; this is belt and braces.
                let reason = "the message cannot be read".to_string();
                return self
                    .leave_for_human(session, inbox, uidvalidity, uid, &key, &plan, reason, None)
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
                let msg_id =
                    threading::message_id_for(&key, i, out, &config.desk.message_id_domain);
                let (outcome, what) = match out.kind {
                    Kind::Reply => ("replied", "reply"),
                    _ => ("forwarded", "forward"),
                };
                let detail = format!("{msg_id} to {} cc {}", out.to.join(","), out.cc.join(","));
                let state = journal.outbox_state(&msg_id).map_err(db)?;
                let message = match state.as_deref() {
                    Some("filed") => continue,
                    Some("failed") => {
                        human_reason = Some(format!(
                            "the SMTP server refused the {what} before a restart"
                        ));
                        break;
                    }
                    _ => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        outbox::compose(config, mail, out, &msg_id)
                    }))
                    .unwrap_or_else(|_| Err("internal error while writing it".into()))
                    {
                        Ok(m) => m,
                        Err(e) => {
                            human_reason = Some(format!("cannot write the {what}: {e}"));
                            break;
                        }
                    },
                };
                // `sent`: accepted and recorded before a restart; only its Sent copy may
                // be missing.
                let recorded = state.as_deref() == Some("sent");
                // `sending`: killed before the message's final dot went out, so the
                // server discarded it. Only `committing` (or `received`) may have gone.
                let mut send_now = matches!(state.as_deref(), None | Some("sending"));
                let mut note = "";
                if !recorded && !send_now {
                    // Killed while sending: did the server accept it? Its copy says.
                    left_inbox = true;
                    let accepted = state.as_deref() == Some("received")
                        || self.went_out(session, &msg_id).await?;
                    if accepted {
                        info!(uid, "{msg_id}: sent before the restart (its copy is here)");
                        note = " (confirmed after a restart)";
                    } else {
                        info!(uid, "{msg_id}: not sent before the restart; sending now");
                        send_now = true;
                    }
                }
                if send_now {
                    journal
                        .set_outbox(&msg_id, Some(&key), "sending")
                        .map_err(db)?;
                    let self_copy = smtp_cfg.self_copy.then_some(config.desk.address.as_str());
                    let commit = || {
                        journal
                            .set_outbox(&msg_id, Some(&key), "committing")
                            .map_err(db)
                    };
                    match self.smtp.send(&message, self_copy, commit).await {
                        Ok(()) => {
                            self.opts.health.smtp(true);
                            self.opts.health.sent(what);
                        }
                        Err(Refusal::Permanent(e)) => {
                            self.opts.health.error("smtp_refused");
                            error!(uid, "SMTP refused the {what} to {:?}: {e}", out.to);
                            smtp_error = Some(e.clone());
                            human_reason = Some(format!(
                                "SMTP refused the {what} to {} (cc {}): {e}",
                                out.to.join(", "),
                                out.cc.join(", ")
                            ));
                            journal
                                .set_outbox(&msg_id, Some(&key), "failed")
                                .map_err(db)?;
                            break;
                        }
                        // Left `sending` (nothing went out) or `committing` (the next
                        // session looks for the receipt before sending again).
                        Err(Refusal::Transient(e)) => {
                            self.opts.health.smtp(false);
                            return Err(format!("SMTP: {e}"));
                        }
                    }
                    if smtp_cfg.self_copy {
                        self.awaiting_copies.insert(msg_id.clone());
                    }
                }
                if !recorded {
                    journal
                        .record_sent(
                            &msg_id,
                            &key,
                            inbox,
                            uidvalidity,
                            uid,
                            &plan,
                            out,
                            outcome,
                            &format!("{detail}{note}"),
                        )
                        .map_err(db)?;
                }
                // The copy in Sent, as a person's reply would leave one. After a restart
                // it may be there already, unless we just found it missing and sent.
                // A server that files what it sends by itself (Gmail) gets no APPEND.
                if let Some(sent) = &self.places.sent {
                    let filed_before = state.is_some()
                        && !send_now
                        && mailbox::has_message_id(session, sent, &msg_id, t).await?;
                    left_inbox |= state.is_some();
                    if !filed_before {
                        match mailbox::append(session, sent, &message.formatted(), t).await {
                            Ok(()) => {}
                            // The answer went out; only its copy is missing: a person
                            // should know, and the next message goes on.
                            Err(Trouble::Refused(w)) => {
                                error!(uid, "{w}");
                                copy_refused = Some(format!(
                                    "the {what} went out, but its copy could not be saved: {w}"
                                ));
                            }
                            Err(broken) => return Err(broken.into()),
                        }
                    }
                }
                journal
                    .set_outbox(&msg_id, Some(&key), "filed")
                    .map_err(db)?;
            }
            if human_reason.is_none() {
                // The answers went out; a document that cannot be written (a full disk, a
                // name the file system refuses) is this message's problem, for a person.
                if let Err(e) = keep_documents(config, mail, &plan) {
                    error!(uid, "cannot keep the documents: {e}");
                    human_reason = Some(format!(
                        "the answer went out, but a document could not be kept for the CRM: {e}"
                    ));
                }
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
            // Everything went out and is recorded as such; only a Sent copy is missing.
            human_reason = human_reason.or(copy_refused);
        }

        if left_inbox {
            // Settling a crash examined other folders; filing works on the inbox.
            mailbox::select(session, inbox, t).await?;
        }
        if !plan.original.human && human_reason.is_none() {
            match self
                .file_answered(session, inbox, uidvalidity, uid, &key, &plan)
                .await?
            {
                None => return Ok(()),
                Some(why) => human_reason = Some(why),
            }
        }
        let reason = human_reason.unwrap_or_else(|| plan.reason.clone());
        self.leave_for_human(
            session,
            inbox,
            uidvalidity,
            uid,
            &key,
            &plan,
            reason,
            smtp_error,
        )
        .await
    }

    /// Flags and files a handled message by its plan's role. Some(reason) when the
    /// server refused the folder: the message then goes to a person.
    async fn file_answered(
        &self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        uid: u32,
        key: &str,
        plan: &Plan,
    ) -> Result<Option<String>, String> {
        let t = self.t();
        mailbox::store(session, uid, filing_flags(plan), t).await?;
        let target = self.filing_target(plan);
        if let Some(folder) = &target {
            if let Some(why) = self.file_into(session, inbox, &[uid], folder).await? {
                return Ok(Some(why));
            }
        }
        self.journal
            .conclude(
                inbox,
                uidvalidity,
                uid,
                Some(key),
                State::Filed,
                plan,
                &plan.reason,
                "filed",
                target.as_deref().unwrap_or(inbox),
                None,
            )
            .map_err(db)?;
        self.opts.health.message(plan.category.as_str(), "filed");
        info!(uid, category = %plan.category, "filed: {}", plan.reason);
        Ok(None)
    }

    /// The brakes that need history (answers already sent, bounces, the circuit breaker),
    /// applied once when a plan is made; the plan is then recorded as held or not.
    fn restrain(&self, plan: &mut Plan) -> Result<(), String> {
        let config = self.config();
        let limits = &config.limits;
        let journal = self.journal;
        let setting = limits.circuit_breaker.setting();
        if !plan.bounced.is_empty() {
            self.confirm_bounce(plan)?;
        }
        if !plan.bounced.is_empty() && !self.opts.shadow {
            journal
                .block_bounced(
                    &plan.bounced,
                    limits.bounce_block_days,
                    plan.message_id.as_deref().unwrap_or(""),
                )
                .map_err(db)?;
            warn!(
                "our mail to {} bounced: no automatic answer to it for {} days",
                plan.bounced.join(", "),
                limits.bounce_block_days
            );
        }
        if plan.respond != Respond::Auto {
            return Ok(());
        }
        let recipients = plan.outgoing.iter().flat_map(|o| o.to.iter().chain(&o.cc));
        let history = History {
            answers_to_sender: match &plan.from {
                Some(from) => journal
                    .answers_to_sender(from, plan.category.as_str(), limits.per_sender.hours)
                    .map_err(db)?,
                None => 0,
            },
            sent_recently: journal
                .sent_recently(limits.circuit_breaker.minutes)
                .map_err(db)?,
            breaker_open: journal.breaker_open(&setting).map_err(db)?,
            bounced: journal.bounced(recipients).map_err(db)?,
        };
        match restraint::restrain(plan, &history, config) {
            Some(Brake::Tripped(why)) => {
                self.opts.health.breaker(true);
                if !self.opts.shadow {
                    journal.open_breaker(&setting, &why).map_err(db)?;
                }
                error!("CIRCUIT BREAKER OPEN: {why}. Nothing is sent automatically until an operator runs `triage breaker reset` (or changes limits.circuit_breaker); messages are still decided, recorded and left for a human.");
            }
            Some(Brake::Held(why)) if history.breaker_open.is_some() => {
                error!("circuit breaker open: {why}");
            }
            Some(Brake::Held(why)) => warn!("held back: {why}"),
            None => {}
        }
        Ok(())
    }

    /// A bounce blocks only addresses the journal shows we wrote to in the message it is
    /// about: a DSN naming other people, or a Message-ID we never sent, blocks nobody.
    fn confirm_bounce(&self, plan: &mut Plan) -> Result<(), String> {
        let domain = &self.config().desk.message_id_domain;
        let mut recipients: Vec<String> = Vec::new();
        for id in &plan.bounce_of {
            let angled = format!("<{id}>");
            let Some(key) = self.journal.sent_answer_original(&angled).map_err(db)? else {
                continue;
            };
            for stored in self.journal.plans_by_key(&key).map_err(db)? {
                for (i, out) in stored.outgoing.iter().enumerate() {
                    let ours = threading::message_id_for(&key, i, out, domain);
                    if ours.eq_ignore_ascii_case(&angled) {
                        recipients.extend(out.to.iter().chain(&out.cc).map(|a| a.to_lowercase()));
                    }
                }
            }
        }
        let (kept, dropped): (Vec<String>, Vec<String>) = std::mem::take(&mut plan.bounced)
            .into_iter()
            .partition(|a| recipients.contains(a));
        if !dropped.is_empty() {
            let why = format!(
                "the delivery report names {} but the journal shows no mail of ours to {} in the message it is about: nobody blocked for {}",
                dropped.join(", "),
                if dropped.len() == 1 { "it" } else { "them" },
                if dropped.len() == 1 { "it" } else { "them" },
            );
            warn!("{why}");
            if kept.is_empty() {
                plan.reason = format!("{why}; left for a human");
            }
            plan.guards.push(why);
        }
        plan.bounced = kept;
        Ok(())
    }

    /// After a crash in `committing`: a copy in Sent, or our own copy come back to the
    /// inbox, means the server accepted the message. The own copy may still be on its
    /// way, so it is waited for (self_copy_wait_seconds) before concluding it was not.
    /// `--once` leaves the inbox as it found it, less what it handled: it waits for the
    /// own copies of what it sent and removes them.
    async fn collect_own_copies(&mut self, session: &mut Imap) -> Result<(), String> {
        let wait = self
            .config()
            .smtp
            .as_ref()
            .expect("checked")
            .self_copy_wait_seconds;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        while !self.awaiting_copies.is_empty() && !self.opts.stopping() {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    "the own copies of {} sent messages did not come back within {wait} s; is smtp.self_copy right for this server?",
                    self.awaiting_copies.len()
                );
                self.awaiting_copies.clear();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.drain(session).await?;
        }
        Ok(())
    }

    async fn went_out(&self, session: &mut Imap, msg_id: &str) -> Result<bool, String> {
        let config = self.config();
        let t = self.t();
        if mailbox::has_message_id(session, &self.places.sent_lookup, msg_id, t).await? {
            return Ok(true);
        }
        let smtp_cfg = config.smtp.as_ref().expect("checked");
        if !smtp_cfg.self_copy {
            return Ok(false);
        }
        // The wait counts from when the message went `committing`, not from this start:
        // a service restarted again and again must not wait the full time each time.
        let age = self
            .journal
            .outbox_age_seconds(msg_id)
            .map_err(db)?
            .unwrap_or(0.0);
        let left = (smtp_cfg.self_copy_wait_seconds as f64 - age.max(0.0)).max(0.0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(left);
        loop {
            if mailbox::has_message_id(session, &config.folders.inbox, msg_id, t).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Moves messages to their filing folder. Some(reason) when the server refuses the
    /// folder: those messages are then left for a person, and the rest go on.
    async fn file_into(
        &self,
        session: &mut Imap,
        inbox: &str,
        uids: &[u32],
        folder: &str,
    ) -> Result<Option<String>, String> {
        match mailbox::move_many(session, inbox, uids, folder, self.caps, self.t()).await {
            Ok(()) => Ok(None),
            Err(Trouble::Refused(w)) => {
                error!("cannot file {} message(s) to {folder}: {w}", uids.len());
                Ok(Some(format!(
                    "cannot file it to {folder}: {w}; left for a human"
                )))
            }
            Err(broken) => Err(broken.into()),
        }
    }

    /// Where the original goes now, by its plan's role (the rule's own folder, else its
    /// category's), with the current config and the server's names: a config fix also
    /// applies to plans made before it.
    fn filing_target(&self, plan: &Plan) -> Option<String> {
        let rule_folder = plan
            .rule
            .as_ref()
            .and_then(|name| self.book.rules.rules.iter().find(|r| &r.name == name))
            .and_then(|r| r.then.folder.clone());
        let logical = rule_folder.or_else(|| {
            self.config()
                .folders
                .by_category
                .get(plan.category.as_str())
                .cloned()
        })?;
        Some(self.places.resolve(&logical))
    }

    /// Messages left for a human stay visible: flagged in the inbox, or moved to the
    /// configured folder.
    async fn set_aside(&self, session: &mut Imap, uids: &[u32]) -> Result<(), String> {
        let t = self.t();
        if let Some(folder) = &self.config().folders.human {
            let folder = self.places.resolve(folder);
            let inbox = &self.config().folders.inbox;
            match mailbox::move_many(session, inbox, uids, &folder, self.caps, t).await {
                Ok(()) => return Ok(()),
                // Still visible for a person: flagged in the inbox instead.
                Err(Trouble::Refused(w)) => {
                    error!("cannot move to the human folder {folder}: {w}; flagging in the inbox")
                }
                Err(broken) => return Err(broken.into()),
            }
        }
        mailbox::store_many(session, uids, "\\Flagged", t).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn leave_for_human(
        &self,
        session: &mut Imap,
        inbox: &str,
        uidvalidity: u32,
        uid: u32,
        key: &str,
        plan: &Plan,
        reason: String,
        error: Option<String>,
    ) -> Result<(), String> {
        // Flag or move first, record after: a kill in between repeats a harmless step.
        self.set_aside(session, &[uid]).await?;
        self.journal
            .conclude(
                inbox,
                uidvalidity,
                uid,
                Some(key),
                State::Human,
                plan,
                &reason,
                "left for human",
                &reason,
                error.as_deref(),
            )
            .map_err(db)?;
        self.opts
            .health
            .message(plan.category.as_str(), "left for human");
        info!(uid, category = %plan.category, "left for a human: {reason}");
        Ok(())
    }
}

/// A message whose last step was moving it out of the inbox, killed before the journal
/// heard of the move, is no longer listed: its filing happened. Record that.
fn settle_vanished(
    journal: &Journal,
    inbox: &str,
    uidvalidity: u32,
    list: &[mailbox::Listed],
) -> Result<(), String> {
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
        let outcome = if to == State::Human {
            "left for human"
        } else {
            "filed"
        };
        journal
            .conclude(
                inbox,
                uidvalidity,
                uid,
                plan.message_id.as_deref(),
                to,
                &plan,
                &reason,
                outcome,
                "recorded after a restart",
                None,
            )
            .map_err(db)?;
        info!(uid, "{outcome} (recorded after a restart)");
    }
    Ok(())
}

/// Retention of the audit log (`service.audit_retention_days`).
fn expire_audit(journal: &Journal, config: &Config) -> Result<(), String> {
    let days = config.service.audit_retention_days;
    let n = journal.expire_audit(days).map_err(db)?;
    if n > 0 {
        info!("audit log: {n} records older than {days} days deleted");
    }
    let keep = config.service.keep_messages_days;
    let n = journal.expire_raw(keep).map_err(db)?;
    if n > 0 {
        info!("{n} messages' bytes older than {keep} days forgotten (no replay for them)");
    }
    Ok(())
}

/// POs and PoEs kept for the CRM, under the opportunity or deal they belong to. A name
/// already taken in the folder by another document gets ` (2)`; the same bytes under a
/// name are a retry and are left as they are.
fn keep_documents(config: &Config, mail: &Mail, plan: &Plan) -> Result<(), String> {
    for d in &plan.keep_documents {
        let Some(a) = mail.attachments.get(d.attachment_index) else {
            continue;
        };
        let dir = config.service.documents.join(&d.under);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("documents folder {}: {e}", dir.display()))?;
        let same = |n: &str| std::fs::read(dir.join(n)).is_ok_and(|b| b == a.bytes);
        let name = crate::core::message::sanitize_name(&d.name);
        // The first name that is free or already holds these bytes.
        let name = crate::core::message::unique_name(&name, |n| dir.join(n).exists() && !same(n));
        let path = dir.join(&name);
        if path.exists() {
            continue; // the same document, kept before a restart
        }
        let tmp = dir.join(format!(".keep-{}.tmp", &d.sha256[..d.sha256.len().min(16)]));
        std::fs::write(&tmp, &a.bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("keep {}: {e}", path.display()))?;
    }
    Ok(())
}
