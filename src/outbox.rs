//! Writing and sending the plan's messages (lettre). Each outgoing message gets a
//! Message-ID derived from the original's and its place in the plan, so after a crash
//! the Sent folder tells whether it already went out.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox as LMailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sha2::{Digest, Sha256};

use crate::config::{Config, SmtpConfig, TlsMode};
use crate::message::Mail;
use crate::plan::{hex, Outgoing};

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

/// `<hash@domain>`, the same for the same original and the same place in its plan.
pub fn message_id_for(original: &str, index: usize, out: &Outgoing, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(original.as_bytes());
    h.update(format!("|{index}|{:?}|{}", out.kind, out.to.join(",")).as_bytes());
    format!("<{}.triage@{domain}>", &hex(&h.finalize())[..32])
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
    let from: LMailbox = format!("{} <{}>", config.desk.name, config.desk.address)
        .parse()
        .map_err(|e| format!("desk address: {e}"))?;
    let mut b = Message::builder()
        .from(from)
        .subject(out.subject.clone())
        .message_id(Some(message_id.to_string()))
        .header(AutoSubmitted);
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
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(out.body.clone());
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

pub fn transport(smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let mut tls_params = TlsParameters::builder(smtp.host.clone());
    if let Some(ca) = &smtp.ca_file {
        let pem =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let cert =
            Certificate::from_pem(&pem).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        tls_params = tls_params.add_root_certificate(cert);
    }
    let tls = match smtp.tls {
        TlsMode::Plain => Tls::None,
        TlsMode::Starttls => Tls::Required(tls_params.build_rustls().map_err(|e| e.to_string())?),
        TlsMode::Implicit => Tls::Wrapper(tls_params.build_rustls().map_err(|e| e.to_string())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(smtp.timeout_seconds)));
    if let (Some(user), Some(secret)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), secret.read()?));
    }
    Ok(builder.build())
}

/// Why a message did not go out.
#[derive(Debug)]
pub enum Refusal {
    /// The server said no for good (5xx: unknown recipient, policy): a human decides.
    Permanent(String),
    /// A 4xx, a timeout or a dropped connection: try again later. The server may have
    /// queued it all the same; the Sent folder settles that on the retry.
    Transient(String),
}

/// Sends the message to its To and Cc, and to `self_copy` (the desk) when given.
pub async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    message: &Message,
    self_copy: Option<&str>,
    timeout_seconds: u64,
) -> Result<(), Refusal> {
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
    // lettre times out each command; this bounds the whole exchange.
    let whole = Duration::from_secs(timeout_seconds.saturating_mul(3));
    match tokio::time::timeout(whole, transport.send_raw(&envelope, &message.formatted())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is_permanent() => Err(Refusal::Permanent(e.to_string())),
        Ok(Err(e)) => Err(Refusal::Transient(e.to_string())),
        Err(_) => Err(Refusal::Transient(format!(
            "no answer in {} s",
            whole.as_secs()
        ))),
    }
}
