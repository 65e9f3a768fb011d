//! `triage run`: the imperative shell. Signs in, checks both servers and the folders,
//! then serves one IMAP session after another: drain the inbox, wait for news (IDLE or
//! polling), drain again. Every step is recorded in the journal before and after it
//! happens; this is the only place that retries.
//!
//! - [`inbox`]: one pass over the inbox (what is new, what was handled under another
//!   UID, decided in batches).
//! - [`answering`]: a message that sends mail, from its plan to its answers sent, its
//!   copies in Sent and its documents kept, exactly once across crashes.
//! - [`filing`]: filing by the plan's role, and setting aside for a person.
//! - [`history`]: the brakes that need the journal (bounces, per-sender limits, the
//!   circuit breaker) and the audit log's retention.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::core::config::{Config, ImapConfig};
use crate::core::plan::Playbook;
use crate::shell::folders::{self, Places};
use crate::shell::health::Health;
use crate::shell::journal::{self, Journal};
use crate::shell::mailbox::{self, Imap, Trouble};
use crate::shell::oauth;
use crate::shell::outbox;

mod answering;
mod backlog;
mod deciding;
mod drafts;
mod filer;
mod filing;
mod history;
mod inbox;
mod kept_documents;

type Smtp = outbox::Submission;

/// How often the drafts waiting for a person are looked for in Sent and Drafts.
const DRAFTS_EVERY: Duration = Duration::from_secs(30);

/// Why a session (or the start) ended. Each kind is counted apart in
/// `triage_errors_total{kind}`; only `Imap` says the mailbox connection is down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Imap(#[from] Trouble),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error(transparent)]
    Journal(#[from] journal::Error),
    /// Before the first session: configuration, sign-in, a server not usable.
    #[error("{0}")]
    Start(String),
}

impl Error {
    /// The `kind` label of `triage_errors_total`.
    fn kind(&self) -> &'static str {
        match self {
            Error::Imap(_) => "imap",
            Error::Smtp(_) => "smtp",
            Error::Journal(_) => "journal",
            Error::Start(_) => "start",
        }
    }
}

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

/// What the service holds for its whole life: the journal, the SMTP connection, the
/// IMAP sign-in and the folders discovered at start.
struct Desk<'a> {
    book: &'a Playbook,
    journal: &'a Journal,
    smtp: &'a Smtp,
    imap_in: &'a oauth::SignIn,
    places: &'a Places,
}

pub async fn run(mut opts: Options) -> Result<(), Error> {
    let book = opts.playbook.borrow().clone();
    let config = &book.config;
    let (imap_cfg, smtp_cfg) = match (&config.imap, &config.smtp) {
        (Some(i), Some(s)) => (i, s),
        (None, _) => return Err(Error::Start("the config has no `imap` section".into())),
        (_, None) => return Err(Error::Start("the config has no `smtp` section".into())),
    };
    let mut journal = Journal::open(&config.service.state)
        .map_err(|e| Error::Start(format!("journal {}: {e}", config.service.state.display())))?;
    journal.checkpoint_in_background();
    history::expire_audit(&journal, config)?;
    let (imap_in, smtp_in) =
        oauth::sign_ins(config, Some(opts.health.clone())).map_err(Error::Start)?;
    let imap_in = imap_in.ok_or_else(|| Error::Start("the config has no `imap` section".into()))?;
    if !opts.once {
        keep_tokens_fresh([Some(&imap_in), smtp_in.as_ref()], &opts);
    }
    let smtp = outbox::Submission::new(smtp_cfg, smtp_in).map_err(Error::Start)?;
    let drafts = book.prepares_drafts();
    let Some((session, places)) = start(config, drafts, &smtp, &imap_in, &mut opts).await? else {
        return Ok(());
    };
    opts.health.smtp(true);
    opts.health.imap(true);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(
        "logged in to {}:{} as {}; SMTP {}:{} answers",
        imap_cfg.host, imap_cfg.port, imap_cfg.username, smtp_cfg.host, smtp_cfg.port
    );
    let desk = Desk {
        book: &book,
        journal: &journal,
        smtp: &smtp,
        imap_in: &imap_in,
        places: &places,
    };
    let r = serve_until_stopped(&desk, session, &mut opts).await;
    smtp.quit().await;
    r
}

/// Tokens are kept fresh in the background, so a failing refresh shows the moment it
/// happens (once per token source; IMAP and SMTP may share one).
fn keep_tokens_fresh(sign_ins: [Option<&oauth::SignIn>; 2], opts: &Options) {
    let mut sources: Vec<&Arc<oauth::Tokens>> = Vec::new();
    for sign_in in sign_ins.into_iter().flatten() {
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

/// The health check at start: both servers, and every folder the service files into
/// must exist and be selectable before the first answer goes out. A clear error, or
/// retries when `service.retry_at_start` says so. None when asked to stop meanwhile.
async fn start(
    config: &Config,
    drafts: bool,
    smtp: &Smtp,
    imap_in: &oauth::SignIn,
    opts: &mut Options,
) -> Result<Option<(Imap, Places)>, Error> {
    let mut backoff = Backoff { attempt: 0 };
    loop {
        let err = match first_session(config, drafts, smtp, imap_in).await {
            Ok(ready) => return Ok(Some(ready)),
            // A folder the server refuses will not come right by waiting.
            Err(Trouble::Refused(w)) => return Err(Error::Start(w)),
            Err(Trouble::Broken(w)) => w,
        };
        if !config.service.retry_at_start || opts.once {
            return Err(Error::Start(err));
        }
        let d = backoff.next();
        warn!("{err}; retrying in {:.1} s", d.as_secs_f32());
        opts.pause(d).await;
        if opts.stopping() {
            return Ok(None);
        }
    }
}

/// SMTP answers, IMAP signs in, the folders are there: the session and the folders.
async fn first_session(
    config: &Config,
    drafts: bool,
    smtp: &Smtp,
    imap_in: &oauth::SignIn,
) -> Result<(Imap, Places), Trouble> {
    let imap_cfg = config.imap.as_ref().expect("checked");
    let smtp_cfg = config.smtp.as_ref().expect("checked");
    smtp.check().await.map_err(|e| {
        Trouble::Broken(format!(
            "SMTP server {}:{} is not usable: {e}",
            smtp_cfg.host, smtp_cfg.port
        ))
    })?;
    let server = |w: String| format!("IMAP server {}:{}: {w}", imap_cfg.host, imap_cfg.port);
    let mut session = mailbox::connect(imap_cfg, imap_in)
        .await
        .map_err(|e| Trouble::Broken(server(e.to_string())))?;
    let t = imap_cfg.timeout_seconds;
    let gmail = mailbox::within(t, "CAPABILITY", session.capabilities())
        .await?
        .has_str("X-GM-EXT-1");
    match folders::discover(&mut session, config, gmail, drafts, t).await {
        Ok(places) => Ok((session, places)),
        Err(Trouble::Refused(w)) => Err(Trouble::Refused(server(w))),
        Err(Trouble::Broken(w)) => Err(Trouble::Broken(server(w))),
    }
}

/// Serves one session after another: a dropped connection or a failed step ends the
/// session, and after a backoff a new one picks up where the journal says.
async fn serve_until_stopped(
    desk: &Desk<'_>,
    mut session: Imap,
    opts: &mut Options,
) -> Result<(), Error> {
    let imap_cfg = desk.book.config.imap.as_ref().expect("checked");
    let mut backoff = Backoff { attempt: 0 };
    loop {
        match serve(desk, session, opts, &mut backoff).await {
            Ok(mut s) => {
                let t = Duration::from_secs(imap_cfg.timeout_seconds);
                let _ = tokio::time::timeout(t, s.logout()).await;
                info!("logged out");
                return Ok(());
            }
            Err(e) if opts.once => return Err(e),
            Err(e) => {
                // The session is over whatever failed; only an IMAP error says why.
                opts.health.imap(false);
                opts.health.error(e.kind());
                warn!("mailbox session ended: {e}");
            }
        }
        match reconnect(imap_cfg, desk.imap_in, opts, &mut backoff).await {
            Some(s) => session = s,
            None => return Ok(()),
        }
    }
}

/// A new session after a backoff; None when asked to stop meanwhile.
async fn reconnect(
    imap_cfg: &ImapConfig,
    imap_in: &oauth::SignIn,
    opts: &Options,
    backoff: &mut Backoff,
) -> Option<Imap> {
    loop {
        if opts.stopping() {
            return None;
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
            return None;
        }
        opts.health.beat();
        match mailbox::connect(imap_cfg, imap_in).await {
            Ok(s) => {
                opts.health.reconnected();
                opts.health.imap(true);
                info!("reconnected to {}:{}", imap_cfg.host, imap_cfg.port);
                return Some(s);
            }
            Err(e) => warn!("reconnect failed: {e}"),
        }
    }
}

/// One session: drain, wait for new mail (IDLE or polling), drain again. Returns the
/// session when done (`--once`, or asked to stop) and an error when the session broke.
async fn serve(
    desk: &Desk<'_>,
    mut session: Imap,
    opts: &mut Options,
    backoff: &mut Backoff,
) -> Result<Imap, Error> {
    let imap_cfg = desk.book.config.imap.as_ref().expect("checked");
    let t = imap_cfg.timeout_seconds;
    let caps = mailbox::within(t, "CAPABILITY", session.capabilities()).await?;
    let use_idle = imap_cfg.idle && caps.has_str("IDLE");
    if !use_idle {
        let why = if imap_cfg.idle {
            "not offered by the server"
        } else {
            "switched off"
        };
        info!("polling every {} s (IDLE {why})", imap_cfg.poll_seconds);
    }
    let caps = mailbox::Caps {
        r#move: caps.has_str("MOVE"),
        uidplus: caps.has_str("UIDPLUS"),
        multiappend: caps.has_str("MULTIAPPEND") && caps.has_str("LITERAL+"),
    };
    let mut awaiting_copies = HashSet::new();
    let mut expired_at = tokio::time::Instant::now();
    let mut drafts_followed = tokio::time::Instant::now() - DRAFTS_EVERY;
    loop {
        if expired_at.elapsed() > Duration::from_secs(24 * 3600) {
            history::expire_audit(desk.journal, &desk.book.config)?;
            expired_at = tokio::time::Instant::now();
        }
        let current = opts.playbook.borrow_and_update().clone();
        let mut shell = inbox::Shell {
            book: &current,
            journal: desk.journal,
            smtp: desk.smtp,
            imap_in: desk.imap_in,
            opts,
            caps,
            places: desk.places,
            awaiting_copies: &mut awaiting_copies,
            ids_in_pass: Default::default(),
            in_journal: HashSet::new(),
            listed_up_to: None,
            pending: Default::default(),
        };
        shell.drain(&mut session).await?;
        let listed_up_to = shell.listed_up_to;
        if opts.once {
            shell.collect_own_copies(&mut session).await?;
        }
        if opts.once || drafts_followed.elapsed() >= DRAFTS_EVERY {
            shell.follow_drafts(&mut session).await?;
            drafts_followed = tokio::time::Instant::now();
        }
        opts.health.checked();
        // A whole drain went through: the connection is good again.
        backoff.reset();
        if opts.once || opts.stopping() {
            return Ok(session);
        }
        session = if use_idle {
            let s = wait_idle(session, imap_cfg, opts, listed_up_to).await?;
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
async fn wait_idle(
    mut session: Imap,
    cfg: &ImapConfig,
    opts: &Options,
    listed_up_to: Option<u32>,
) -> Result<Imap, Trouble> {
    let t = cfg.timeout_seconds;
    let unsolicited = session.unsolicited_responses.clone();
    // What the drain itself caused (EXPUNGE after MOVE, …) is not news.
    while unsolicited.try_recv().is_ok() {}
    // Mail that came in after the pass's listing was announced with the answer to one
    // of its later commands, not again when IDLE starts, and async-imap drops what does
    // not fit its queue of 100 (a pass that moves hundreds fills it): asked for by UID,
    // it starts the next pass now instead of waiting for the IDLE refresh (minutes).
    if let Some(uid) = listed_up_to {
        if mailbox::holds_uid_above(&mut session, uid, t).await? {
            debug!("new mail came in during the pass");
            return Ok(session);
        }
    }
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
                Ok(Err(e)) => return Err(Trouble::Broken(format!("IDLE: {e}"))),
            },
            _ = stop.wait_for(|s| *s) => {}
        }
    }
    mailbox::within(t, "DONE (end of IDLE)", idle.done()).await
}
