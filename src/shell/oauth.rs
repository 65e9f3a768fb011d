//! OAuth2 sign-in for IMAP and SMTP, as Microsoft 365 and Google Workspace require: where
//! access tokens come from (the refresh-token grant, the client-credentials grant, or an
//! operator's own token broker), the cache that hands one out until shortly before it
//! expires, and the SASL strings that carry it (XOAUTH2; OAUTHBEARER, RFC 7628).
//!
//! The failure other tools are known for is silence: a refresh token expires or is
//! rotated and not saved, and the mailbox just stops being read. Here a rotated refresh
//! token is written to its file (atomically, 0600) before the new access token is used,
//! and every failed refresh is logged with the endpoint's own error, counted, and turns
//! readiness red until a refresh succeeds. Tokens themselves are never logged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::core::config::{Grant, OAuth2Config, Provider, SaslMechanism, Secret};
use crate::shell::health::Health;

/// A provider's endpoints and the scopes a desk mailbox needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoints {
    pub token: String,
    pub device: Option<String>,
    pub authorize: Option<String>,
    pub scopes: Vec<String>,
}

const MS_DELEGATED: [&str; 3] = [
    "https://outlook.office.com/IMAP.AccessAsUser.All",
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
];
/// App-only access takes the resource's `.default` scope; the mailbox permission itself
/// is granted to the app in Exchange Online.
const MS_APP_ONLY: [&str; 1] = ["https://outlook.office365.com/.default"];
const GOOGLE: [&str; 1] = ["https://mail.google.com/"];

/// The provider's defaults with the config's overrides applied.
pub fn endpoints(cfg: &OAuth2Config) -> Endpoints {
    let (token, device, authorize, scopes): (String, Option<String>, Option<String>, Vec<&str>) =
        match cfg.provider {
            Provider::Microsoft => {
                let tenant = cfg.tenant.as_deref().unwrap_or("organizations");
                let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
                let scopes = if cfg.grant == Grant::ClientCredentials {
                    MS_APP_ONLY.to_vec()
                } else {
                    MS_DELEGATED.to_vec()
                };
                (
                    format!("{base}/token"),
                    Some(format!("{base}/devicecode")),
                    Some(format!("{base}/authorize")),
                    scopes,
                )
            }
            Provider::Google => (
                "https://oauth2.googleapis.com/token".into(),
                Some("https://oauth2.googleapis.com/device/code".into()),
                Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
                GOOGLE.to_vec(),
            ),
            Provider::Other => (String::new(), None, None, Vec::new()),
        };
    Endpoints {
        token: cfg.token_url.clone().unwrap_or(token),
        device: cfg.device_url.clone().or(device),
        authorize: cfg.authorize_url.clone().or(authorize),
        scopes: cfg
            .scopes
            .clone()
            .unwrap_or_else(|| scopes.into_iter().map(String::from).collect()),
    }
}

// ------------------------------------------------------------------ SASL

/// Google's and Microsoft's XOAUTH2 initial response (before base64).
pub fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// RFC 7628's OAUTHBEARER initial response (before base64): a GS2 header naming the
/// user (`,` and `=` escaped as RFC 5801 says), then the bearer token.
pub fn oauthbearer(user: &str, token: &str) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={user},\x01auth=Bearer {token}\x01\x01")
}

/// After a failure the server sends a JSON challenge; the client must answer it before
/// the server says no: a lone ^A for OAUTHBEARER (RFC 7628 3.2.3), nothing for XOAUTH2.
pub fn error_acknowledgement(mechanism: &str) -> &'static str {
    if mechanism == "OAUTHBEARER" {
        "\x01"
    } else {
        ""
    }
}

/// The mechanism to use: the configured one, or what the server offers (OAUTHBEARER,
/// the standard, before XOAUTH2).
pub fn choose_mechanism(
    wanted: SaslMechanism,
    offered: impl Fn(&str) -> bool,
) -> Result<&'static str, String> {
    match wanted {
        SaslMechanism::Xoauth2 => Ok("XOAUTH2"),
        SaslMechanism::Oauthbearer => Ok("OAUTHBEARER"),
        SaslMechanism::Auto if offered("OAUTHBEARER") => Ok("OAUTHBEARER"),
        SaslMechanism::Auto if offered("XOAUTH2") => Ok("XOAUTH2"),
        SaslMechanism::Auto => {
            Err("the server offers neither OAUTHBEARER nor XOAUTH2 sign-in".into())
        }
    }
}

/// The initial response for `mechanism`.
pub fn initial_response(mechanism: &str, user: &str, token: &str) -> String {
    if mechanism == "OAUTHBEARER" {
        oauthbearer(user, token)
    } else {
        xoauth2(user, token)
    }
}

// ------------------------------------------------------------------ token responses

/// What a token endpoint granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    pub access_token: String,
    pub expires_in: Option<u64>,
    /// Present when the endpoint rotated the refresh token (or issued the first one).
    pub refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Reads a token endpoint's answer (RFC 6749 5.1 and 5.2). The error names the
/// endpoint's own `error` and `error_description`, which never contain a token.
pub fn read_token_response(status: u16, body: &str) -> Result<Granted, String> {
    let parsed: Result<TokenBody, _> = serde_json::from_str(body);
    match parsed {
        Ok(TokenBody {
            access_token: Some(access_token),
            expires_in,
            refresh_token,
            ..
        }) if (200..300).contains(&status) => {
            // Microsoft has sent expires_in as a string at times.
            let expires_in = match expires_in {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                _ => None,
            };
            Ok(Granted {
                access_token,
                expires_in,
                refresh_token: refresh_token.filter(|r| !r.is_empty()),
            })
        }
        Ok(TokenBody {
            error: Some(error),
            error_description,
            ..
        }) => Err(match error_description {
            Some(d) => format!("HTTP {status}, {error}: {}", one_line(&d)),
            None => format!("HTTP {status}, {error}"),
        }),
        Ok(_) => Err(format!("HTTP {status} without an access token")),
        Err(_) => Err(format!(
            "HTTP {status}, not a token response: {}",
            one_line(&body.chars().take(200).collect::<String>())
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An output of `command`: a JSON token response, or the bare token.
pub fn read_command_output(out: &str) -> Result<Granted, String> {
    let out = out.trim();
    if out.starts_with('{') {
        return read_token_response(200, out);
    }
    if out.is_empty() || out.contains(char::is_whitespace) {
        return Err("the command printed no token (expected one line, or JSON)".into());
    }
    Ok(Granted {
        access_token: out.to_string(),
        expires_in: None,
        refresh_token: None,
    })
}

// ------------------------------------------------------------------ HTTP

/// A blocking HTTP client (run on tokio's blocking pool) trusting `ca_file` or the
/// system store, with our ring provider.
pub fn agent(ca_file: Option<&Path>, timeout: Duration) -> Result<ureq::Agent, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let certs: Vec<Certificate<'static>> = match ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
            vec![Certificate::from_pem(&pem)
                .map_err(|e| format!("CA file {}: {e}", ca.display()))?]
        }
        None => rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect(),
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::from(certs))
        .unversioned_rustls_crypto_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .build();
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into())
}

/// POSTs a form to `url`; the status and body, or why there is none.
pub fn post_form(
    agent: &ureq::Agent,
    url: &str,
    form: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut response = agent
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().copied())
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

// ------------------------------------------------------------------ the token source

/// Writes the secret atomically with mode 0600: a temporary file beside it, fsync,
/// rename, fsync of the folder. A crash leaves the old token or the new one, never half.
pub fn write_secret_file(path: &Path, value: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or("no file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.write_all(b"\n")?;
        // Replaced by root (`triage auth` run by an admin), the file keeps its owner, so
        // the service's own user can still read it.
        if let Ok(old) = std::fs::metadata(path) {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()));
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

struct Access {
    token: String,
    /// When it stops being handed out (its expiry less `refresh_ahead_seconds`).
    good_until: Instant,
    expires: Instant,
}

#[derive(Default)]
struct Cache {
    access: Option<Access>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// A rotated refresh token that could not be written to its file: kept here so the
    /// service goes on, while the error says the file is stale.
    unsaved_refresh: Option<String>,
}

/// One account's tokens (IMAP and SMTP share one when their settings are the same).
pub struct Tokens {
    /// For logs and metrics: "imap", "smtp" or "imap+smtp".
    pub account: String,
    cfg: OAuth2Config,
    endpoints: Endpoints,
    agent: ureq::Agent,
    cache: tokio::sync::Mutex<Cache>,
    /// Wakes the background refresher when any caller refreshed (its plan changed).
    refreshed: tokio::sync::Notify,
    health: Option<Arc<Health>>,
}

/// Waits between failed refreshes: 5 s doubling to 10 minutes, plus up to a quarter.
fn refresh_backoff(failures: u32) -> Duration {
    crate::shell::backoff::delay(failures, Duration::from_secs(5), Duration::from_secs(600))
}

/// The client's ID and, for confidential clients, its secret.
pub fn client(cfg: &OAuth2Config) -> Result<(String, Option<String>), String> {
    let id = cfg.client_id.clone().ok_or("no client_id configured")?;
    let secret = match &cfg.client_secret {
        Some(s) => Some(s.read().map_err(|e| format!("client_secret: {e}"))?),
        None => None,
    };
    Ok((id, secret))
}

impl Tokens {
    pub fn new(
        account: &str,
        cfg: &OAuth2Config,
        health: Option<Arc<Health>>,
    ) -> Result<Tokens, String> {
        let agent = agent(cfg.ca_file.as_deref(), Duration::from_secs(30))?;
        Ok(Tokens {
            account: account.to_string(),
            cfg: cfg.clone(),
            endpoints: endpoints(cfg),
            agent,
            cache: tokio::sync::Mutex::new(Cache::default()),
            refreshed: tokio::sync::Notify::new(),
            health,
        })
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.cfg.mechanism
    }

    /// A token good for a while yet: the cached one, or a new one.
    pub async fn token(&self) -> Result<String, String> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        if let Some(a) = cache.access.as_ref().filter(|a| a.good_until > now) {
            return Ok(a.token.clone());
        }
        if let Some(why) = self.backing_off(&cache, now) {
            // An old token that has not expired yet is better than none.
            if let Some(a) = cache.access.as_ref().filter(|a| a.expires > now) {
                return Ok(a.token.clone());
            }
            return Err(why);
        }
        self.refresh(&mut cache).await
    }

    /// While failed refreshes are being waited out: why there is no new token now.
    fn backing_off(&self, cache: &Cache, now: Instant) -> Option<String> {
        let at = cache.retry_at.filter(|at| *at > now)?;
        Some(format!(
            "OAuth2 token for {}: {} (next try in {} s)",
            self.account,
            cache.last_error.as_deref().unwrap_or("refresh failed"),
            (at - now).as_secs_f32().ceil()
        ))
    }

    /// The server refused `rejected` although it looked valid: one new token, unless
    /// another connection already replaced it. Backoff still applies: no tight loop.
    pub async fn renew(&self, rejected: &str) -> Result<String, String> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        if let Some(a) = cache
            .access
            .as_ref()
            .filter(|a| a.token != rejected && a.good_until > now)
        {
            return Ok(a.token.clone());
        }
        cache.access = None;
        if let Some(why) = self.backing_off(&cache, now) {
            return Err(why);
        }
        warn!(
            "the server refused the OAuth2 token for {}; getting a new one",
            self.account
        );
        self.refresh(&mut cache).await
    }

    /// Keeps a token ready, so a failing refresh is known (logs, metrics, readiness) when
    /// it happens, not when the next connection needs a token.
    pub async fn keep_fresh(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wake = {
                let cache = self.cache.lock().await;
                match (&cache.access, cache.retry_at) {
                    (_, Some(at)) => at,
                    (Some(a), None) => a.good_until,
                    (None, None) => Instant::now(),
                }
            };
            let due = tokio::select! {
                _ = tokio::time::sleep_until(wake) => true,
                _ = self.refreshed.notified() => false,
                _ = stop.wait_for(|s| *s) => return,
            };
            if due {
                // Errors are logged and reported by refresh itself.
                let _ = self.token().await;
            }
        }
    }

    async fn refresh(&self, cache: &mut Cache) -> Result<String, String> {
        let outcome = match self.cfg.grant {
            Grant::Command => self.run_command().await,
            Grant::ClientCredentials => self.grant(None).await,
            Grant::RefreshToken => match self.current_refresh(cache) {
                Ok(current) => self
                    .grant(Some(&current))
                    .await
                    .map(|g| self.keep_rotated(cache, &current, g)),
                Err(e) => Err(e),
            },
        };
        let now = Instant::now();
        // notify_one keeps a permit when the refresher is not waiting yet: never lost.
        self.refreshed.notify_one();
        match outcome {
            Ok(granted) => {
                let ahead = Duration::from_secs(self.cfg.refresh_ahead_seconds);
                let lifetime = granted
                    .expires_in
                    .map(Duration::from_secs)
                    // Unknown lifetime (a bare token from a command): ask again soon.
                    .unwrap_or(ahead + Duration::from_secs(60));
                let expires = now + lifetime;
                // A token shorter-lived than the margin is still used, for half its life.
                let good_until = if lifetime > ahead {
                    expires - ahead
                } else {
                    now + lifetime / 2
                };
                if cache.failures > 0 {
                    info!(
                        "OAuth2 token for {} refreshed again after {} failures",
                        self.account, cache.failures
                    );
                } else {
                    info!(
                        "OAuth2 token for {} refreshed (good for {} s)",
                        self.account,
                        lifetime.as_secs()
                    );
                }
                cache.failures = 0;
                cache.retry_at = None;
                cache.last_error = None;
                cache.access = Some(Access {
                    token: granted.access_token.clone(),
                    good_until,
                    expires,
                });
                if let Some(h) = &self.health {
                    // A rotated token not saved keeps readiness red although tokens flow.
                    let unsaved = cache
                        .unsaved_refresh
                        .as_ref()
                        .map(|_| "a rotated refresh token could not be saved");
                    h.token_refreshed(&self.account, Ok(lifetime.as_secs()), unsaved);
                }
                Ok(granted.access_token)
            }
            Err(e) => {
                cache.failures += 1;
                let wait = refresh_backoff(cache.failures);
                cache.retry_at = Some(now + wait);
                error!(
                    "OAuth2 token refresh for {} failed ({} in a row): {e}; next try in {:.0} s",
                    self.account,
                    cache.failures,
                    wait.as_secs_f32()
                );
                cache.last_error = Some(e.clone());
                if let Some(h) = &self.health {
                    h.token_refreshed(&self.account, Err(&e), None);
                }
                Err(format!("OAuth2 token for {}: {e}", self.account))
            }
        }
    }

    /// The refresh token to use: one rotated but not saved, or the file's (read at each
    /// refresh, so one that `triage auth` wrote is taken up without a restart).
    fn current_refresh(&self, cache: &Cache) -> Result<String, String> {
        if let Some(r) = &cache.unsaved_refresh {
            return Ok(r.clone());
        }
        self.cfg
            .refresh_token
            .as_ref()
            .ok_or("no refresh_token configured")?
            .read()
            .map_err(|e| format!("refresh_token: {e}"))
    }

    /// A rotated refresh token goes to its file before the access token is used: after
    /// a crash the file holds the one the endpoint now expects.
    fn keep_rotated(&self, cache: &mut Cache, current: &str, granted: Granted) -> Granted {
        let Some(rotated) = granted.refresh_token.as_deref().filter(|r| *r != current) else {
            return granted;
        };
        let saved = match self.cfg.refresh_token.as_ref().and_then(Secret::writable_file) {
            Some(path) => write_secret_file(path, rotated),
            None => Err("the refresh token comes from an environment variable, where a rotated one cannot be saved; keep it in a file".into()),
        };
        match saved {
            Ok(()) => {
                info!(
                    "OAuth2 refresh token for {} rotated and saved",
                    self.account
                );
                cache.unsaved_refresh = None;
            }
            Err(e) => {
                error!(
                    "OAuth2 refresh token for {} rotated but NOT saved: {e}; it is kept in memory, and a restart will need `triage auth`",
                    self.account
                );
                cache.unsaved_refresh = Some(rotated.to_string());
            }
        }
        granted
    }

    /// The refresh-token grant with `refresh`, or the client-credentials grant.
    async fn grant(&self, refresh: Option<&str>) -> Result<Granted, String> {
        let (client_id, secret) = client(&self.cfg)?;
        let refresh = refresh.map(String::from);
        let url = self.endpoints.token.clone();
        let scope = self.endpoints.scopes.join(" ");
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let mut form: Vec<(&str, &str)> = vec![("client_id", &client_id)];
            match &refresh {
                Some(r) => {
                    form.push(("grant_type", "refresh_token"));
                    form.push(("refresh_token", r));
                }
                None => form.push(("grant_type", "client_credentials")),
            }
            if let Some(s) = &secret {
                form.push(("client_secret", s));
            }
            if !scope.is_empty() {
                form.push(("scope", &scope));
            }
            let (status, body) = post_form(&agent, &url, &form)?;
            read_token_response(status, &body)
        })
        .await
        .map_err(|e| format!("token request: {e}"))?
    }

    async fn run_command(&self) -> Result<Granted, String> {
        let argv = self.cfg.command.as_deref().unwrap_or_default();
        let (program, args) = argv.split_first().ok_or("no command configured")?;
        let run = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .map_err(|_| format!("{program}: no token within 60 s"))?
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "{program} exited with {}: {}",
                out.status,
                one_line(&stderr.chars().take(300).collect::<String>())
            ));
        }
        read_command_output(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| format!("{program}: {e}"))
    }
}

/// How a connection signs in.
#[derive(Clone)]
pub enum SignIn {
    Password(String),
    OAuth2(Arc<Tokens>),
}

/// The IMAP and SMTP sign-ins, sharing one token source when their OAuth2 settings are
/// the same (one cache, one refresh-token file, one set of refreshes).
pub fn sign_ins(
    config: &crate::core::config::Config,
    health: Option<Arc<Health>>,
) -> Result<(Option<SignIn>, Option<SignIn>), String> {
    let imap = config.imap.as_ref();
    let smtp = config.smtp.as_ref();
    let shared = match (
        imap.and_then(|i| i.oauth2.as_ref()),
        smtp.and_then(|s| s.oauth2.as_ref()),
    ) {
        (Some(a), Some(b)) => {
            a == b && imap.map(|i| &i.username) == smtp.and_then(|s| s.username.as_ref())
        }
        _ => false,
    };
    let imap_in = match imap {
        None => None,
        Some(i) => Some(match (&i.oauth2, &i.password) {
            (Some(o), _) => {
                let account = if shared { "imap+smtp" } else { "imap" };
                SignIn::OAuth2(Arc::new(Tokens::new(account, o, health.clone())?))
            }
            (None, Some(p)) => {
                SignIn::Password(p.read().map_err(|e| format!("imap.password: {e}"))?)
            }
            (None, None) => return Err("imap: no password and no oauth2".into()),
        }),
    };
    let smtp_in = match smtp {
        None => None,
        Some(s) => match (&s.username, &s.oauth2, &s.password) {
            (Some(_), Some(_), _) if shared => imap_in.clone(),
            (Some(_), Some(o), _) => {
                Some(SignIn::OAuth2(Arc::new(Tokens::new("smtp", o, health)?)))
            }
            (Some(_), None, Some(p)) => Some(SignIn::Password(
                p.read().map_err(|e| format!("smtp.password: {e}"))?,
            )),
            _ => None,
        },
    };
    Ok((imap_in, smtp_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> OAuth2Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn sasl_strings_are_the_documented_ones() {
        assert_eq!(
            xoauth2("desk@contoso.com", "tok"),
            "user=desk@contoso.com\x01auth=Bearer tok\x01\x01"
        );
        // RFC 7628 section 4.1's example shape, with the saslname escapes of RFC 5801.
        assert_eq!(
            oauthbearer("a,b=c@example.com", "tok"),
            "n,a=a=2Cb=3Dc@example.com,\x01auth=Bearer tok\x01\x01"
        );
        assert_eq!(error_acknowledgement("OAUTHBEARER"), "\x01");
        assert_eq!(error_acknowledgement("XOAUTH2"), "");
    }

    #[test]
    fn mechanism_follows_the_server_unless_forced() {
        let both = |m: &str| m == "XOAUTH2" || m == "OAUTHBEARER";
        let ms = |m: &str| m == "XOAUTH2";
        assert_eq!(
            choose_mechanism(SaslMechanism::Auto, both),
            Ok("OAUTHBEARER")
        );
        assert_eq!(choose_mechanism(SaslMechanism::Auto, ms), Ok("XOAUTH2"));
        assert_eq!(
            choose_mechanism(SaslMechanism::Xoauth2, both),
            Ok("XOAUTH2")
        );
        assert!(choose_mechanism(SaslMechanism::Auto, |_| false)
            .unwrap_err()
            .contains("neither"));
    }

    #[test]
    fn provider_defaults_and_overrides() {
        let ms = endpoints(&cfg(
            "{provider: microsoft, tenant: contoso.onmicrosoft.com}",
        ));
        assert_eq!(
            ms.token,
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(ms.scopes, MS_DELEGATED.map(String::from).to_vec());
        let app = endpoints(&cfg("{provider: microsoft, grant: client_credentials}"));
        assert_eq!(app.scopes, vec!["https://outlook.office365.com/.default"]);
        assert!(app.token.contains("/organizations/"));
        let g = endpoints(&cfg("{provider: google}"));
        assert_eq!(g.token, "https://oauth2.googleapis.com/token");
        assert_eq!(g.scopes, vec!["https://mail.google.com/"]);
        let own = endpoints(&cfg(
            "{provider: other, token_url: 'http://127.0.0.1:1/token', scopes: [mail]}",
        ));
        assert_eq!(own.token, "http://127.0.0.1:1/token");
        assert_eq!(own.scopes, vec!["mail"]);
    }

    #[test]
    fn token_responses_and_endpoint_errors() {
        let ok = read_token_response(
            200,
            r#"{"access_token":"A","expires_in":"3599","refresh_token":"R2","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token, "A");
        assert_eq!(ok.expires_in, Some(3599));
        assert_eq!(ok.refresh_token.as_deref(), Some("R2"));
        let revoked = read_token_response(
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS70000: The refresh token\nwas revoked."}"#,
        )
        .unwrap_err();
        assert_eq!(
            revoked,
            "HTTP 400, invalid_grant: AADSTS70000: The refresh token was revoked."
        );
        assert!(read_token_response(502, "<html>bad gateway</html>")
            .unwrap_err()
            .starts_with("HTTP 502, not a token response"));
        assert_eq!(read_command_output("abc\n").unwrap().access_token, "abc");
        assert_eq!(
            read_command_output(r#"{"access_token":"x","expires_in":60}"#)
                .unwrap()
                .expires_in,
            Some(60)
        );
        assert!(read_command_output("").is_err());
    }

    #[test]
    fn a_rotated_token_is_written_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("triage-oauth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("refresh-token");
        std::fs::write(&path, "old\n").unwrap();
        // The service's user owns it; whoever replaces it (root, here), it stays theirs.
        let owner = std::os::unix::fs::chown(&path, Some(5000), Some(5000)).is_ok();
        write_secret_file(&path, "new-token").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new-token\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        if owner {
            use std::os::unix::fs::MetadataExt;
            assert_eq!((meta.uid(), meta.gid()), (5000, 5000));
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(refresh_backoff(1) >= Duration::from_secs(5));
        assert!(refresh_backoff(1) < Duration::from_secs(7));
        assert!(refresh_backoff(3) >= Duration::from_secs(20));
        assert!(refresh_backoff(50) <= Duration::from_secs(750));
    }
}
