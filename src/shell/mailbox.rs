//! The IMAP side: connecting (implicit TLS, STARTTLS, or plain on loopback when the
//! config says so), and the few commands the service needs, each under a timeout. Every
//! response stream is drained to the end: async-imap desynchronises otherwise.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_imap::Session;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::core::config::{ImapConfig, TlsMode};
use crate::shell::oauth::{self, SignIn, Tokens};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Debug> Io for T {}

pub type Imap = Session<Box<dyn Io>>;

pub async fn within<T, E: std::fmt::Display>(
    secs: u64,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Trouble> {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Trouble::Broken(format!("{what}: {e}"))),
        Err(_) => Err(Trouble::Broken(format!("{what}: no answer in {secs} s"))),
    }
}

/// A rustls client (ring) trusting `ca_file`, or the system store when there is none.
pub fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        for cert in pem_certificates(&pem) {
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        }
    } else {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The certificates in a PEM file (rustls' own PEM reader).
fn pem_certificates(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// Reads the server's greeting, which must come before any command.
async fn greeting<T: Io>(client: &mut async_imap::Client<T>, t: u64) -> Result<(), String> {
    within(t, "greeting", async {
        client
            .read_response()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "connection closed".to_string())
    })
    .await
    .map(|_| ())
    .map_err(String::from)
}

pub async fn select(
    s: &mut Imap,
    folder: &str,
    t: u64,
) -> Result<async_imap::types::Mailbox, Trouble> {
    within(t, &format!("SELECT {folder}"), s.select(folder)).await
}

/// Connects and signs in; the error names the step that failed, never a secret. With
/// OAuth2, a refused token that looked valid gets one new token and one more try.
pub async fn connect(cfg: &ImapConfig, sign_in: &SignIn) -> Result<Imap, Trouble> {
    sign_in_once(cfg, sign_in).await.map_err(Trouble::Broken)
}

async fn sign_in_once(cfg: &ImapConfig, sign_in: &SignIn) -> Result<Imap, String> {
    match sign_in {
        SignIn::Password(password) => open(cfg, Credential::Password(password))
            .await
            .map_err(|f| f.why),
        SignIn::OAuth2(tokens) => {
            let token = tokens.token().await?;
            match open(cfg, Credential::Token(tokens, &token)).await {
                Err(f) if f.refused => {
                    let token = tokens
                        .renew(&token)
                        .await
                        .map_err(|e| format!("{}; {e}", f.why))?;
                    open(cfg, Credential::Token(tokens, &token))
                        .await
                        .map_err(|f| f.why)
                }
                r => r.map_err(|f| f.why),
            }
        }
    }
}

enum Credential<'a> {
    Password(&'a str),
    Token(&'a Tokens, &'a str),
}

/// Why a connection failed, and whether it was the server refusing the sign-in.
struct Failed {
    why: String,
    refused: bool,
}

impl From<Trouble> for Failed {
    fn from(t: Trouble) -> Self {
        Failed::from(t.to_string())
    }
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Failed {
            why,
            refused: false,
        }
    }
}

/// The SASL exchange for a bearer token: the initial response, then (after a failure
/// the server explains in a challenge) the acknowledgement it waits for.
struct Bearer {
    first: Option<String>,
    mechanism: &'static str,
}

impl async_imap::Authenticator for Bearer {
    type Response = String;
    fn process(&mut self, _challenge: &[u8]) -> String {
        self.first
            .take()
            .unwrap_or_else(|| oauth::error_acknowledgement(self.mechanism).to_string())
    }
}

/// The server's own text from async-imap's NO description (`code: .., info: Some("..")`).
fn server_words(no: &str) -> &str {
    no.split_once("info: Some(\"")
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
        .map(|(text, _)| text)
        .unwrap_or(no)
}

/// The capabilities before sign-in (for the SASL mechanisms offered).
async fn capabilities<T: Io>(client: &mut async_imap::Client<T>) -> Result<Vec<String>, String> {
    use async_imap::imap_proto::{Capability, RequestId, Response};
    use tokio::io::AsyncWriteExt;
    // Before sign-in async-imap runs no arbitrary command (its Client keeps that private),
    // so the command is written under our own tag, and its answer read back through it.
    let stream = client.get_mut();
    stream
        .write_all(b"cap0 CAPABILITY\r\n")
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let tag = RequestId("cap0".into());
    let mut caps = Vec::new();
    loop {
        let r = client
            .read_response()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("connection closed")?;
        match r.parsed() {
            Response::Capabilities(list) => caps.extend(list.iter().map(|c| match c {
                Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                Capability::Auth(m) => format!("AUTH={}", m.to_uppercase()),
                Capability::Atom(a) => a.to_uppercase(),
            })),
            Response::Done { tag: t, .. } if *t == tag => return Ok(caps),
            _ => {}
        }
    }
}

async fn open(cfg: &ImapConfig, credential: Credential<'_>) -> Result<Imap, Failed> {
    let t = cfg.timeout_seconds;
    let tcp = within(
        t,
        &format!("connect to {}:{}", cfg.host, cfg.port),
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let sock = socket2::SockRef::from(&tcp);
    let _ = sock.set_keepalive(true);
    let server_name = ServerName::try_from(cfg.host.clone())
        .map_err(|e| format!("server name {}: {e}", cfg.host))?;
    let stream: Box<dyn Io> = match cfg.tls {
        TlsMode::Plain => Box::new(tcp),
        TlsMode::Implicit => {
            let tls = tls_connector(cfg.ca_file.as_deref())?;
            Box::new(within(t, "TLS handshake", tls.connect(server_name, tcp)).await?)
        }
        TlsMode::Starttls => {
            let mut client = async_imap::Client::new(tcp);
            greeting(&mut client, t).await?;
            within(
                t,
                "STARTTLS",
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            let tcp = client.into_inner();
            let tls = tls_connector(cfg.ca_file.as_deref())?;
            Box::new(within(t, "TLS handshake", tls.connect(server_name, tcp)).await?)
        }
    };
    let mut client = async_imap::Client::new(stream);
    if cfg.tls != TlsMode::Starttls {
        greeting(&mut client, t).await?;
    }
    let step = format!("sign-in as {}", cfg.username);
    let attempt = match credential {
        Credential::Password(password) => {
            tokio::time::timeout(Duration::from_secs(t), async {
                client
                    .login(&cfg.username, password)
                    .await
                    .map_err(|(e, _)| e)
            })
            .await
        }
        Credential::Token(tokens, token) => {
            let caps = within(t, "CAPABILITY", capabilities(&mut client)).await?;
            let mechanism = oauth::choose_mechanism(tokens.mechanism(), |m| {
                caps.iter().any(|c| *c == format!("AUTH={m}"))
            })
            .map_err(|e| format!("{step}: {e}"))?;
            let bearer = Bearer {
                first: Some(oauth::initial_response(mechanism, &cfg.username, token)),
                mechanism,
            };
            tokio::time::timeout(Duration::from_secs(t), async {
                client
                    .authenticate(mechanism, bearer)
                    .await
                    .map_err(|(e, _)| e)
            })
            .await
        }
    };
    match attempt {
        Ok(Ok(session)) => Ok(session),
        // NO to LOGIN or AUTHENTICATE: the credentials, not the network.
        Ok(Err(async_imap::error::Error::No(why))) => Err(Failed {
            why: format!("{step}: refused: {}", server_words(&why)),
            refused: true,
        }),
        Ok(Err(e)) => Err(format!("{step}: {e}").into()),
        Err(_) => Err(format!("{step}: no answer in {t} s").into()),
    }
}

/// A message in the listing: enough to decide whether to download it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub uid: u32,
    pub size: u32,
    /// Without angle brackets, as mail-parser gives it: read from the message once it is
    /// fetched (`Mail::message_id_of`), not listed.
    pub message_id: Option<String>,
    /// Marked \Deleted (our own copy left behind on a server without UIDPLUS).
    pub deleted: bool,
}

/// Every message in the selected folder with its size and flags, without opening one:
/// the size limit is checked before a fetch. Message-IDs are not listed: for ENVELOPE
/// or a header field the server reads every message's file (0.35 s per 10,000 on
/// Dovecot), while UID, FLAGS and size come from its index (Dovecot's Maildir keeps the
/// size in the file name); they are read from the bodies as those arrive.
pub async fn listing(s: &mut Imap, t: u64) -> Result<Vec<Listed>, Trouble> {
    within(t, "UID FETCH listing", async {
        let mut out = Vec::new();
        let mut stream = s.uid_fetch("1:*", "(UID FLAGS RFC822.SIZE)").await?;
        while let Some(item) = stream.next().await {
            let f = item?;
            if let (Some(uid), Some(size)) = (f.uid, f.size) {
                let deleted = f
                    .flags()
                    .any(|fl| matches!(fl, async_imap::types::Flag::Deleted));
                out.push(Listed {
                    uid,
                    size,
                    message_id: None,
                    deleted,
                });
            }
        }
        Ok::<_, async_imap::error::Error>(out)
    })
    .await
}

/// The Message-ID of a message too big to download, from its header field alone.
pub async fn message_id_alone(s: &mut Imap, uid: u32, t: u64) -> Result<Option<String>, Trouble> {
    within(t, "UID FETCH Message-ID", async {
        let mut id = None;
        let mut stream = s
            .uid_fetch(
                uid.to_string(),
                "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            )
            .await?;
        while let Some(item) = stream.next().await {
            let f = item?;
            if f.uid == Some(uid) {
                id = f
                    .header()
                    .and_then(crate::core::message::Mail::message_id_of);
            }
        }
        Ok::<_, async_imap::error::Error>(id)
    })
    .await
}

/// The whole message, without setting \Seen (BODY.PEEK).
pub async fn fetch(s: &mut Imap, uid: u32, t: u64) -> Result<Option<Vec<u8>>, Trouble> {
    Ok(fetch_many(s, &[uid], t)
        .await?
        .into_iter()
        .next()
        .map(|(_, body)| body))
}

/// Several messages in one UID FETCH: one round trip for a batch instead of one each.
pub async fn fetch_many(
    s: &mut Imap,
    uids: &[u32],
    t: u64,
) -> Result<Vec<(u32, Vec<u8>)>, Trouble> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    within(t.max(uids.len() as u64 / 10), "UID FETCH bodies", async {
        let mut out = Vec::with_capacity(uids.len());
        let mut stream = s.uid_fetch(uid_set(uids), "(UID BODY.PEEK[])").await?;
        while let Some(item) = stream.next().await {
            let f = item?;
            if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                if uids.contains(&uid) {
                    out.push((uid, body.to_vec()));
                }
            }
        }
        Ok::<_, async_imap::error::Error>(out)
    })
    .await
}

/// Several messages in one UID FETCH, each handed to `each` as it arrives, so that
/// deciding one overlaps with the server sending the next. The timeout is per message
/// (the server's silence), not for the batch: deciding a batch of slow documents must
/// not look like a dead connection. `each` failing stops the batch; the session must
/// then be dropped (its response is unread).
pub async fn fetch_each<E>(
    s: &mut Imap,
    uids: &[u32],
    t: u64,
    mut each: impl FnMut(u32, Vec<u8>) -> Result<(), E>,
) -> Result<Result<(), E>, Trouble> {
    if uids.is_empty() {
        return Ok(Ok(()));
    }
    let what = "UID FETCH bodies";
    let wanted: std::collections::HashSet<u32> = uids.iter().copied().collect();
    let mut stream = within(t, what, s.uid_fetch(uid_set(uids), "(UID BODY.PEEK[])")).await?;
    loop {
        let Some(item) = within(t, what, async { Ok::<_, String>(stream.next().await) }).await?
        else {
            return Ok(Ok(()));
        };
        let f = item.map_err(|e| Trouble::Broken(format!("{what}: {e}")))?;
        if let (Some(uid), Some(body)) = (f.uid, f.body()) {
            if wanted.contains(&uid) {
                if let Err(e) = each(uid, body.to_vec()) {
                    return Ok(Err(e));
                }
            }
        }
    }
}

/// `1,2,3,7` as `1:3,7`: UID sets stay short however many messages a batch holds.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

pub async fn store(s: &mut Imap, uid: u32, flags: &str, t: u64) -> Result<(), Trouble> {
    store_many(s, &[uid], flags, t).await
}

pub async fn store_many(s: &mut Imap, uids: &[u32], flags: &str, t: u64) -> Result<(), Trouble> {
    if uids.is_empty() {
        return Ok(());
    }
    within(t, "UID STORE", async {
        let mut stream = s
            .uid_store(uid_set(uids), format!("+FLAGS.SILENT ({flags})"))
            .await?;
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok::<_, async_imap::error::Error>(())
    })
    .await
}

/// A group's flags and moves sent together, their answers read after. On Maildir every
/// sync of the inbox takes its lock, which each delivery into it takes too; Dovecot waits
/// for the commands in progress before it syncs (imap-sync.c), so the series meets that
/// lock less often than one command at a time did while the desk's own copies were being
/// delivered (README, "what limits the full job"). Per move, in order: done, or the
/// server's refusal, for the caller to try again alone (`move_after_refusal` creates a
/// missing folder). A refused STORE is returned as the error once every answer is read; the moves
/// sent with it have still been made, so those messages are filed without the flags
/// (their records are settled at the next start, as after a kill between the two).
/// Untagged answers (EXPUNGE, EXISTS) are not kept: a pass lists the inbox anew. The
/// moves' copies carry the STORE's flags, so the order matters: RFC 3501 (5.5) has a
/// server that could run commands at once run such dependent ones in the order sent, as
/// servers that run one command at a time do anyway; `live_service` checks the flags on
/// an answered original in its folder.
///
/// `on_moved(i)` is called as soon as move `i` is done and every flag stored (the answers
/// come one by one, a Maildir server taking ~20 ms a move): the caller records those
/// while the server moves the next. A move done before the flags' answer is only in the
/// result.
pub async fn store_and_move_at_once(
    s: &mut Imap,
    stores: &[(&str, &[u32])],
    moves: &[(&str, &[u32])],
    t: u64,
    mut on_moved: impl FnMut(usize),
) -> Result<Vec<Result<(), Trouble>>, Trouble> {
    use async_imap::imap_proto::{Response, Status};
    let mut commands = Vec::new();
    for (flags, uids) in stores.iter().filter(|(_, u)| !u.is_empty()) {
        let what = "UID STORE".to_string();
        commands.push((
            None,
            what,
            format!("UID STORE {} +FLAGS.SILENT ({flags})", uid_set(uids)),
        ));
    }
    for (i, (folder, uids)) in moves.iter().enumerate().filter(|(_, (_, u))| !u.is_empty()) {
        let what = format!("UID MOVE to {folder}");
        // A line break would end the command (never in a name the server listed).
        if folder.contains(['\r', '\n']) {
            return Err(Trouble::Refused(format!(
                "{what}: the folder's name has a line break"
            )));
        }
        commands.push((
            Some(i),
            what,
            format!("UID MOVE {} {}", uid_set(uids), quoted(folder)),
        ));
    }
    let mut out: Vec<Result<(), Trouble>> = moves.iter().map(|_| Ok(())).collect();
    let mut store_refused = None;
    // Each command as long as it would have alone.
    let all = t.saturating_mul(commands.len().max(1) as u64);
    within(all, "UID STORE and UID MOVE", async {
        let mut tags = Vec::new();
        for (which, what, command) in &commands {
            tags.push((s.run_command(command).await?, which, what));
        }
        let mut left = tags.len();
        let mut stores_left = tags.iter().filter(|(_, which, _)| which.is_none()).count();
        while left > 0 {
            let Some(answer) = s.read_response().await? else {
                return Err(async_imap::error::Error::ConnectionLost);
            };
            let Response::Done {
                tag,
                status,
                outcome,
            } = answer.parsed()
            else {
                continue;
            };
            let Some((_, which, what)) = tags.iter().find(|(t, ..)| t == tag) else {
                continue;
            };
            left -= 1;
            if *status == Status::Ok {
                match which {
                    Some(i) if stores_left == 0 => on_moved(*i),
                    Some(_) => {}
                    None => stores_left -= 1,
                }
                continue;
            }
            let words = outcome.information.as_deref().unwrap_or("refused");
            match which {
                Some(i) => out[*i] = Err(refusal(what, words)),
                // As `store_many` would: a session that cannot flag is broken.
                None => {
                    store_refused =
                        Some(Trouble::Broken(format!("{what}: the server said: {words}")))
                }
            }
        }
        Ok::<_, async_imap::error::Error>(())
    })
    .await?;
    match store_refused {
        Some(trouble) => Err(trouble),
        None => Ok(out),
    }
}

/// What the server can do for filing, read once per session.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub r#move: bool,
    pub uidplus: bool,
    /// MULTIAPPEND with non-synchronising literals (LITERAL+): many APPENDs in one
    /// command and one round trip.
    pub multiappend: bool,
}

/// Moves messages to a folder (created if missing): UID MOVE, or UID COPY, \Deleted and
/// UID EXPUNGE of just those messages. Without UIDPLUS there is no expunging only ours
/// (a plain EXPUNGE would remove other clients' \Deleted mail too): the originals stay
/// marked \Deleted and \Seen in the inbox until the server or a person expunges.
pub async fn move_many(
    s: &mut Imap,
    source: &str,
    uids: &[u32],
    folder: &str,
    caps: Caps,
    t: u64,
) -> Result<(), Trouble> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uid_set(uids);
    if caps.r#move {
        // The folder is created only when the server refuses the move (TRYCREATE), not
        // with one more command before every move.
        let what = format!("UID MOVE to {folder}");
        return match checked(t, &what, s.uid_mv(&set, folder)).await {
            Err(Trouble::Refused(_)) => move_after_refusal(s, uids, folder, t).await,
            done => done,
        };
    }
    ensure_folder(s, folder, t).await?;
    // COPY, then \Deleted and EXPUNGE, is two steps: killed between them, the next run
    // would copy again. A keyword marks what is being filed; a marked message whose
    // Message-ID the folder already holds was copied before and is not copied again.
    let before = copied_before(s, source, uids, folder, t).await?;
    let todo: Vec<u32> = uids
        .iter()
        .copied()
        .filter(|u| !before.contains(u))
        .collect();
    if !todo.is_empty() {
        // A server without keywords still files; only the restart check is lost.
        let _ = store_many(s, &todo, FILING, t).await;
        checked(
            t,
            &format!("UID COPY to {folder}"),
            s.uid_copy(uid_set(&todo), folder),
        )
        .await?;
    }
    store_many(s, uids, "\\Deleted", t).await?;
    if caps.uidplus {
        uid_expunge(s, &set, t).await?;
    }
    Ok(())
}

/// A UID MOVE the server refused, tried once more after making sure the folder exists
/// (TRYCREATE); the server's words if it refuses again.
pub async fn move_after_refusal(
    s: &mut Imap,
    uids: &[u32],
    folder: &str,
    t: u64,
) -> Result<(), Trouble> {
    ensure_folder(s, folder, t).await?;
    let what = format!("UID MOVE to {folder}");
    checked(t, &what, s.uid_mv(uid_set(uids), folder)).await
}

/// The keyword on a message being filed by COPY.
const FILING: &str = "$TriageFiling";

/// Of `uids` in `source`, those marked as being filed whose Message-ID `folder` holds.
async fn copied_before(
    s: &mut Imap,
    source: &str,
    uids: &[u32],
    folder: &str,
    t: u64,
) -> Result<Vec<u32>, Trouble> {
    let query = format!("UID {} KEYWORD {FILING}", uid_set(uids));
    let marked = checked(t, "UID SEARCH", s.uid_search(&query)).await?;
    if marked.is_empty() {
        return Ok(Vec::new());
    }
    let mut marked: Vec<u32> = marked.into_iter().collect();
    marked.sort_unstable();
    let ids: Vec<(u32, String)> = checked(t, "UID FETCH ENVELOPE", async {
        let mut out = Vec::new();
        let mut stream = s.uid_fetch(uid_set(&marked), "(UID ENVELOPE)").await?;
        while let Some(item) = stream.next().await {
            let f = item?;
            let id = f
                .envelope()
                .and_then(|e| e.message_id.as_deref())
                .map(|m| String::from_utf8_lossy(m).into_owned());
            if let (Some(uid), Some(id)) = (f.uid, id) {
                out.push((uid, id));
            }
        }
        Ok(out)
    })
    .await?;
    checked(t, &format!("EXAMINE {folder}"), s.examine(folder)).await?;
    let mut found = Vec::new();
    for (uid, id) in ids {
        if holds_message_id(s, &id, t).await? {
            found.push(uid);
        }
    }
    checked(t, &format!("SELECT {source}"), s.select(source)).await?;
    Ok(found)
}

/// Expunges the messages marked \Deleted in the set, and no other (UIDPLUS).
async fn uid_expunge(s: &mut Imap, set: &str, t: u64) -> Result<(), Trouble> {
    within(t, "UID EXPUNGE", async {
        let stream = s.uid_expunge(set).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            item?;
        }
        Ok::<_, async_imap::error::Error>(())
    })
    .await
}

/// Deletes one message for good (our own copy of a message we sent). Without UIDPLUS
/// it is only marked \Deleted, and recognised again next time.
pub async fn delete(s: &mut Imap, uid: u32, has_uidplus: bool, t: u64) -> Result<(), Trouble> {
    delete_many(s, &[uid], has_uidplus, t).await
}

/// Deletes several messages for good, with one UID STORE and one UID EXPUNGE.
pub async fn delete_many(
    s: &mut Imap,
    uids: &[u32],
    has_uidplus: bool,
    t: u64,
) -> Result<(), Trouble> {
    if uids.is_empty() {
        return Ok(());
    }
    store_many(s, uids, "\\Seen \\Deleted", t).await?;
    if has_uidplus {
        uid_expunge(s, &uid_set(uids), t).await?;
    }
    Ok(())
}

/// The IMAP side's error: what went wrong with one command, or with the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Trouble {
    /// The server answered NO or BAD: its own words. The connection is fine; the command
    /// (a folder it will not create, an APPEND it refuses) is the problem.
    #[error("{0}")]
    Refused(String),
    /// No answer, the connection broke, or signing in failed: the session is over.
    #[error("{0}")]
    Broken(String),
}

impl From<Trouble> for String {
    fn from(t: Trouble) -> String {
        t.to_string()
    }
}

/// A NO or BAD. Throttling and "try again later" answers (Exchange's "Server
/// Unavailable", RFC 5530's UNAVAILABLE, INUSE, LIMIT) say nothing about the message:
/// the session ends and is retried with backoff instead.
fn refusal(what: &str, words: &str) -> Trouble {
    let lower = words.to_ascii_lowercase();
    let transient = [
        "throttl",
        "unavailable",
        "try again",
        "[inuse]",
        "[limit]",
        "too many",
        "temporar",
    ]
    .iter()
    .any(|k| lower.contains(k));
    let said = format!("{what}: the server said: {words}");
    if transient {
        Trouble::Broken(said)
    } else {
        Trouble::Refused(said)
    }
}

/// Like [`within`], telling a refusal (NO, BAD) from a broken connection.
pub async fn checked<T>(
    secs: u64,
    what: &str,
    f: impl std::future::Future<Output = async_imap::error::Result<T>>,
) -> Result<T, Trouble> {
    use async_imap::error::Error;
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Error::No(w) | Error::Bad(w))) => Err(refusal(what, server_words(&w))),
        Ok(Err(e)) => Err(Trouble::Broken(format!("{what}: {e}"))),
        Err(_) => Err(Trouble::Broken(format!("{what}: no answer in {secs} s"))),
    }
}

/// Creates a folder unless it exists. A refusal keeps the server's words; "already
/// exists" is no refusal.
pub async fn ensure_folder(s: &mut Imap, folder: &str, t: u64) -> Result<(), Trouble> {
    match checked(t, &format!("CREATE {folder}"), s.create(folder)).await {
        Ok(()) => Ok(()),
        Err(Trouble::Refused(w)) => {
            let lower = w.to_ascii_lowercase();
            if lower.contains("alreadyexists")
                || lower.contains("already exists")
                || exists(s, folder, t).await?
            {
                Ok(())
            } else {
                Err(Trouble::Refused(w))
            }
        }
        Err(broken) => Err(broken),
    }
}

/// Whether LIST shows the folder.
pub async fn exists(s: &mut Imap, folder: &str, t: u64) -> Result<bool, Trouble> {
    let names = list(s, folder, t).await?;
    Ok(names.iter().any(|n| n.name() == folder))
}

/// `LIST "" "pattern"`: the names that parse (a line async-imap cannot read is skipped).
/// async-imap writes the pattern as given, so it is quoted here: unquoted, `""` went out
/// as nothing (Dovecot: BAD) and "Sent Items" as two words.
pub async fn list(
    s: &mut Imap,
    pattern: &str,
    t: u64,
) -> Result<Vec<async_imap::types::Name>, Trouble> {
    checked(t, &format!("LIST \"\" {pattern:?}"), async {
        let pattern = quoted(pattern);
        let names: Vec<_> = s.list(Some(""), Some(&pattern)).await?.collect().await;
        Ok(names.into_iter().filter_map(Result::ok).collect())
    })
    .await
}

/// APPENDs a message with these flags (`\\Seen` for a copy in Sent, `\\Draft` for a
/// draft). Written out here so that a refusal carries the server's words (async-imap's
/// own says only "could not append mail to mailbox").
pub async fn append(
    s: &mut Imap,
    folder: &str,
    raw: &[u8],
    flags: &str,
    t: u64,
) -> Result<(), Trouble> {
    let what = format!("APPEND to {folder}");
    let text = std::str::from_utf8(raw)
        .map_err(|_| Trouble::Refused(format!("{what}: the message is not 7/8-bit text")))?;
    let command = format!("APPEND {} ({flags}) {{{}}}", quoted(folder), raw.len());
    // A synchronising literal: the text goes once the server asks for it.
    appending(s, &command, Some(text), &what, t).await
}

/// Several messages APPENDed with the same flags: one command (MULTIAPPEND, LITERAL+)
/// when the server offers it, else one after another. MULTIAPPEND is all or nothing: a
/// refusal means none was saved.
pub async fn append_many(
    s: &mut Imap,
    folder: &str,
    messages: &[&[u8]],
    flags: &str,
    caps: Caps,
    t: u64,
) -> Result<(), Trouble> {
    if !caps.multiappend || messages.len() < 2 {
        for raw in messages {
            append(s, folder, raw, flags, t).await?;
        }
        return Ok(());
    }
    let what = format!("APPEND of {} messages to {folder}", messages.len());
    let mut command = format!("APPEND {}", quoted(folder));
    for raw in messages {
        let text = std::str::from_utf8(raw)
            .map_err(|_| Trouble::Refused(format!("{what}: a message is not 7/8-bit text")))?;
        command.push_str(&format!(" ({flags}) {{{}+}}\r\n{text}", raw.len()));
    }
    let secs = t.max(messages.len() as u64 / 10);
    appending(s, &command, None, &what, secs).await
}

/// A folder name as an IMAP quoted string.
fn quoted(folder: &str) -> String {
    format!("\"{}\"", folder.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs an APPEND command and reads until it is done, sending `literal` when the server
/// asks for it (a synchronising literal); the server's words when it refuses.
async fn appending(
    s: &mut Imap,
    command: &str,
    mut literal: Option<&str>,
    what: &str,
    secs: u64,
) -> Result<(), Trouble> {
    use async_imap::imap_proto::{Response, Status};
    let broken = |e: &dyn std::fmt::Display| Trouble::Broken(format!("{what}: {e}"));
    let exchange = async {
        let tag = s.run_command(command).await.map_err(|e| broken(&e))?;
        loop {
            let response = s
                .read_response()
                .await
                .map_err(|e| broken(&e))?
                .ok_or_else(|| broken(&"the connection closed"))?;
            match response.parsed() {
                Response::Continue { .. } => {
                    if let Some(text) = literal.take() {
                        s.run_command_untagged(text).await.map_err(|e| broken(&e))?;
                    }
                }
                Response::Done {
                    tag: done,
                    status,
                    outcome,
                } if *done == tag => {
                    let words = outcome.information.as_deref().unwrap_or("(no text)");
                    return match status {
                        Status::Ok => Ok(()),
                        _ => Err(refusal(what, words)),
                    };
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(secs), exchange).await {
        Ok(r) => r,
        Err(_) => Err(Trouble::Broken(format!("{what}: no answer in {secs} s"))),
    }
}

/// Is a message with this Message-ID in `folder`? (Settles a `sending` after a crash.)
pub async fn has_message_id(
    s: &mut Imap,
    folder: &str,
    message_id: &str,
    t: u64,
) -> Result<bool, Trouble> {
    examine(s, folder, t).await?;
    holds_message_id(s, message_id, t).await
}

/// Opens a folder read-only, for searches that must not change its flags.
pub async fn examine(s: &mut Imap, folder: &str, t: u64) -> Result<(), Trouble> {
    within(t, &format!("EXAMINE {folder}"), s.examine(folder)).await?;
    Ok(())
}

/// The UIDs in the selected folder that an IMAP SEARCH key matches, in order.
pub async fn search(s: &mut Imap, query: &str, t: u64) -> Result<Vec<u32>, Trouble> {
    let found = within(t, "UID SEARCH", s.uid_search(query)).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    Ok(uids)
}

/// A Message-ID as a quoted SEARCH string (quotes and backslashes dropped).
pub fn quoted_id(message_id: &str) -> String {
    format!("\"{}\"", message_id.replace(['"', '\\'], ""))
}

/// Whether the selected folder holds a message with this Message-ID.
pub async fn holds_message_id(s: &mut Imap, message_id: &str, t: u64) -> Result<bool, Trouble> {
    let query = format!("HEADER Message-ID {}", quoted_id(message_id));
    let found = within(t, "UID SEARCH", s.uid_search(query)).await?;
    Ok(!found.is_empty())
}

/// Whether the folder holds a message with a UID above `uid`: mail that came in after
/// a listing that went up to it. (`n:*` always names the last message, so the answer is
/// filtered.)
pub async fn holds_uid_above(s: &mut Imap, uid: u32, t: u64) -> Result<bool, Trouble> {
    let query = format!("UID {}:*", uid.saturating_add(1));
    let found = within(t, "UID SEARCH", s.uid_search(query)).await?;
    Ok(found.iter().any(|&u| u > uid))
}

#[cfg(test)]
mod trouble_tests {
    use super::*;

    #[test]
    fn throttling_is_retried_and_a_refusal_is_the_messages() {
        assert!(matches!(
            refusal("APPEND", "Server Unavailable. 15"),
            Trouble::Broken(_)
        ));
        assert!(matches!(
            refusal("APPEND", "[THROTTLED] Request is throttled"),
            Trouble::Broken(_)
        ));
        assert!(matches!(
            refusal("APPEND", "[NOPERM] Permission denied"),
            Trouble::Refused(_)
        ));
    }
}
