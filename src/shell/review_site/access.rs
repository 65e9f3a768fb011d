//! Who is asking. On a loopback listener without `auth`, anyone on this machine; with a
//! trusted proxy, the user it names, and only from its addresses; with local accounts,
//! a name and password checked against an argon2 hash. Anything else is refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::core::config::ReviewAuth;

/// Why a request is refused, in words for the response (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Credentials wanted: the browser asks for name and password.
    #[error("sign in with your review account")]
    SignIn,
    #[error("{0}")]
    Forbidden(String),
}

pub struct Access {
    auth: ReviewAuth,
    /// The listener is loopback: without `auth`, local requests are let in.
    loopback: bool,
    accounts: Mutex<Accounts>,
    /// Credentials checked recently (digest → until): argon2 is slow on purpose, and a
    /// page with three charts would otherwise pay it four times.
    recent: Mutex<HashMap<[u8; 32], Instant>>,
}

#[derive(Default)]
struct Accounts {
    path: Option<PathBuf>,
    read_at: Option<SystemTime>,
    hashes: HashMap<String, String>,
}

const REMEMBER: Duration = Duration::from_secs(600);

impl Access {
    pub fn new(auth: ReviewAuth, listen: SocketAddr) -> Access {
        Access {
            accounts: Mutex::new(Accounts {
                path: auth.accounts.clone(),
                ..Accounts::default()
            }),
            auth,
            loopback: listen.ip().is_loopback(),
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The viewer's name, as the view records and the page header show it.
    pub fn viewer(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<String, Refused> {
        let ip = canonical(peer.ip());
        if let Some(proxy) = &self.auth.proxy {
            if proxy.from.iter().any(|p| canonical(*p) == ip) {
                return proxy_user(headers, &proxy.header);
            }
        }
        if self.auth.accounts.is_some() {
            return self.account(headers);
        }
        if self.auth.proxy.is_none() && self.loopback && ip.is_loopback() {
            return Ok(format!("local ({ip})"));
        }
        Err(Refused::Forbidden(format!(
            "{ip} may not see these pages: only the configured proxy may"
        )))
    }

    fn account(&self, headers: &HeaderMap) -> Result<String, Refused> {
        let (user, password) = basic_credentials(headers).ok_or(Refused::SignIn)?;
        let digest: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let now = Instant::now();
        if let Ok(mut recent) = self.recent.lock() {
            recent.retain(|_, until| *until > now);
            if recent.contains_key(&digest) {
                return Ok(user);
            }
        }
        let hash = self.hash_of(&user);
        // An unknown name costs the same time as a wrong password.
        let hash = hash.as_deref().unwrap_or(DECOY.as_str());
        let ok = PasswordHash::new(hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        if !ok {
            tracing::warn!("review pages: a sign-in as {user:?} failed");
            return Err(Refused::SignIn);
        }
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(digest, now + REMEMBER);
        }
        Ok(user)
    }

    /// The account's hash, reading the file again when it changed (a new account needs
    /// no restart).
    fn hash_of(&self, user: &str) -> Option<String> {
        let mut a = self.accounts.lock().ok()?;
        let path = a.path.clone()?;
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified != a.read_at {
            a.hashes = read_accounts(&path);
            a.read_at = modified;
        }
        a.hashes.get(user).cloned()
    }
}

/// A hash of a random password, verified for unknown names.
static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    let random = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(random.as_str().as_bytes(), &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

fn read_accounts(path: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::error!("review accounts {}: {e}", path.display());
        String::new()
    });
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, hash)| (name.trim().to_string(), hash.trim().to_string()))
        .collect()
}

fn proxy_user(headers: &HeaderMap, header: &str) -> Result<String, Refused> {
    let user = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 200 && !u.chars().any(char::is_control));
    user.map(str::to_string).ok_or_else(|| {
        Refused::Forbidden(format!(
            "the proxy did not say who signed in (no {header} header)"
        ))
    })
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `::ffff:127.0.0.1` is 127.0.0.1: a dual-stack listener reports IPv4 peers that way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A new account line (`name:$argon2id$…`) for the accounts file.
pub fn account_line(name: &str, password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
        return Err("a name is one word without ':'".into());
    }
    if password.chars().count() < 12 {
        return Err("the password must be at least 12 characters".into());
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| e.to_string())?;
    Ok(format!("{name}:{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::ReviewProxy;

    fn basic(user: &str, pass: &str) -> HeaderMap {
        use base64::Engine;
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert("authorization", format!("Basic {v}").parse().unwrap());
        h
    }

    #[test]
    fn who_may_look() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let far: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let open = Access::new(ReviewAuth::default(), "127.0.0.1:8026".parse().unwrap());
        assert!(open.viewer(peer, &HeaderMap::new()).is_ok());
        assert!(open.viewer(far, &HeaderMap::new()).is_err());

        let proxy = ReviewAuth {
            proxy: Some(ReviewProxy {
                header: "X-Forwarded-User".into(),
                from: vec!["10.1.2.3".parse().unwrap()],
            }),
            accounts: None,
        };
        let a = Access::new(proxy, "0.0.0.0:8026".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", "lead@example.com".parse().unwrap());
        assert_eq!(a.viewer(far, &h).unwrap(), "lead@example.com");
        // The same header from anyone but the proxy is not believed.
        assert!(a.viewer(peer, &h).is_err());
        assert!(a.viewer(far, &HeaderMap::new()).is_err());

        let dir = std::env::temp_dir().join(format!("triage-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("accounts");
        let line = account_line("lead", "correct horse battery").unwrap();
        std::fs::write(&file, format!("# reviewers\n{line}\n")).unwrap();
        let accounts = ReviewAuth {
            proxy: None,
            accounts: Some(file),
        };
        let a = Access::new(accounts, "0.0.0.0:8026".parse().unwrap());
        assert!(matches!(
            a.viewer(far, &HeaderMap::new()),
            Err(Refused::SignIn)
        ));
        assert!(matches!(
            a.viewer(far, &basic("lead", "wrong password!")),
            Err(Refused::SignIn)
        ));
        assert!(matches!(
            a.viewer(far, &basic("nobody", "correct horse battery")),
            Err(Refused::SignIn)
        ));
        assert_eq!(
            a.viewer(far, &basic("lead", "correct horse battery"))
                .unwrap(),
            "lead"
        );
        assert!(account_line("x:y", "long enough password").is_err());
        assert!(account_line("lead", "short").is_err());
    }
}
