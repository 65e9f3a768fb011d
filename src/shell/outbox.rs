//! Writing and sending the plan's messages (lettre). Each outgoing message gets a
//! Message-ID derived from the original's and its place in the plan, so after a crash
//! the Sent folder tells whether it already went out.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox as LMailbox, MultiPart, SinglePart};
use std::pin::Pin;
use std::task::{Context, Poll};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands;
use lettre::transport::smtp::extension::{ClientId, MailBodyParameter, MailParameter};
use lettre::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::core::config::{Config, SmtpConfig, TlsMode};
use crate::core::message::Mail;
use crate::core::plan::Outgoing;
use crate::core::threading::answer_mark;
use crate::shell::oauth::{self, SignIn, Tokens};

#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".into())
    }
}

fn angle(id: &str) -> String {
    if id.starts_with('<') {
        id.to_string()
    } else {
        format!("<{id}>")
    }
}

/// The message as it will be sent and filed in Sent.
pub fn compose(
    config: &Config,
    mail: &Mail,
    out: &Outgoing,
    message_id: &str,
) -> Result<Message, String> {
    build(config, mail, out, message_id, None)
}

/// The same message as a draft for a person: the note on top, and no Auto-Submitted,
/// since a person sends it.
pub fn compose_draft(
    config: &Config,
    mail: &Mail,
    out: &Outgoing,
    message_id: &str,
    note: &str,
) -> Result<Message, String> {
    build(config, mail, out, message_id, Some(note))
}

/// A panic while writing one message (a library bug, a hostile attachment name) is that
/// message's problem only: an error, never the service stopping.
fn build(
    config: &Config,
    mail: &Mail,
    out: &Outgoing,
    message_id: &str,
    draft_note: Option<&str>,
) -> Result<Message, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write(config, mail, out, message_id, draft_note)
    }))
    .unwrap_or_else(|_| Err("internal error while writing it".into()))
}

fn write(
    config: &Config,
    mail: &Mail,
    out: &Outgoing,
    message_id: &str,
    draft_note: Option<&str>,
) -> Result<Message, String> {
    let from: LMailbox = format!("{} <{}>", config.desk.name, config.desk.address)
        .parse()
        .map_err(|e| format!("desk address: {e}"))?;
    let mut b = Message::builder()
        .from(from)
        .subject(out.subject.clone())
        .message_id(Some(message_id.to_string()));
    if draft_note.is_none() {
        b = b.header(AutoSubmitted);
    }
    for to in &out.to {
        b = b.to(to.parse().map_err(|e| format!("address {to}: {e}"))?);
    }
    for cc in &out.cc {
        b = b.cc(cc.parse().map_err(|e| format!("address {cc}: {e}"))?);
    }
    if let Some(irt) = &out.in_reply_to {
        b = b.in_reply_to(angle(irt));
    }
    if !out.references.is_empty() {
        b = b.references(
            out.references
                .iter()
                .map(|r| angle(r))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    // The mark lets a reply that lost its References (or an auto-responder quoting us)
    // be recognised as one in our thread, as Email-to-Case's thread id does.
    let mut body = format!("{}\n\n{}\n", out.body.trim_end(), answer_mark(message_id));
    if let Some(note) = draft_note {
        body = format!("{}\n\n{body}", note.trim_end());
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(body);
    let message = if out.attachment_index.is_empty() {
        b.singlepart(text)
    } else {
        let mut parts = MultiPart::mixed().singlepart(text);
        for &i in &out.attachment_index {
            let a = mail
                .attachments
                .get(i)
                .ok_or_else(|| format!("attachment {i} is gone"))?;
            let ct = ContentType::parse(&a.content_type).unwrap_or_else(|_| {
                ContentType::parse("application/octet-stream").expect("octet-stream")
            });
            parts = parts.singlepart(Attachment::new(a.name.clone()).body(a.bytes.clone(), ct));
        }
        b.multipart(parts)
    };
    message.map_err(|e| format!("cannot build the message: {e}"))
}

/// The submission connections: up to `smtp.connections` at once, opened when needed,
/// kept between messages, dropped after a failure. Our own sockets, so that TCP_NODELAY
/// is set: lettre writes the final "." on its own, and with Nagle's algorithm that small
/// write waits for the server's delayed ACK, 40 ms per message on Linux.
pub struct Submission {
    cfg: SmtpConfig,
    sign_in: Option<SignIn>,
    hello: ClientId,
    /// Connections not in use, with when each was last used.
    idle: std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>,
    /// One permit per connection that may be open at once.
    slots: tokio::sync::Semaphore,
}

/// A kept connection idle longer than this is checked (NOOP) before it carries a
/// message: the server may have closed it meanwhile.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

/// Why a message did not go out.
#[derive(Debug)]
pub enum Refusal {
    /// The server said no for good (5xx: unknown recipient, policy): a human decides.
    Permanent(String),
    /// A 4xx, a timeout or a dropped connection: try again later. The server may have
    /// queued it all the same; the journal and the own copy settle that on the retry.
    Transient(String),
}

/// What went wrong on the way to the server: the SMTP server's own answer only when
/// it gave one (and only a 5xx one is permanent).
#[derive(Debug)]
enum Failure {
    Connect(String),
    Tls(String),
    /// Signing in failed: never the message's fault, so never permanent for it.
    SignIn(String),
    /// The server refused the credentials (535).
    Refused(String),
    Smtp(lettre::transport::smtp::Error),
    Journal(String),
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Failure::Smtp(e)
    }
}

impl Failure {
    fn is_permanent(&self) -> bool {
        matches!(self, Failure::Smtp(e) if e.is_permanent())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Tls(e) => write!(f, "TLS: {e}"),
            Failure::SignIn(e) | Failure::Refused(e) => write!(f, "sign-in: {e}"),
            Failure::Smtp(e) => write!(f, "{e}"),
            Failure::Journal(e) => write!(f, "not sent, the journal failed: {e}"),
        }
    }
}

/// One raw command line (lettre's own commands cover no OAUTHBEARER).
struct Line(String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// A TLS stream in the shape lettre takes for an existing connection.
#[derive(Debug)]
struct Implicit(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for Implicit {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Implicit {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Implicit {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Submission {
    /// `sign_in` is None for a relay that needs no AUTH (loopback).
    pub fn new(cfg: &SmtpConfig, sign_in: Option<SignIn>) -> Result<Submission, String> {
        Ok(Submission {
            cfg: cfg.clone(),
            sign_in,
            hello: ClientId::default(),
            idle: std::sync::Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(cfg.connections.max(1) as usize),
        })
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let cfg = &self.cfg;
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp).set_keepalive(true);
        let mut conn = match cfg.tls {
            TlsMode::Implicit => {
                let tls = crate::shell::mailbox::tls_connector(cfg.ca_file.as_deref())
                    .map_err(Failure::Tls)?;
                let name = ServerName::try_from(cfg.host.clone())
                    .map_err(|e| Failure::Tls(e.to_string()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Failure::Tls(e.to_string()))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Implicit(stream)), &self.hello)
                    .await?
            }
            _ => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?,
        };
        if cfg.tls == TlsMode::Starttls {
            conn.starttls(self.tls_parameters()?, &self.hello).await?;
        }
        let user = cfg.username.clone().unwrap_or_default();
        match &self.sign_in {
            None => {}
            Some(SignIn::Password(password)) => {
                conn.auth(
                    &[Mechanism::Plain, Mechanism::Login],
                    &Credentials::new(user, password.clone()),
                )
                .await
                .map_err(|e| Failure::SignIn(e.to_string()))?;
            }
            Some(SignIn::OAuth2(tokens)) => {
                let token = tokens.token().await.map_err(Failure::SignIn)?;
                match self.bearer(&mut conn, &user, tokens, &token).await {
                    // One new token and one more try on the same connection, not a loop.
                    Err(Failure::Refused(why)) => {
                        let token = tokens
                            .renew(&token)
                            .await
                            .map_err(|e| Failure::SignIn(format!("{why}; {e}")))?;
                        self.bearer(&mut conn, &user, tokens, &token).await?;
                    }
                    r => r?,
                }
            }
        }
        Ok(conn)
    }

    /// AUTH with a bearer token (lettre knows XOAUTH2 only, and not the error exchange).
    async fn bearer(
        &self,
        conn: &mut AsyncSmtpConnection,
        user: &str,
        tokens: &Tokens,
        token: &str,
    ) -> Result<(), Failure> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ehlo = conn
            .command(commands::Ehlo::new(self.hello.clone()))
            .await?;
        let offered = |m: &str| {
            ehlo.message().any(|line| {
                let line = line.to_ascii_uppercase();
                let mut words = line.split([' ', '=']);
                words.next() == Some("AUTH") && words.any(|w| w == m)
            })
        };
        let mechanism =
            oauth::choose_mechanism(tokens.mechanism(), offered).map_err(Failure::SignIn)?;
        let first = b64.encode(oauth::initial_response(mechanism, user, token));
        match conn
            .command(Line(format!("AUTH {mechanism} {first}")))
            .await
        {
            Ok(r) if r.has_code(334) => {
                // The server explains the failure in a challenge and says no after our
                // acknowledgement; its explanation is what the log needs.
                let detail = r
                    .first_line()
                    .and_then(|l| b64.decode(l.trim()).ok())
                    .map(|d| String::from_utf8_lossy(&d).into_owned())
                    .unwrap_or_default();
                let ack = b64.encode(oauth::error_acknowledgement(mechanism));
                let _ = conn.command(Line(ack)).await;
                Err(Failure::Refused(format!("{mechanism} refused {detail}")))
            }
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(Failure::Refused(format!("{mechanism}: {e}"))),
            Err(e) => Err(e.into()),
        }
    }

    fn tls_parameters(&self) -> Result<TlsParameters, Failure> {
        let mut params = TlsParameters::builder(self.cfg.host.clone());
        if let Some(ca) = &self.cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| Failure::Tls(format!("cannot read CA file {}: {e}", ca.display())))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| Failure::Tls(format!("CA file {}: {e}", ca.display())))?;
            params = params.add_root_certificate(cert);
        }
        Ok(params.build_rustls()?)
    }

    /// Opens the connection now (start-up health check); the error says what failed.
    pub async fn check(&self) -> Result<(), String> {
        let t = Duration::from_secs(self.cfg.timeout_seconds);
        match tokio::time::timeout(t, self.connect()).await {
            Ok(Ok(c)) => {
                self.put_back(c);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} s", t.as_secs())),
        }
    }

    /// Sends the message to its To and Cc, and to `self_copy` (the desk) when given.
    /// `commit` runs after the server said 354 to DATA, just before the message and its
    /// final dot go out: until then a crash cannot have delivered anything (RFC 5321
    /// discards an unfinished transaction), so only a crash after it needs the receipt.
    pub async fn send(
        &self,
        message: &Message,
        self_copy: Option<&str>,
        commit: impl FnOnce() -> Result<(), String>,
    ) -> Result<String, Refusal> {
        let mut to = message.envelope().to().to_vec();
        if let Some(desk) = self_copy {
            let desk: lettre::Address = desk
                .parse()
                .map_err(|e| Refusal::Permanent(format!("desk address {desk}: {e}")))?;
            if !to.contains(&desk) {
                to.push(desk);
            }
        }
        let envelope = lettre::address::Envelope::new(message.envelope().from().cloned(), to)
            .map_err(|e| Refusal::Permanent(format!("envelope: {e}")))?;
        let bytes = message.formatted();
        // Each step bounded; the whole exchange bounded too.
        let t = Duration::from_secs(self.cfg.timeout_seconds);
        let _permit = self.slots.acquire().await.expect("never closed");
        let mut slot = None;
        let attempt = async {
            // Inside the time limit: the NOOP that checks a kept connection can hang too.
            slot = self.take_idle().await;
            if slot.is_none() {
                slot = Some(self.connect().await?);
            }
            let conn = slot.as_mut().expect("connected");
            // lettre's `send`, split at the point of no return.
            let mut options = Vec::new();
            let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
            if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
                options.push(MailParameter::SmtpUtfEight);
            }
            if !bytes.is_ascii() {
                options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
            }
            conn.command(commands::Mail::new(envelope.from().cloned(), options))
                .await?;
            for rcpt in envelope.to() {
                conn.command(commands::Rcpt::new(rcpt.clone(), Vec::new()))
                    .await?;
            }
            conn.command(commands::Data).await?;
            commit().map_err(Failure::Journal)?;
            let answer = conn.message(&bytes).await?;
            // The server's own words ("250 2.0.0 Ok: queued as 4Xk…"), for the audit log.
            let words: Vec<&str> = answer.message().collect();
            Ok::<_, Failure>(format!("{} {}", answer.code(), words.join(" ")))
        };
        let result = tokio::time::timeout(t * 3, attempt).await;
        match result {
            Ok(Ok(answer)) => {
                if let Some(c) = slot {
                    self.put_back(c);
                }
                Ok(answer)
            }
            // After any failure the connection is dropped (a refused transaction would
            // need an RSET; a new connection is simpler and rare).
            Ok(Err(e)) => {
                if e.is_permanent() {
                    Err(Refusal::Permanent(e.to_string()))
                } else {
                    Err(Refusal::Transient(e.to_string()))
                }
            }
            Err(_) => Err(Refusal::Transient(format!(
                "no answer in {} s",
                (t * 3).as_secs()
            ))),
        }
    }

    /// A kept connection, checked (NOOP) when it has been idle a while; None when there
    /// is none or it no longer answers.
    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let (mut c, since) = self.idle.lock().expect("not poisoned").pop()?;
        if c.has_broken() {
            return None;
        }
        if since.elapsed() > CHECK_AFTER_IDLE && !c.test_connected().await {
            return None;
        }
        Some(c)
    }

    fn put_back(&self, c: AsyncSmtpConnection) {
        if !c.has_broken() {
            let mut idle = self.idle.lock().expect("not poisoned");
            idle.push((c, std::time::Instant::now()));
        }
    }

    pub async fn quit(&self) {
        let kept = std::mem::take(&mut *self.idle.lock().expect("not poisoned"));
        for (mut c, _) in kept {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.quit()).await;
        }
    }
}
