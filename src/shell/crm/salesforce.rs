//! The CRM steps in Salesforce over its REST API, signed in as a connected app
//! (OAuth 2.0 client-credentials flow). Each step first looks for its marker, so a
//! step done just before a crash is found, not done again:
//! - a document: a ContentVersion whose Description carries the marker, published onto
//!   the record (FirstPublishLocationId);
//! - a registration's status: read by its External ID; already the new status is done,
//!   any status but the expected one is refused (Salesforce's words go to a person);
//! - a note: a Chatter feed item on the opportunity, @mentioning the Channel Manager,
//!   with the PoE attached and the marker in its text.
//!
//! Limits (REQUEST_LIMIT_EXCEEDED, 429) and 5xx are retried with backoff; a 401 renews
//! the token once. Tokens and secrets never reach a log, the audit or a page.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use crate::core::config::SalesforceConfig;
use crate::core::crm::CrmAction;
use crate::shell::backoff;

/// Why a step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Salesforce said no (a validation rule, a status that moved on, a missing record).
    #[error("Salesforce refused: {0}")]
    Refused(String),
    /// Not reachable, or limits still exceeded after the retries.
    #[error("Salesforce could not be reached: {0}")]
    Unreachable(String),
}

pub struct Salesforce {
    cfg: SalesforceConfig,
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
}

const TRIES: u32 = 4;

impl Salesforce {
    pub fn new(cfg: &SalesforceConfig) -> Result<Salesforce, String> {
        let timeout = Duration::from_secs(cfg.timeout_seconds);
        Ok(Salesforce {
            agent: crate::shell::oauth::agent(cfg.ca_file.as_deref(), timeout)?,
            cfg: cfg.clone(),
            token: Mutex::new(None),
        })
    }

    /// Carries out one step; the record ids it touched, in words. `resumed`: the step
    /// was started before a crash.
    pub fn carry(
        &self,
        marker: &str,
        action: &CrmAction,
        documents: &Path,
        resumed: bool,
    ) -> Result<String, Failure> {
        match action {
            CrmAction::AttachDocument {
                opportunity,
                document,
                under,
                ..
            } => {
                let path = documents.join(under).join(document);
                let (version, _) = self.upload(&path, document, opportunity, marker)?;
                Ok(format!("ContentVersion {version} on {opportunity}"))
            }
            CrmAction::SetRegistrationStatus {
                registration,
                from,
                to,
            } => self.set_status(registration, from, to, resumed),
            CrmAction::PostNote {
                opportunity,
                user,
                text,
                document,
                under,
            } => {
                let file = match (document, under) {
                    (Some(d), Some(u)) => Some(
                        self.upload(
                            &documents.join(u).join(d),
                            d,
                            opportunity,
                            &format!("{marker}-file"),
                        )?
                        .1,
                    ),
                    _ => None,
                };
                self.post_note(opportunity, user, text, file.as_deref(), marker)
            }
        }
    }

    /// The document as a ContentVersion on `record`, unless one with the marker is there:
    /// (ContentVersion id, ContentDocument id).
    fn upload(
        &self,
        path: &Path,
        title: &str,
        record: &str,
        marker: &str,
    ) -> Result<(String, String), Failure> {
        let description = format!("Kept by triage [{marker}]");
        let found = self.query(&format!(
            "SELECT Id, ContentDocumentId FROM ContentVersion WHERE Description = '{}'",
            soql(&description)
        ))?;
        if let Some(r) = found.first() {
            return Ok((text(r, "Id"), text(r, "ContentDocumentId")));
        }
        use base64::Engine;
        let bytes = std::fs::read(path)
            .map_err(|e| Failure::Refused(format!("the kept document {}: {e}", path.display())))?;
        let body = json!({
            "Title": title, "PathOnClient": title, "Description": description,
            "FirstPublishLocationId": record,
            "VersionData": base64::engine::general_purpose::STANDARD.encode(bytes),
        });
        let created = self.call("POST", "/sobjects/ContentVersion", Some(&body))?;
        let id = text(&created, "id");
        let again = self.query(&format!(
            "SELECT ContentDocumentId FROM ContentVersion WHERE Id = '{}'",
            soql(&id)
        ))?;
        let document = again
            .first()
            .map(|r| text(r, "ContentDocumentId"))
            .unwrap_or_default();
        Ok((id, document))
    }

    fn set_status(
        &self,
        registration: &str,
        from: &str,
        to: &str,
        resumed: bool,
    ) -> Result<String, Failure> {
        let c = &self.cfg;
        let field = &c.registration_status_field;
        let path = format!(
            "/sobjects/{}/{}/{}?fields=Id,{field}",
            c.registration_object,
            c.registration_key_field,
            encode(registration)
        );
        let record = self.call("GET", &path, None)?;
        let id = text(&record, "Id");
        let now = text(&record, field);
        if now == to && resumed {
            // Our own change, made just before a crash.
            return Ok(format!(
                "{} {id}: {from} -> {to} (before a restart)",
                c.registration_object
            ));
        }
        if now != from {
            return Err(Failure::Refused(format!(
                "registration {registration} is {now:?}, not {from:?}: its status was not changed"
            )));
        }
        self.call(
            "PATCH",
            &format!("/sobjects/{}/{id}", c.registration_object),
            Some(&json!({ field: to })),
        )?;
        Ok(format!("{} {id}: {from} -> {to}", c.registration_object))
    }

    fn post_note(
        &self,
        opportunity: &str,
        user: &str,
        text_: &str,
        file: Option<&str>,
        marker: &str,
    ) -> Result<String, Failure> {
        let feed = self.call(
            "GET",
            &format!("/chatter/feeds/record/{opportunity}/feed-elements?pageSize=100"),
            None,
        )?;
        let tag = format!("[{marker}]");
        let elements = feed["elements"].as_array().cloned().unwrap_or_default();
        if let Some(e) = elements
            .iter()
            .find(|e| e["body"]["text"].as_str().is_some_and(|t| t.contains(&tag)))
        {
            return Ok(format!(
                "feed item {} on {opportunity} (posted before)",
                text(e, "id")
            ));
        }
        let users = self.query(&format!(
            "SELECT Id FROM User WHERE Email = '{}' AND IsActive = true",
            soql(user)
        ))?;
        let [person] = &users[..] else {
            return Err(Failure::Refused(format!(
                "{} active users with the email {user}",
                users.len()
            )));
        };
        let mut body = json!({
            "body": {"messageSegments": [
                {"type": "Mention", "id": text(person, "Id")},
                {"type": "Text", "text": format!(" {text_} {tag}")},
            ]},
            "feedElementType": "FeedItem",
            "subjectId": opportunity,
        });
        if let Some(f) = file {
            body["capabilities"] = json!({"files": {"items": [{"id": f}]}});
        }
        let posted = self.call("POST", "/chatter/feed-elements", Some(&body))?;
        Ok(format!(
            "feed item {} on {opportunity}",
            text(&posted, "id")
        ))
    }

    fn query(&self, soql: &str) -> Result<Vec<Value>, Failure> {
        let q = form_urlencoded::byte_serialize(soql.as_bytes()).collect::<String>();
        let found = self.call("GET", &format!("/query?q={q}"), None)?;
        Ok(found["records"].as_array().cloned().unwrap_or_default())
    }

    /// One REST call with the retries the API asks for.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let url = format!(
            "{}/services/data/v{}{path}",
            self.cfg.instance_url.trim_end_matches('/'),
            self.cfg.api_version
        );
        let mut renewed = false;
        for attempt in 1..=TRIES {
            let token = self.token()?;
            let (status, answer) = self.send(method, &url, &token, body)?;
            let code = error_code(&answer);
            match status {
                200..=299 => return Ok(answer),
                401 if !renewed => {
                    renewed = true;
                    *self.token.lock().expect("token") = None;
                    continue;
                }
                429 | 500..=599 => {}
                403 if code == "REQUEST_LIMIT_EXCEEDED" => {}
                _ => {
                    return Err(Failure::Refused(format!(
                        "{method} {path}: HTTP {status} {code}: {}",
                        error_message(&answer)
                    )))
                }
            }
            if attempt < TRIES {
                let pause =
                    backoff::delay(attempt, Duration::from_millis(500), Duration::from_secs(4));
                tracing::warn!(
                    "Salesforce {method} {path}: HTTP {status} {code}; again in {} ms",
                    pause.as_millis()
                );
                std::thread::sleep(pause);
            } else {
                return Err(Failure::Unreachable(format!(
                    "{method} {path}: HTTP {status} {code} after {TRIES} tries"
                )));
            }
        }
        Err(Failure::Unreachable(format!(
            "{method} {path}: the session could not be renewed"
        )))
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), Failure> {
        let auth = format!("Bearer {token}");
        let result = match (method, body) {
            ("GET", _) => self.agent.get(url).header("Authorization", &auth).call(),
            (m, Some(b)) => {
                let req = match m {
                    "PATCH" => self.agent.patch(url),
                    _ => self.agent.post(url),
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(serde_json::to_vec(b).unwrap_or_default())
            }
            (m, None) => return Err(Failure::Refused(format!("{m} without a body"))),
        };
        let mut response = result.map_err(|e| Failure::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// The session token, signing in when there is none (client credentials).
    fn token(&self) -> Result<String, Failure> {
        if let Some(t) = self.token.lock().expect("token").clone() {
            return Ok(t);
        }
        let secret = self
            .cfg
            .client_secret
            .read()
            .map_err(|e| Failure::Unreachable(format!("client secret: {e}")))?;
        let url = format!(
            "{}/services/oauth2/token",
            self.cfg.instance_url.trim_end_matches('/')
        );
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.cfg.client_id.as_str()),
            ("client_secret", secret.as_str()),
        ];
        let (status, body) = crate::shell::oauth::post_form(&self.agent, &url, &form)
            .map_err(Failure::Unreachable)?;
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let Some(token) = answer["access_token"].as_str().filter(|_| status == 200) else {
            let why = answer["error_description"]
                .as_str()
                .or(answer["error"].as_str())
                .unwrap_or("no token");
            return Err(Failure::Unreachable(format!(
                "sign-in refused: HTTP {status}: {why}"
            )));
        };
        *self.token.lock().expect("token") = Some(token.to_string());
        Ok(token.to_string())
    }
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Salesforce's errors are a list of {message, errorCode}.
fn error_code(v: &Value) -> String {
    v[0]["errorCode"].as_str().unwrap_or_default().to_string()
}

fn error_message(v: &Value) -> String {
    v[0]["message"]
        .as_str()
        .unwrap_or("(no message)")
        .to_string()
}

/// A value inside a SOQL string literal.
fn soql(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
