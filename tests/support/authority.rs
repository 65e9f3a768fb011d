//! A small OAuth2 authorization server on loopback for the OAuth2 tests: the token
//! endpoint (refresh-token, client-credentials, device-code and authorization-code
//! grants, with refresh-token rotation), a device-authorization endpoint, and RFC 7662
//! introspection, which Dovecot's oauth2 passdb calls for every sign-in. It keeps what
//! happened (every grant asked for, every token issued) for the tests to assert on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLIENT_ID: &str = "triage-desk-app";
pub const CLIENT_SECRET: &str = "cs-Hq4Tt8Ww1Ee5";

/// One call to the token endpoint.
#[derive(Debug, Clone)]
pub struct Grant {
    pub at: Instant,
    pub grant_type: String,
    pub granted: bool,
}

#[derive(Default)]
struct State {
    lifetime: Duration,
    rotate: bool,
    next: u64,
    access: HashMap<String, (String, Instant)>,
    refresh: HashMap<String, String>,
    devices: HashMap<String, (String, u32)>,
    codes: HashMap<String, String>,
    /// Who app-only (client-credentials) tokens act for.
    app_user: String,
    grants: Vec<Grant>,
    issued: Vec<String>,
    introspections: Vec<(String, bool)>,
}

pub struct Authority {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Authority {
    /// Access tokens live `lifetime`; with `rotate`, every refresh returns a new refresh
    /// token and the old one stops working, as Microsoft and many others do.
    pub fn start(lifetime: Duration, rotate: bool) -> Authority {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            lifetime,
            rotate,
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &state);
                });
            }
        });
        Authority { port, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn mint(state: &mut State, kind: &str) -> String {
        state.next += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let token = format!("{kind}{}x{nanos:08x}Zk", state.next);
        state.issued.push(token.clone());
        token
    }

    /// A refresh token for `user`, as an operator's first `triage auth` would leave.
    pub fn refresh_token_for(&self, user: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let t = Self::mint(&mut s, "rt");
        s.refresh.insert(t.clone(), user.to_string());
        t
    }

    pub fn set_app_user(&self, user: &str) {
        self.state.lock().unwrap().app_user = user.to_string();
    }

    /// The user revokes the app's consent: every refresh and access token stops working.
    pub fn revoke_all(&self) {
        let mut s = self.state.lock().unwrap();
        s.refresh.clear();
        s.access.clear();
    }

    /// Access tokens stop working (a server-side session reset); refresh still works.
    pub fn forget_access_tokens(&self) {
        self.state.lock().unwrap().access.clear();
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.state.lock().unwrap().grants.clone()
    }

    /// Every token this authority ever issued (to check none leaks into logs).
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    pub fn refresh_token_valid(&self, token: &str) -> bool {
        self.state.lock().unwrap().refresh.contains_key(token)
    }

    /// Sign-ins Dovecot checked, with whether the token was good.
    pub fn introspections(&self) -> Vec<(String, bool)> {
        self.state.lock().unwrap().introspections.clone()
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let (status, json) = answer(&path, &form, &mut state.lock().unwrap());
    let json = json.to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    conn.flush()
}

fn error(code: &str, description: &str) -> (&'static str, serde_json::Value) {
    (
        "400 Bad Request",
        serde_json::json!({"error": code, "error_description": description}),
    )
}

fn answer(
    path: &str,
    form: &HashMap<String, String>,
    s: &mut State,
) -> (&'static str, serde_json::Value) {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    match path {
        "/introspect" => {
            let token = field("token");
            // The harness's own readers (the test looking into mailboxes) sign in too.
            let user = if let Some(user) = token.strip_prefix("reader:") {
                Some(user.to_string())
            } else {
                s.access
                    .get(token)
                    .filter(|(_, exp)| *exp > Instant::now())
                    .map(|(u, _)| u.clone())
            };
            s.introspections.push((token.to_string(), user.is_some()));
            match user {
                Some(u) => ("200 OK", serde_json::json!({"active": true, "username": u})),
                None => ("200 OK", serde_json::json!({"active": false})),
            }
        }
        "/devicecode" => {
            if field("client_id") != CLIENT_ID {
                return error("invalid_client", "unknown client");
            }
            let code = Authority::mint(s, "dc");
            s.devices.insert(code.clone(), (s.app_user.clone(), 0));
            (
                "200 OK",
                serde_json::json!({
                    "device_code": code,
                    "user_code": "WDJB-MJHT",
                    "verification_uri": "http://127.0.0.1/device",
                    "expires_in": 900,
                    "interval": 1,
                    "message": "To sign in, open http://127.0.0.1/device and enter the code WDJB-MJHT."
                }),
            )
        }
        "/token" => {
            let grant_type = field("grant_type").to_string();
            let result = token(s, &grant_type, form);
            s.grants.push(Grant {
                at: Instant::now(),
                grant_type,
                granted: result.0.starts_with("200"),
            });
            result
        }
        _ => ("404 Not Found", serde_json::json!({"error": "not_found"})),
    }
}

fn token(
    s: &mut State,
    grant_type: &str,
    form: &HashMap<String, String>,
) -> (&'static str, serde_json::Value) {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return error(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let user = match grant_type {
        "refresh_token" => match s.refresh.get(field("refresh_token")) {
            Some(u) => u.clone(),
            None => {
                return error(
                    "invalid_grant",
                    "AADSTS700082: The refresh token has expired or was revoked.",
                )
            }
        },
        "client_credentials" => s.app_user.clone(),
        "urn:ietf:params:oauth:grant-type:device_code" => {
            match s.devices.get_mut(field("device_code")) {
                // The first poll comes before the operator has signed in.
                Some((_, polls)) if *polls == 0 => {
                    *polls += 1;
                    return error("authorization_pending", "The user has not signed in yet.");
                }
                Some((u, _)) => u.clone(),
                None => return error("expired_token", "Unknown device code."),
            }
        }
        "authorization_code" => match s.codes.remove(field("code")) {
            Some(u) => u,
            None if field("code") == "good-code" => s.app_user.clone(),
            None => return error("invalid_grant", "The code is not valid."),
        },
        other => return error("unsupported_grant_type", other),
    };
    let access = Authority::mint(s, "at");
    let expires = Instant::now() + s.lifetime;
    s.access.insert(access.clone(), (user.clone(), expires));
    let mut answer = serde_json::json!({
        "token_type": "Bearer",
        "access_token": access,
        "expires_in": s.lifetime.as_secs(),
    });
    let fresh_refresh = match grant_type {
        "refresh_token" if s.rotate => {
            s.refresh.remove(field("refresh_token"));
            true
        }
        "refresh_token" | "client_credentials" => false,
        _ => true,
    };
    if fresh_refresh {
        let r = Authority::mint(s, "rt");
        s.refresh.insert(r.clone(), user);
        answer["refresh_token"] = r.into();
    }
    ("200 OK", answer)
}
