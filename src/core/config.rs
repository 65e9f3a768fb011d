//! The service's one YAML config file, validated once at load.
//!
//! Paths in the config are relative to the config file's folder, so `deploy/triage.yaml`
//! works from the repository root and from `/etc/triage` alike. Secrets are never read from
//! here: the config only names the environment variable or file that holds them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::problems::{Problem, Problems};

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub desk: Desk,
    #[serde(default)]
    pub trust: Trust,
    #[serde(default)]
    pub limits: Limits,
    /// Folder of `*.yaml` rule files, read in file-name order.
    pub rules: PathBuf,
    /// Folder of response templates (`*.txt`).
    pub templates: PathBuf,
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub folders: Folders,
    #[serde(default)]
    pub imap: Option<ImapConfig>,
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub drafts: Drafts,
    /// The review pages for the people who read the audit log; off when absent.
    #[serde(default)]
    pub review: Option<ReviewConfig>,
    /// Where the handbook's CRM steps go; without it they are only in the audit log.
    #[serde(default)]
    pub crm: Option<CrmConfig>,
    /// Where the file was read from; paths above are resolved against its folder.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Desk {
    /// Shown in templates ("Partner Help Desk").
    pub name: String,
    /// The shared mailbox the service answers as (partnersupport@).
    pub address: String,
    /// Partner Order Operations (partnerorderops@): its presence among the recipients
    /// decides case A versus case B of the order procedure.
    pub order_ops: String,
    /// Where billing questions are pointed (out of the desk's scope).
    #[serde(default)]
    pub billing_ops: Option<String>,
    /// Every address of the desk itself: mail from these is never answered.
    #[serde(default)]
    pub own_addresses: Vec<String>,
    /// Domain for the Message-IDs the service generates; a reply in a thread that carries
    /// one of them is a reply to us and is never answered automatically (RFC 3834).
    pub message_id_domain: String,
    /// Signature appended by templates as `{{ desk.signature }}`.
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// authserv-id of the receiving server whose Authentication-Results count. Headers
    /// from anyone else can be forged by the sender and are ignored.
    #[serde(default)]
    pub authserv_id: Option<String>,
    /// Without a verifiable DMARC pass from that server, nothing is sent automatically.
    #[serde(default = "yes")]
    pub require_authentication: bool,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            authserv_id: None,
            require_authentication: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Larger messages are left for a human without being parsed.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Automatic answers to one sender in one category, per period (Sieve vacation's
    /// `:days` idea): two auto-responders answering each other stop after the first.
    #[serde(default)]
    pub per_sender: PerSender,
    /// More automatic messages than this in the window means something is wrong (a loop
    /// the per-message guards missed, a flood): sending stops until an operator resets it.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// An address our answer bounced from gets no automatic answer for this many days.
    #[serde(default = "default_bounce_block_days")]
    pub bounce_block_days: u32,
    /// Reading one attached document (PDF, DOCX, …) may take this much CPU time …
    #[serde(default = "default_document_seconds")]
    pub document_seconds: u64,
    /// … and this much memory; beyond either it is cut off and the message left for a human.
    #[serde(default = "default_document_memory_mb")]
    pub document_memory_mb: u64,
}

fn default_document_seconds() -> u64 {
    10
}
fn default_document_memory_mb() -> u64 {
    512
}

impl Limits {
    pub fn documents(&self) -> crate::core::documents::Limits {
        crate::core::documents::Limits {
            seconds: self.document_seconds.max(1),
            memory_bytes: self.document_memory_mb.max(64) << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerSender {
    pub answers: u32,
    pub hours: u32,
}

impl Default for PerSender {
    fn default() -> Self {
        PerSender {
            answers: 1,
            hours: 24,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Outgoing messages (replies and forwards) allowed in the window.
    pub answers: u32,
    pub minutes: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            answers: 300,
            minutes: 60,
        }
    }
}

impl CircuitBreaker {
    /// How the setting is written in the journal when the breaker opens: a different
    /// setting in the config closes it (the operator changed the limit on purpose).
    pub fn setting(&self) -> String {
        format!("{} in {} min", self.answers, self.minutes)
    }
}

fn default_bounce_block_days() -> u32 {
    7
}

fn default_max_message_bytes() -> usize {
    25 * 1024 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message_bytes(),
            per_sender: PerSender::default(),
            circuit_breaker: CircuitBreaker::default(),
            bounce_block_days: default_bounce_block_days(),
            document_seconds: default_document_seconds(),
            document_memory_mb: default_document_memory_mb(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Folder holding partners.csv, opportunities.csv and deal_registrations.csv.
    pub path: PathBuf,
    /// Per file, our column name -> the export's own header, for exports whose headers
    /// differ from the defaults.
    #[serde(default)]
    pub columns: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Folders {
    /// Where messages left for a human go; unset means they stay in the inbox, flagged.
    #[serde(default)]
    pub human: Option<String>,
    /// Where the original is filed once its plan is done, per category; a rule's own
    /// `folder` wins. Unset means it stays in the inbox, marked seen.
    #[serde(default)]
    pub by_category: BTreeMap<String, String>,
    /// The mailbox's Sent folder, where copies of our replies go. Unset: the folder the
    /// server marks `\Sent` (SPECIAL-USE), else `Sent` under the personal namespace.
    #[serde(default)]
    pub sent: Option<String>,
    /// Whether to APPEND a copy of each answer to Sent. Unset: yes, except on Gmail,
    /// which files what is sent through its SMTP by itself.
    #[serde(default)]
    pub append_sent: Option<bool>,
    /// The folder watched for new mail.
    #[serde(default = "default_inbox")]
    pub inbox: String,
    /// Where prepared answers wait for a person. Unset: the folder the server marks
    /// `\Drafts` (SPECIAL-USE), else `Drafts` under the personal namespace.
    #[serde(default)]
    pub drafts: Option<String>,
}

/// Answers prepared for a person to approve (`respond: draft` in a rule, or a partner's
/// message held back by a brake or an ambiguous lookup).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drafts {
    /// Prepare a draft for a verified partner's message that a brake (answers per
    /// sender, the circuit breaker), our own thread or an ambiguous lookup holds back.
    #[serde(default)]
    pub when_held: bool,
    /// A draft gone from Drafts without being sent is recorded `discarded` this long
    /// after it was written (a person may still be editing it meanwhile).
    #[serde(default = "default_discard_after")]
    pub discard_after_minutes: u64,
}

impl Default for Drafts {
    fn default() -> Self {
        Drafts {
            when_held: false,
            discard_after_minutes: default_discard_after(),
        }
    }
}

fn default_discard_after() -> u64 {
    3 * 24 * 60
}

fn default_inbox() -> String {
    "INBOX".into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (993 / 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS (143 / 587).
    Starttls,
    /// No TLS at all: only for loopback test stacks, and only when said explicitly.
    Plain,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    /// Name of an environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// PEM file of the CA to trust instead of the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub username: String,
    /// Password sign-in (servers that still allow it). Either this or `oauth2`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// OAuth2 sign-in (Microsoft 365, Google Workspace). Either this or `password`.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// Use IDLE when the server offers it (push); otherwise, or when false, poll.
    #[serde(default = "yes")]
    pub idle: bool,
    /// IDLE is ended and re-issued this often (at most 300 s): a silent dead
    /// connection is noticed within this time, well before servers' 30-minute limit.
    #[serde(default = "default_idle_refresh")]
    pub idle_refresh_seconds: u64,
    /// Seconds between checks when the server has no IDLE.
    #[serde(default = "default_poll")]
    pub poll_seconds: u64,
    /// Seconds for any one network operation.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// IMAP sessions for a backlog: with 2, what is decided is filed on a second
    /// session while the first fetches and decides the next messages; 1 keeps
    /// everything on one (a server that allows a single session per mailbox).
    #[serde(default = "default_imap_connections")]
    pub connections: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Unset: no AUTH (loopback relay).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// OAuth2 sign-in instead of a password. The same settings as `imap.oauth2` (a YAML
    /// alias) share one token, one cache and one refresh-token file.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Every message also goes (envelope only, like a Bcc) to the desk's own address.
    /// The copy that comes back proves the server accepted the message, which settles a
    /// crash between the server's acceptance and our record of it; the service deletes
    /// the copy when it arrives. Without it such a crash means sending again.
    #[serde(default = "yes")]
    pub self_copy: bool,
    /// How long to wait for that copy after a crash before sending again.
    #[serde(default = "default_self_copy_wait")]
    pub self_copy_wait_seconds: u64,
    /// SMTP connections used at once for a backlog of answers (each answer still goes
    /// out exactly once, on one of them). Providers limit concurrent sessions (Microsoft
    /// 365 and Gmail allow a few per mailbox): keep it small.
    #[serde(default = "default_smtp_connections")]
    pub connections: u32,
}

fn default_imap_connections() -> u32 {
    2
}

fn default_smtp_connections() -> u32 {
    3
}

fn default_self_copy_wait() -> u64 {
    30
}

fn default_idle_refresh() -> u64 {
    240
}
fn default_poll() -> u64 {
    30
}
fn default_timeout() -> u64 {
    30
}

/// Where access tokens come from and how they are presented (SASL XOAUTH2 or
/// OAUTHBEARER, RFC 7628).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// Fills in the token endpoint and scopes: `microsoft` (identity platform v2.0) or
    /// `google`; `other` needs `token_url` (and `scopes` if the endpoint wants them).
    #[serde(default)]
    pub provider: Provider,
    /// Microsoft only: the directory (tenant) ID or domain; `organizations` by default.
    /// App-only access (`client_credentials`) needs the real tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub grant: Grant,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Confidential clients only (and always for `client_credentials`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// For `refresh_token`: where the refresh token lives. A `file` is rewritten
    /// (atomically, mode 0600) whenever the endpoint rotates the token; from `env` a
    /// rotated token cannot be kept, which is logged as an error.
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// Overrides the provider's token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Overrides the provider's device-authorization endpoint (`triage auth --device`).
    #[serde(default)]
    pub device_url: Option<String>,
    /// Overrides the provider's authorization endpoint (`triage auth`, code flow).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Overrides the provider's scopes.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// For `command`: the program and its arguments; it prints an access token, or a
    /// JSON token response with `access_token` and `expires_in`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `auto` takes what the server advertises (OAUTHBEARER first, the standard).
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// A token is replaced this long before it expires.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead_seconds: u64,
    /// PEM file of the CA to trust for the token endpoint instead of the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_refresh_ahead() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Microsoft,
    Google,
    Other,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Delegated access for the mailbox user: a refresh token from `triage auth`.
    #[default]
    RefreshToken,
    /// App-only access (Microsoft): client ID and secret, no user involved.
    ClientCredentials,
    /// An operator's own token broker prints the token.
    Command,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SaslMechanism {
    #[default]
    Auto,
    Xoauth2,
    Oauthbearer,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// SQLite journal (state of every message, audit log).
    #[serde(default = "default_state")]
    pub state: PathBuf,
    /// Where documents kept for the CRM are written (under the opportunity or deal id).
    #[serde(default = "default_documents")]
    pub documents: PathBuf,
    /// false: an IMAP or SMTP server unreachable at start is an error (exit 1), so a
    /// broken deployment is noticed at once. true: keep retrying with backoff.
    #[serde(default)]
    pub retry_at_start: bool,
    /// Audit records older than this are deleted (at start and once a day).
    #[serde(default = "default_audit_retention")]
    pub audit_retention_days: u32,
    /// Each message's bytes are kept this long for `triage replay` (0: not kept).
    #[serde(default = "default_keep_messages")]
    pub keep_messages_days: u32,
    /// Address of the HTTP listener for /metrics, /healthz and /readyz, e.g.
    /// `127.0.0.1:9464`; unset, there is none.
    #[serde(default)]
    pub http: Option<String>,
    /// Readiness fails, loudly, when the inbox has not been read for this long.
    #[serde(default = "default_stale_after")]
    pub stale_after_seconds: u64,
}

fn default_keep_messages() -> u32 {
    30
}

fn default_stale_after() -> u64 {
    900
}

fn default_audit_retention() -> u32 {
    400
}

fn default_state() -> PathBuf {
    "state/triage.sqlite".into()
}
fn default_documents() -> PathBuf {
    "state/documents".into()
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            state: default_state(),
            documents: default_documents(),
            retry_at_start: false,
            audit_retention_days: default_audit_retention(),
            keep_messages_days: default_keep_messages(),
            http: None,
            stale_after_seconds: default_stale_after(),
        }
    }
}

impl Secret {
    /// Reads the secret. The error names where it looked, never the value.
    pub fn read(&self) -> Result<String, String> {
        if let Some(var) = &self.env {
            return std::env::var(var)
                .map_err(|_| format!("environment variable {var} is not set"));
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display()));
        }
        Err("neither `env` nor `file` is set".into())
    }

    /// The file a new value (a rotated refresh token) can be written to: only a `file`
    /// that `read` reads, since `env` comes first.
    pub fn writable_file(&self) -> Option<&Path> {
        match self.env {
            None => self.file.as_deref(),
            Some(_) => None,
        }
    }
}

/// The CRM steps (attach the PO, the registration's status, a note for the Channel
/// Manager with the PoE).
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmConfig {
    /// For desks without API access: each day's steps written as import files for
    /// Salesforce's Data Loader and Bulk API 2.0, which the CRM team imports.
    #[serde(default)]
    pub export: Option<CrmExport>,
    /// Each step done in Salesforce over its REST API, signed in as a connected app.
    #[serde(default)]
    pub salesforce: Option<SalesforceConfig>,
}

/// A Salesforce org reached as a connected app with the client-credentials flow.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// The org's My Domain, e.g. `https://acme.my.salesforce.com`; the token comes from
    /// its `/services/oauth2/token`.
    pub instance_url: String,
    /// The connected app's consumer key.
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_registration_object")]
    pub registration_object: String,
    #[serde(default = "default_registration_key")]
    pub registration_key_field: String,
    #[serde(default = "default_registration_status")]
    pub registration_status_field: String,
    /// A CA file to trust instead of the system's (a test org behind a proxy).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_crm_timeout")]
    pub timeout_seconds: u64,
}

fn default_api_version() -> String {
    "62.0".into()
}
fn default_crm_timeout() -> u64 {
    30
}

fn check_crm(crm: &CrmConfig, at: &Located, problems: &mut Problems) {
    if crm.export.is_some() == crm.salesforce.is_some() {
        problems.push(at.problem(
            "crm",
            "crm: set exactly one of `export` (import files) and `salesforce` (the REST API)",
        ));
    }
    if let Some(sf) = &crm.salesforce {
        if !sf.instance_url.starts_with("https://")
            && !sf.instance_url.starts_with("http://127.0.0.1")
        {
            problems.push(at.problem(
                "crm.salesforce.instance_url",
                format!(
                    "crm.salesforce.instance_url: expected https://…, got {:?}",
                    sf.instance_url
                ),
            ));
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrmExport {
    /// Folder of the import files, one subfolder per day (UTC).
    pub folder: PathBuf,
    /// API name of the deal-registration object, as your org names it.
    #[serde(default = "default_registration_object")]
    pub registration_object: String,
    /// Its External ID field holding the deal id (the upsert key).
    #[serde(default = "default_registration_key")]
    pub registration_key_field: String,
    /// Its status field.
    #[serde(default = "default_registration_status")]
    pub registration_status_field: String,
}

fn default_registration_object() -> String {
    "Deal_Registration__c".into()
}
fn default_registration_key() -> String {
    "Deal_ID__c".into()
}
fn default_registration_status() -> String {
    "Status__c".into()
}

/// The review pages: read-only, served by the service on one more listener.
#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Address and port, e.g. `127.0.0.1:8026`. Anything but a loopback address needs
    /// `auth`.
    #[serde(default = "default_review_listen")]
    pub listen: String,
    #[serde(default)]
    pub auth: ReviewAuth,
    /// Decisions per page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
}

/// Who may look. Without either, only a loopback listener is allowed (a reviewer on the
/// same machine, or through an SSH tunnel).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewAuth {
    /// A trusted reverse proxy (oauth2-proxy, Keycloak Gatekeeper …) that signs people
    /// in and passes the user name in a header; requests from anywhere else are refused.
    #[serde(default)]
    pub proxy: Option<ReviewProxy>,
    /// A file of local accounts, one `name:$argon2id$…` line each (made by
    /// `triage review-account NAME`); the browser asks for name and password.
    #[serde(default)]
    pub accounts: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewProxy {
    /// The header carrying the signed-in user, e.g. `X-Forwarded-User`.
    pub header: String,
    /// The proxy's own addresses: only requests from these may carry the header.
    pub from: Vec<std::net::IpAddr>,
}

fn default_review_listen() -> String {
    "127.0.0.1:8026".into()
}

fn default_page_size() -> u32 {
    50
}

fn check_review(review: &ReviewConfig, at: &Located, problems: &mut Problems) {
    let Ok(addr) = review.listen.parse::<std::net::SocketAddr>() else {
        problems.push(at.problem(
            "review.listen",
            format!(
                "review.listen: expected an address and port such as 127.0.0.1:8026, got {:?}",
                review.listen
            ),
        ));
        return;
    };
    let auth = &review.auth;
    if !addr.ip().is_loopback() && auth.proxy.is_none() && auth.accounts.is_none() {
        problems.push(at.problem(
            "review.listen",
            format!(
                "review.listen: {addr} is reachable from other machines; set review.auth.proxy \
                 (a trusted reverse proxy) or review.auth.accounts (local accounts), or listen on 127.0.0.1"
            ),
        ));
    }
    if let Some(p) = &auth.proxy {
        if p.from.is_empty() || p.header.trim().is_empty() {
            problems.push(at.problem(
                "review.auth.proxy",
                "review.auth.proxy: needs `header` and at least one address in `from`",
            ));
        }
    }
    if !(1..=500).contains(&review.page_size) {
        problems.push(at.problem("review.page_size", "review.page_size: must be 1 to 500"));
    }
}

/// The config file and its text, so that a problem can point at its key.
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Located<'_> {
    fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        Problem::at_key(self.path, self.text, key, message)
    }
}

fn check_desk(config: &Config, at: &Located, problems: &mut Problems) {
    for (key, value) in [
        ("desk.address", &config.desk.address),
        ("desk.order_ops", &config.desk.order_ops),
    ] {
        if !value.contains('@') {
            problems.push(at.problem(
                key,
                format!("{key}: expected an email address, got {value:?}"),
            ));
        }
    }
}

fn check_limits(limits: &Limits, at: &Located, problems: &mut Problems) {
    for (key, v) in [
        ("limits.per_sender.hours", limits.per_sender.hours),
        (
            "limits.circuit_breaker.answers",
            limits.circuit_breaker.answers,
        ),
        (
            "limits.circuit_breaker.minutes",
            limits.circuit_breaker.minutes,
        ),
    ] {
        if v == 0 {
            problems.push(at.problem(key, format!("{key}: must be at least 1")));
        }
    }
}

fn check_service(service: &ServiceConfig, at: &Located, problems: &mut Problems) {
    if let Some(addr) = &service.http {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            problems.push(at.problem(
                "service.http",
                format!("service.http: expected an address and port such as 127.0.0.1:9464, got {addr:?}"),
            ));
        }
    }
}

fn check_imap(imap: &ImapConfig, at: &Located, problems: &mut Problems) {
    if !(1..=300).contains(&imap.idle_refresh_seconds) {
        problems.push(at.problem(
            "imap.idle_refresh_seconds",
            format!(
                "imap.idle_refresh_seconds: {} is out of range; IDLE must be refreshed every 1 to 300 s",
                imap.idle_refresh_seconds
            ),
        ));
    }
    for (key, v) in [
        ("imap.poll_seconds", imap.poll_seconds),
        ("imap.timeout_seconds", imap.timeout_seconds),
    ] {
        if v == 0 {
            problems.push(at.problem(key, format!("{key}: must be at least 1")));
        }
    }
    if !(1..=2).contains(&imap.connections) {
        problems.push(at.problem(
            "imap.connections",
            format!(
                "imap.connections: {} is out of range (1: one session, 2: a backlog filed on a second)",
                imap.connections
            ),
        ));
    }
    match (&imap.password, &imap.oauth2) {
        (Some(_), Some(_)) | (None, None) => problems.push(at.problem(
            "imap",
            "imap: give either `password` or `oauth2`, exactly one",
        )),
        (None, Some(o)) => check_oauth2(at, "imap", o, problems),
        _ => {}
    }
}

fn check_smtp(smtp: &SmtpConfig, at: &Located, problems: &mut Problems) {
    if smtp.password.is_some() && smtp.oauth2.is_some() {
        problems.push(at.problem("smtp", "smtp: give either `password` or `oauth2`, not both"));
    }
    if (smtp.password.is_some() || smtp.oauth2.is_some()) && smtp.username.is_none() {
        problems.push(at.problem("smtp", "smtp: `username` is needed to sign in"));
    }
    if let Some(o) = &smtp.oauth2 {
        check_oauth2(at, "smtp", o, problems);
    }
    if !(1..=16).contains(&smtp.connections) {
        problems.push(at.problem(
            "smtp.connections",
            format!(
                "smtp.connections: {} is out of range (1 to 16)",
                smtp.connections
            ),
        ));
    }
}

/// What each grant needs, said at load rather than at the first refresh.
fn check_oauth2(at: &Located, side: &str, o: &OAuth2Config, problems: &mut Problems) {
    let mut need = |ok: bool, field: &str, why: &str| {
        if !ok {
            let key = format!("{side}.oauth2.{field}");
            problems.push(at.problem(&key, format!("{side}.oauth2: `{field}` is needed {why}")));
        }
    };
    match o.grant {
        Grant::RefreshToken => {
            need(
                o.client_id.is_some(),
                "client_id",
                "for the refresh_token grant",
            );
            need(
                o.refresh_token.is_some(),
                "refresh_token",
                "for the refresh_token grant (`triage auth` obtains the first one)",
            );
        }
        Grant::ClientCredentials => {
            need(
                o.client_id.is_some(),
                "client_id",
                "for the client_credentials grant",
            );
            need(
                o.client_secret.is_some(),
                "client_secret",
                "for the client_credentials grant",
            );
        }
        Grant::Command => need(
            o.command.as_ref().is_some_and(|c| !c.is_empty()),
            "command",
            "for the command grant",
        ),
    }
    if o.grant != Grant::Command {
        need(
            o.provider != Provider::Other || o.token_url.is_some(),
            "token_url",
            "with provider `other`",
        );
    }
}

/// The JSON Schema of the config file, from the types that load it.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(Config).to_value()
}

impl Config {
    /// Every secret the service will read, named by its place in the config.
    pub fn secrets(&self) -> Vec<(String, &Secret)> {
        let mut all = Vec::new();
        fn oauth<'a>(side: &str, o: Option<&'a OAuth2Config>) -> Vec<(String, &'a Secret)> {
            let Some(o) = o else { return Vec::new() };
            let named = [
                ("client_secret", &o.client_secret),
                ("refresh_token", &o.refresh_token),
            ];
            named
                .into_iter()
                .filter_map(|(n, s)| s.as_ref().map(|s| (format!("{side}.oauth2.{n}"), s)))
                .collect()
        }
        if let Some(imap) = &self.imap {
            if let Some(p) = &imap.password {
                all.push(("imap.password".to_string(), p));
            }
            all.extend(oauth("imap", imap.oauth2.as_ref()));
        }
        if let Some(smtp) = &self.smtp {
            if let Some(p) = &smtp.password {
                all.push(("smtp.password".to_string(), p));
            }
            all.extend(oauth("smtp", smtp.oauth2.as_ref()));
        }
        if let Some(sf) = self.crm.as_ref().and_then(|c| c.salesforce.as_ref()) {
            all.push((
                "crm.salesforce.client_secret".to_string(),
                &sf.client_secret,
            ));
        }
        all
    }

    /// Reads and validates the config file, in three steps: parse, resolve paths
    /// against the file's folder, validate (every problem found, each at its key).
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Problems::one(Problem::file(path, format!("cannot read config: {e}"))))?;
        let mut config: Config =
            serde_yaml::from_str(&text).map_err(|e| Problems::one(Problem::yaml(path, &e)))?;
        config.resolve_paths(path);
        let mut problems = Problems::default();
        let at = Located { path, text: &text };
        check_desk(&config, &at, &mut problems);
        check_limits(&config.limits, &at, &mut problems);
        check_service(&config.service, &at, &mut problems);
        if let Some(review) = &config.review {
            check_review(review, &at, &mut problems);
        }
        if let Some(crm) = &config.crm {
            check_crm(crm, &at, &mut problems);
        }
        if let Some(imap) = &config.imap {
            check_imap(imap, &at, &mut problems);
        }
        if let Some(smtp) = &config.smtp {
            check_smtp(smtp, &at, &mut problems);
        }
        problems.into_result(config)
    }

    /// Relative paths are relative to the config file's folder, wherever triage runs.
    fn resolve_paths(&mut self, path: &Path) {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        self.rules = resolve(&self.rules);
        self.templates = resolve(&self.templates);
        self.directory.path = resolve(&self.directory.path);
        self.service.state = resolve(&self.service.state);
        self.service.documents = resolve(&self.service.documents);
        if let Some(export) = self.crm.as_mut().and_then(|c| c.export.as_mut()) {
            export.folder = resolve(&export.folder);
        }
        if let Some(sf) = self.crm.as_mut().and_then(|c| c.salesforce.as_mut()) {
            sf.ca_file = sf.ca_file.as_deref().map(resolve);
        }
        if let Some(accounts) = self.review.as_mut().and_then(|r| r.auth.accounts.as_mut()) {
            *accounts = resolve(accounts);
        }
        let mut secrets = Vec::new();
        let mut oauth = Vec::new();
        if let Some(imap) = self.imap.as_mut() {
            imap.ca_file = imap.ca_file.as_deref().map(resolve);
            secrets.extend(imap.password.as_mut());
            oauth.extend(imap.oauth2.as_mut());
        }
        if let Some(smtp) = self.smtp.as_mut() {
            smtp.ca_file = smtp.ca_file.as_deref().map(resolve);
            secrets.extend(smtp.password.as_mut());
            oauth.extend(smtp.oauth2.as_mut());
        }
        if let Some(sf) = self.crm.as_mut().and_then(|c| c.salesforce.as_mut()) {
            secrets.push(&mut sf.client_secret);
        }
        for o in oauth {
            o.ca_file = o.ca_file.as_deref().map(resolve);
            secrets.extend(o.client_secret.as_mut());
            secrets.extend(o.refresh_token.as_mut());
        }
        for secret in secrets {
            if let Some(f) = &secret.file {
                secret.file = Some(resolve(f));
            }
        }
        self.source = path.to_path_buf();
    }

    /// Every address the desk itself sends from, lower case.
    pub fn own_addresses(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .desk
            .own_addresses
            .iter()
            .map(|a| a.to_lowercase())
            .collect();
        all.push(self.desk.address.to_lowercase());
        all.push(self.desk.order_ops.to_lowercase());
        all.sort();
        all.dedup();
        all
    }
}
