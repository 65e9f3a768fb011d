//! A loopback stand-in for the parts of Salesforce's REST API that triage uses, written
//! from the REST API, SOQL and Connect REST API references: the request shapes, status
//! codes and error bodies shown there (INVALID_SESSION_ID, REQUEST_LIMIT_EXCEEDED,
//! FIELD_CUSTOM_VALIDATION_EXCEPTION, DUPLICATE_VALUE, NOT_FOUND, MALFORMED_QUERY,
//! INVALID_FIELD). Strict about what it accepts. A contract test, not Salesforce.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

pub const CLIENT_ID: &str = "3MVG9triageDeskApp";
pub const CLIENT_SECRET: &str = "sf-secret-7Kq2Lp9Wx";
const V: &str = "/services/data/v62.0";

#[derive(Debug, Clone)]
pub struct ContentVersion {
    pub id: String,
    pub document_id: String,
    pub title: String,
    pub description: String,
    pub first_publish: String,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub id: String,
    pub deal_id: String,
    pub status: String,
    /// A validation rule refuses any change to it.
    pub locked: bool,
}

#[derive(Debug, Clone)]
pub struct FeedItem {
    pub id: String,
    pub subject: String,
    pub text: String,
    pub mentions: Vec<String>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Every session ends: the next call gets 401 INVALID_SESSION_ID.
    ExpireSessions,
    LimitExceeded,
    Unavailable,
}

#[derive(Default)]
pub struct State {
    tokens: Vec<String>,
    pub token_requests: usize,
    pub versions: Vec<ContentVersion>,
    pub registrations: Vec<Registration>,
    pub users: Vec<(String, String)>,
    pub feed: Vec<FeedItem>,
    pub faults: VecDeque<Fault>,
    pub patches: usize,
    /// Killed right after a change is applied, before the answer: (method and path
    /// prefix, process id); each used once.
    pub kill_on: Vec<(String, u32)>,
    pub refused: Vec<String>,
    next: usize,
}

#[derive(Clone)]
pub struct Org {
    pub state: Arc<Mutex<State>>,
    pub port: u16,
}

impl Org {
    pub fn start() -> Org {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let org = Org {
            state: Arc::new(Mutex::new(State::default())),
            port,
        };
        let served = org.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let org = served.clone();
                std::thread::spawn(move || org.serve(conn));
            }
        });
        org
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn serve(&self, conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.is_empty() {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut length, mut auth, mut ctype) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or(("", ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => auth = value.trim().to_string(),
                "content-type" => ctype = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let (status, answer) = self.handle(&method, &target, &auth, &ctype, &body);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Error",
        };
        let text = if status == 204 {
            String::new()
        } else {
            answer.to_string()
        };
        let mut conn = conn;
        let _ = write!(conn, "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len());
    }

    fn handle(
        &self,
        method: &str,
        target: &str,
        auth: &str,
        ctype: &str,
        body: &[u8],
    ) -> (u16, Value) {
        if method == "POST" && target == "/services/oauth2/token" {
            return self.token(body);
        }
        let Some(path) = target.strip_prefix(V) else {
            return (
                404,
                errors("NOT_FOUND", "The requested resource does not exist"),
            );
        };
        let mut s = self.state.lock().unwrap();
        let bearer = auth.strip_prefix("Bearer ").unwrap_or("");
        if !s.tokens.iter().any(|t| t == bearer) {
            return (
                401,
                errors("INVALID_SESSION_ID", "Session expired or invalid"),
            );
        }
        match s.faults.pop_front() {
            Some(Fault::ExpireSessions) => {
                s.tokens.clear();
                return (
                    401,
                    errors("INVALID_SESSION_ID", "Session expired or invalid"),
                );
            }
            Some(Fault::LimitExceeded) => {
                return (
                    403,
                    errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                )
            }
            Some(Fault::Unavailable) => {
                return (503, errors("SERVER_UNAVAILABLE", "Server unavailable"))
            }
            None => {}
        }
        if method != "GET" && !ctype.starts_with("application/json") {
            return (
                415,
                errors(
                    "UNSUPPORTED_MEDIA_TYPE",
                    "Content-Type must be application/json",
                ),
            );
        }
        let json: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return (400, errors("JSON_PARSER_ERROR", &e.to_string())),
            }
        };
        let answer = route(&mut s, method, path, &json);
        if answer.0 < 300 && method != "GET" {
            let key = format!("{method} {path}");
            if let Some(i) = s
                .kill_on
                .iter()
                .position(|(p, _)| key.starts_with(p.as_str()))
            {
                let (_, pid) = s.kill_on.remove(i);
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if answer.0 >= 400 {
            s.refused.push(format!("{method} {path}: {}", answer.1));
        }
        answer
    }

    fn token(&self, body: &[u8]) -> (u16, Value) {
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let mut s = self.state.lock().unwrap();
        s.token_requests += 1;
        if get("grant_type") != "client_credentials" {
            return (
                400,
                json!({"error": "unsupported_grant_type", "error_description": "grant type not supported"}),
            );
        }
        if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
            return (
                400,
                json!({"error": "invalid_client", "error_description": "invalid client credentials"}),
            );
        }
        s.next += 1;
        let token = format!("00Dxx0000001gPL!AR8AQ.token{}", s.next);
        s.tokens.push(token.clone());
        (
            200,
            json!({"access_token": token, "instance_url": self.url(), "id": format!("{}/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS", self.url()),
                     "token_type": "Bearer", "issued_at": "1796119200000", "signature": "c2lnbmF0dXJl"}),
        )
    }
}

fn errors(code: &str, message: &str) -> Value {
    json!([{"message": message, "errorCode": code}])
}

fn id(prefix: &str, s: &mut State) -> String {
    s.next += 1;
    format!("{prefix}xx{:011}AAA", s.next)
}

fn route(s: &mut State, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let segments: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["query"]) => query_soql(s, query),
        ("POST", ["sobjects", "ContentVersion"]) => insert_version(s, body),
        ("GET", ["sobjects", "Deal_Registration__c", "Deal_ID__c", deal]) => {
            if query != "fields=Id,Status__c" {
                return (
                    400,
                    errors("INVALID_FIELD", &format!("unexpected query {query}")),
                );
            }
            match s.registrations.iter().find(|r| r.deal_id == *deal) {
                Some(r) => (
                    200,
                    json!({"attributes": {"type": "Deal_Registration__c", "url": format!("{V}/sobjects/Deal_Registration__c/{}", r.id)}, "Id": r.id, "Status__c": r.status}),
                ),
                None => (
                    404,
                    errors("NOT_FOUND", "The requested resource does not exist"),
                ),
            }
        }
        ("PATCH", ["sobjects", "Deal_Registration__c", rid]) => {
            let Some(obj) = body
                .as_object()
                .filter(|o| o.len() == 1 && o.contains_key("Status__c"))
            else {
                return (
                    400,
                    errors("INVALID_FIELD", "only Status__c may be set here"),
                );
            };
            let Some(r) = s.registrations.iter_mut().find(|r| r.id == *rid) else {
                return (
                    404,
                    errors("NOT_FOUND", "The requested resource does not exist"),
                );
            };
            if r.locked {
                return (
                    400,
                    json!([{"message": "A closed registration cannot be changed", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "fields": []}]),
                );
            }
            r.status = obj["Status__c"].as_str().unwrap_or("").to_string();
            s.patches += 1;
            (204, Value::Null)
        }
        ("GET", ["chatter", "feeds", "record", subject, "feed-elements"]) => {
            let elements: Vec<Value> = s
                .feed
                .iter()
                .filter(|f| f.subject == *subject)
                .map(|f| json!({"id": f.id, "body": {"text": f.text}}))
                .collect();
            (200, json!({"elements": elements, "nextPageUrl": null}))
        }
        ("POST", ["chatter", "feed-elements"]) => post_feed(s, body),
        _ => (
            404,
            errors("NOT_FOUND", "The requested resource does not exist"),
        ),
    }
}

fn query_soql(s: &mut State, query: &str) -> (u16, Value) {
    let q: String = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let literal = |prefix: &str, suffix: &str| -> Option<String> {
        let rest = q.strip_prefix(prefix)?.strip_suffix(suffix)?;
        Some(rest.replace("\\'", "'").replace("\\\\", "\\"))
    };
    let records: Vec<Value> = if let Some(d) = literal(
        "SELECT Id, ContentDocumentId FROM ContentVersion WHERE Description = '",
        "'",
    ) {
        s.versions.iter().filter(|v| v.description == d).map(|v| json!({"attributes": {"type": "ContentVersion"}, "Id": v.id, "ContentDocumentId": v.document_id})).collect()
    } else if let Some(i) = literal(
        "SELECT ContentDocumentId FROM ContentVersion WHERE Id = '",
        "'",
    ) {
        s.versions.iter().filter(|v| v.id == i).map(|v| json!({"attributes": {"type": "ContentVersion"}, "ContentDocumentId": v.document_id})).collect()
    } else if let Some(e) = literal(
        "SELECT Id FROM User WHERE Email = '",
        "' AND IsActive = true",
    ) {
        s.users
            .iter()
            .filter(|(_, m)| *m == e)
            .map(|(i, _)| json!({"attributes": {"type": "User"}, "Id": i}))
            .collect()
    } else {
        return (
            400,
            errors("MALFORMED_QUERY", &format!("unexpected query: {q}")),
        );
    };
    (
        200,
        json!({"totalSize": records.len(), "done": true, "records": records}),
    )
}

fn insert_version(s: &mut State, body: &Value) -> (u16, Value) {
    use base64::Engine;
    const FIELDS: [&str; 5] = [
        "Title",
        "PathOnClient",
        "VersionData",
        "Description",
        "FirstPublishLocationId",
    ];
    let Some(obj) = body.as_object() else {
        return (400, errors("JSON_PARSER_ERROR", "an object expected"));
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return (
            400,
            errors(
                "INVALID_FIELD",
                &format!("No such column '{k}' on sobject of type ContentVersion"),
            ),
        );
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text("VersionData")) else {
        return (
            400,
            errors("INVALID_FIELD_FOR_INSERT_UPDATE", "VersionData: not base64"),
        );
    };
    if text("PathOnClient").is_empty() || bytes.is_empty() {
        return (
            400,
            errors(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [PathOnClient, VersionData]",
            ),
        );
    }
    let publish = text("FirstPublishLocationId");
    if !publish.starts_with("006") || !(publish.len() == 15 || publish.len() == 18) {
        return (
            400,
            errors(
                "FIELD_INTEGRITY_EXCEPTION",
                "First Publish Location ID: id value of incorrect type",
            ),
        );
    }
    let description = text("Description");
    if let Some(v) = s
        .versions
        .iter()
        .find(|v| !description.is_empty() && v.description == description)
    {
        let id = v.id.clone();
        return (
            400,
            errors(
                "DUPLICATE_VALUE",
                &format!(
                    "duplicate value found: Description duplicates value on record with id: {id}"
                ),
            ),
        );
    }
    let (vid, did) = (id("068", s), id("069", s));
    s.versions.push(ContentVersion {
        id: vid.clone(),
        document_id: did,
        title: text("Title"),
        description,
        first_publish: publish,
        bytes: bytes.len(),
    });
    (201, json!({"id": vid, "success": true, "errors": []}))
}

fn post_feed(s: &mut State, body: &Value) -> (u16, Value) {
    if body["feedElementType"] != "FeedItem"
        || !body["subjectId"]
            .as_str()
            .is_some_and(|x| x.starts_with("006"))
    {
        return (
            400,
            errors(
                "INVALID_API_INPUT",
                "feedElementType FeedItem and an opportunity subjectId expected",
            ),
        );
    }
    let segments = body["body"]["messageSegments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut text = String::new();
    let mut mentions = Vec::new();
    for seg in &segments {
        match seg["type"].as_str() {
            Some("Text") => text.push_str(seg["text"].as_str().unwrap_or("")),
            Some("Mention") => {
                let who = seg["id"].as_str().unwrap_or("");
                if !s.users.iter().any(|(i, _)| i == who) {
                    return (400, errors("INVALID_API_INPUT", "Mention: unknown user"));
                }
                mentions.push(who.to_string());
            }
            _ => return (400, errors("INVALID_API_INPUT", "unknown message segment")),
        }
    }
    let files: Vec<String> = body["capabilities"]["files"]["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if files
        .iter()
        .any(|f| !s.versions.iter().any(|v| &v.document_id == f))
    {
        return (
            400,
            errors("INVALID_API_INPUT", "files: unknown ContentDocument"),
        );
    }
    let fid = id("0D5", s);
    s.feed.push(FeedItem {
        id: fid.clone(),
        subject: body["subjectId"].as_str().unwrap_or("").to_string(),
        text: text.clone(),
        mentions,
        files,
    });
    (
        201,
        json!({"id": fid, "body": {"text": text}, "feedElementType": "FeedItem"}),
    )
}
