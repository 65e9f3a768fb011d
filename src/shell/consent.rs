//! `triage auth`: the operator's one-time consent that gives the service its first
//! refresh token, by the device-code flow (RFC 8628: a code typed in on any browser) or
//! the authorization-code flow with PKCE (RFC 7636: open a URL, paste back where the
//! browser landed). The service renews tokens on its own after that.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::core::config::{OAuth2Config, Provider, Secret};
use crate::shell::oauth::{self, client, endpoints, post_form, read_token_response, Granted};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Deserialize)]
struct DeviceStart {
    device_code: String,
    user_code: String,
    /// Google says verification_url.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

/// Where the refresh token will be written; consent without a file to keep it in would
/// be lost at once.
pub fn token_file(cfg: &OAuth2Config) -> Result<std::path::PathBuf, String> {
    cfg.refresh_token
        .as_ref()
        .and_then(Secret::writable_file)
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| {
            "`refresh_token` must name a `file` for `triage auth` to keep the token in \
             (an environment variable cannot be written)"
                .into()
        })
}

/// RFC 8628: asks for a user code, shows it, and polls until the operator has signed in.
pub fn device_flow(cfg: &OAuth2Config, say: &mut dyn Write) -> Result<Granted, String> {
    let ends = endpoints(cfg);
    let device_url = ends
        .device
        .ok_or("no device authorization endpoint: set `device_url`, or use the code flow")?;
    let (client_id, secret) = client(cfg)?;
    let agent = oauth::agent(cfg.ca_file.as_deref(), Duration::from_secs(30))?;
    let scope = ends.scopes.join(" ");
    let (status, body) = post_form(
        &agent,
        &device_url,
        &[("client_id", &client_id), ("scope", &scope)],
    )?;
    let start: DeviceStart = serde_json::from_str(&body).map_err(|_| {
        read_token_response(status, &body)
            .err()
            .unwrap_or_else(|| format!("HTTP {status}: not a device authorization answer"))
    })?;
    let _ = writeln!(
        say,
        "{}",
        start.message.clone().unwrap_or_else(|| format!(
            "Open {} and enter the code {}",
            start.verification_uri, start.user_code
        ))
    );
    let _ = writeln!(
        say,
        "Sign in as the mailbox user (or an admin consenting for it). Waiting…"
    );
    let mut interval = Duration::from_secs(start.interval.unwrap_or(5).max(1));
    let deadline = Instant::now() + Duration::from_secs(start.expires_in);
    loop {
        std::thread::sleep(interval);
        if Instant::now() > deadline {
            return Err("the code expired before the sign-in was finished; run again".into());
        }
        let mut form = vec![
            ("grant_type", DEVICE_GRANT),
            ("device_code", start.device_code.as_str()),
            ("client_id", client_id.as_str()),
        ];
        if let Some(s) = &secret {
            form.push(("client_secret", s));
        }
        let (status, body) = post_form(&agent, &ends.token, &form)?;
        match read_token_response(status, &body) {
            Ok(g) => return Ok(g),
            // RFC 8628 3.5: keep polling; slower when told.
            Err(e) if e.contains("authorization_pending") => {}
            Err(e) if e.contains("slow_down") => interval += Duration::from_secs(5),
            Err(e) => return Err(e),
        }
    }
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> Result<(String, String), String> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(random_bytes(32)?);
    let challenge = b64.encode(Sha256::digest(verifier.as_bytes()));
    Ok((verifier, challenge))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(bytes)
}

/// The URL the operator opens to consent.
pub fn authorize_url(
    cfg: &OAuth2Config,
    redirect_uri: &str,
    challenge: &str,
    state: &str,
) -> Result<String, String> {
    let ends = endpoints(cfg);
    let base = ends
        .authorize
        .ok_or("no authorization endpoint: set `authorize_url`, or use --device")?;
    let client_id = cfg.client_id.clone().ok_or("no client_id configured")?;
    let scope = ends.scopes.join(" ");
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("client_id", &client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", &scope)
        .append_pair("state", state)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256");
    if cfg.provider == Provider::Google {
        // Google issues a refresh token only for offline access, and again only on consent.
        query
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent");
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}{}", query.finish()))
}

/// The code from what the operator pasted: the whole address the browser landed on, or
/// the code alone. A `state` that does not match means another sign-in's answer.
pub fn code_from(pasted: &str, state: &str) -> Result<String, String> {
    let pasted = pasted.trim();
    let Some((_, query)) = pasted.split_once('?') else {
        return if pasted.is_empty() {
            Err("nothing was pasted".into())
        } else {
            Ok(pasted.to_string())
        };
    };
    let query = query.split('#').next().unwrap_or(query);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Some(e) = get("error") {
        return Err(match get("error_description") {
            Some(d) => format!("{e}: {d}"),
            None => e,
        });
    }
    if get("state").as_deref() != Some(state) {
        return Err("the address is from another sign-in (its state does not match)".into());
    }
    get("code").ok_or_else(|| "the address has no code".into())
}

/// The authorization-code flow: prints the URL, reads the pasted answer, exchanges it.
pub fn code_flow(
    cfg: &OAuth2Config,
    redirect_uri: &str,
    input: &mut dyn BufRead,
    say: &mut dyn Write,
) -> Result<Granted, String> {
    let (verifier, challenge) = pkce()?;
    let state = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(12)?);
    let url = authorize_url(cfg, redirect_uri, &challenge, &state)?;
    let _ = writeln!(
        say,
        "Open this address, sign in as the mailbox user and consent:\n\n{url}\n\n\
         The browser then lands on {redirect_uri} (the page may not load). Paste the \
         whole address it shows, then Enter:"
    );
    let _ = say.flush();
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let code = code_from(&line, &state)?;
    let ends = endpoints(cfg);
    let (client_id, secret) = client(cfg)?;
    let agent = oauth::agent(cfg.ca_file.as_deref(), Duration::from_secs(30))?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri),
        ("client_id", client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(s) = &secret {
        form.push(("client_secret", s));
    }
    let (status, body) = post_form(&agent, &ends.token, &form)?;
    read_token_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> OAuth2Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn authorize_url_carries_pkce_state_and_scopes() {
        let url = authorize_url(
            &cfg("{provider: google, client_id: abc.apps.googleusercontent.com}"),
            "http://127.0.0.1:8765",
            "CHALLENGE",
            "STATE",
        )
        .unwrap();
        assert!(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?client_id=abc."));
        for part in [
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A8765",
            "scope=https%3A%2F%2Fmail.google.com%2F",
            "state=STATE",
            "code_challenge=CHALLENGE",
            "code_challenge_method=S256",
            "access_type=offline",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        let ms = authorize_url(&cfg("{client_id: x}"), "http://localhost", "C", "S").unwrap();
        assert!(ms.contains("IMAP.AccessAsUser.All"), "{ms}");
        assert!(!ms.contains("access_type"), "{ms}");
    }

    #[test]
    fn the_pasted_answer_gives_the_code_or_says_why_not() {
        assert_eq!(
            code_from("http://localhost/?code=M.C1%2F2&state=S\n", "S").unwrap(),
            "M.C1/2"
        );
        assert_eq!(code_from("  M.C1  ", "S").unwrap(), "M.C1");
        assert!(code_from("http://localhost/?code=x&state=OTHER", "S")
            .unwrap_err()
            .contains("another sign-in"));
        assert_eq!(
            code_from(
                "http://localhost/?error=access_denied&error_description=The+user+declined",
                "S"
            )
            .unwrap_err(),
            "access_denied: The user declined"
        );
    }

    #[test]
    fn pkce_challenge_is_the_verifiers_sha256() {
        let (v, c) = pkce().unwrap();
        assert_eq!(v.len(), 43);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(c, b64.encode(Sha256::digest(v.as_bytes())));
        assert_ne!(pkce().unwrap().0, v);
    }
}
