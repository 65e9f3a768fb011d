//! What can be decided about a message before anyone reads it: is it automatic mail we must
//! never answer (RFC 3834), and can we trust who it claims to be from?

use crate::config::Config;
use crate::message::{domain_of, Mail};

/// Reasons the message must never get an automatic answer; empty when it may.
pub fn loop_bait(mail: &Mail, config: &Config) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(v) = mail.header("Auto-Submitted") {
        if !v.trim().to_ascii_lowercase().starts_with("no") {
            why.push(format!("Auto-Submitted: {v}"));
        }
    }
    if let Some(v) = mail.header("Precedence") {
        let p = v.trim().to_ascii_lowercase();
        if ["bulk", "junk", "list", "auto_reply"].contains(&p.as_str()) {
            why.push(format!("Precedence: {v}"));
        }
    }
    for h in [
        "List-Id",
        "List-Unsubscribe",
        "List-Post",
        "List-Help",
        "List-Subscribe",
        "List-Owner",
    ] {
        if mail.header(h).is_some() {
            why.push(format!("mailing list ({h} header)"));
            break;
        }
    }
    if let Some(v) = mail.header("X-Auto-Response-Suppress") {
        let lower = v.to_ascii_lowercase();
        if ["all", "autoreply", "oof"]
            .iter()
            .any(|k| lower.split([',', ' ']).any(|t| t.trim() == *k))
        {
            why.push(format!("X-Auto-Response-Suppress: {v}"));
        }
    }
    for h in ["X-Autoreply", "X-Autorespond", "X-Auto-Reply"] {
        if mail.header(h).is_some() {
            why.push(format!("auto-reply ({h} header)"));
        }
    }
    if let Some(rp) = mail.header("Return-Path") {
        let rp = rp.trim();
        if rp == "<>" {
            why.push("empty Return-Path (a bounce)".into());
        } else {
            // Our own mail come back (a forwarder, a copy rule) under a partner's From.
            let envelope = rp.trim_matches(['<', '>']).to_ascii_lowercase();
            if config.own_addresses().contains(&envelope) {
                why.push(format!("Return-Path is the desk's own address {envelope}"));
            }
        }
    }
    if let Some(sender) = &mail.sender {
        if config.own_addresses().contains(&sender.address) {
            why.push(format!(
                "Sender is the desk's own address {}",
                sender.address
            ));
        }
    }
    if mail.content_type == "multipart/report" {
        why.push("multipart/report (a delivery or read report)".into());
    }
    if let Some(from) = &mail.from {
        let local = from.address.split('@').next().unwrap_or("");
        if is_robot(local) {
            why.push(format!("automated sender {}", from.address));
        }
        let own = config.own_addresses();
        if own.contains(&from.address) {
            why.push(format!("sent by the desk's own address {}", from.address));
        }
    }
    if let Some(x) = mail.header("X-Loop") {
        let own = config.own_addresses();
        if own
            .iter()
            .any(|a| x.to_ascii_lowercase().contains(a.as_str()))
        {
            why.push(format!("X-Loop: {x}"));
        }
    }
    let ours = format!("@{}>", config.desk.message_id_domain.to_ascii_lowercase());
    let ours_bare = format!("@{}", config.desk.message_id_domain.to_ascii_lowercase());
    let in_thread = mail
        .in_reply_to
        .iter()
        .chain(mail.references.iter())
        .any(|id| {
            let id = id.to_ascii_lowercase();
            id.ends_with(&ours) || id.ends_with(&ours_bare)
        });
    if in_thread {
        why.push("a reply in a thread the service already answered".into());
    }
    why
}

/// A bounce of one of our own messages: the addresses it could not be delivered to, which
/// then get no automatic answer for a while (an answer to them would only bounce again,
/// or worse, reach an auto-responder behind a forwarding address).
pub fn bounced_answer(mail: &Mail, config: &Config) -> Vec<String> {
    let Some(report) = &mail.delivery_report else {
        return Vec::new();
    };
    let ours = format!("@{}", config.desk.message_id_domain.to_ascii_lowercase());
    let about_ours = report
        .original_ids
        .iter()
        .chain(mail.in_reply_to.iter())
        .chain(mail.references.iter())
        .any(|id| {
            id.trim_end_matches('>')
                .to_ascii_lowercase()
                .ends_with(&ours)
        });
    if about_ours {
        report.failed.clone()
    } else {
        Vec::new()
    }
}

/// Local parts that belong to machines, not people.
fn is_robot(local: &str) -> bool {
    let l = local.to_ascii_lowercase();
    let compact: String = l.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    compact.starts_with("noreply")
        || compact.starts_with("donotreply")
        || compact.starts_with("dontreply")
        || compact == "mailerdaemon"
        || compact == "postmaster"
        || compact.starts_with("bounce")
        || l.ends_with("-request")
        || l.starts_with("owner-")
        || compact == "listserv"
        || compact == "majordomo"
        || compact == "autoreply"
        || compact == "autoresponder"
        || compact.starts_with("notification")
        || compact == "daemon"
}

/// Who the sender provably is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The From domain when authenticated (or when the config accepts unauthenticated mail).
    pub domain: Option<String>,
    /// Why nothing may be sent automatically, when that is the case.
    pub problem: Option<String>,
    /// What the trusted Authentication-Results said, for the explanation.
    pub evidence: String,
}

/// Reads the Authentication-Results of the configured receiving server only. The first
/// header carrying its authserv-id is the one it added on top; copies further down, or
/// from other servers, were written by someone else and may be forged.
pub fn sender(mail: &Mail, config: &Config) -> Sender {
    let Some(from) = &mail.from else {
        return Sender {
            domain: None,
            problem: Some("no From address".into()),
            evidence: String::new(),
        };
    };
    let from_domain = from.domain().to_string();
    let mut problem = None;
    let mut evidence = String::from("no Authentication-Results from the receiving server");
    let mut verified = false;
    if let Some(authserv) = &config.trust.authserv_id {
        let ours = mail.headers_named("Authentication-Results").find(|v| {
            let id = v
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            id.eq_ignore_ascii_case(authserv)
        });
        if let Some(ar) = ours {
            let dmarc = result_of(ar, "dmarc");
            let header_from = property(ar, "header.from");
            evidence = format!("{authserv}: dmarc={}", dmarc.as_deref().unwrap_or("(none)"));
            match dmarc.as_deref() {
                Some("pass") => match header_from {
                    Some(d) if !d.eq_ignore_ascii_case(&from_domain) => {
                        problem = Some(format!(
                            "DMARC passed for {d}, not for the From domain {from_domain}"
                        ));
                    }
                    _ => verified = true,
                },
                Some(other) => {
                    problem = Some(format!("DMARC {other} for {from_domain} (per {authserv})"))
                }
                None => {
                    problem = Some(format!("no DMARC result for {from_domain} from {authserv}"))
                }
            }
        }
    }
    if !verified && problem.is_none() && config.trust.require_authentication {
        problem = Some(format!("sender {from_domain} is not verified: {evidence}"));
    }
    // A Reply-To elsewhere would send our answer, and any internal names in it, to a
    // domain nobody verified.
    if problem.is_none() {
        if let Some(rt) = mail
            .reply_to
            .iter()
            .find(|r| !r.domain().eq_ignore_ascii_case(&from_domain))
        {
            problem = Some(format!(
                "Reply-To {} is on another domain than From ({from_domain})",
                rt.address
            ));
        }
    }
    let domain = if problem.is_none() {
        Some(from_domain)
    } else {
        None
    };
    Sender {
        domain,
        problem,
        evidence,
    }
}

/// `dmarc=pass` -> "pass". Method names are case-insensitive; results are lower-cased.
fn result_of(ar: &str, method: &str) -> Option<String> {
    ar.split(';').skip(1).find_map(|clause| {
        let clause = clause.trim();
        let (m, rest) = clause.split_once('=')?;
        if m.trim().eq_ignore_ascii_case(method) {
            Some(
                rest.split(|c: char| c.is_whitespace() || c == '(')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase(),
            )
        } else {
            None
        }
    })
}

fn property(ar: &str, name: &str) -> Option<String> {
    ar.split(';').skip(1).find_map(|clause| {
        let clause = clause.trim();
        let (m, _) = clause.split_once('=')?;
        if !m.trim().eq_ignore_ascii_case("dmarc") {
            return None;
        }
        clause.split_whitespace().find_map(|tok| {
            let (k, v) = tok.split_once('=')?;
            if k.eq_ignore_ascii_case(name) {
                Some(domain_of(v).to_string())
                    .filter(|d| !d.is_empty())
                    .or(Some(v.trim_matches(['"', ';']).to_string()))
            } else {
                None
            }
        })
    })
}
