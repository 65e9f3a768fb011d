//! What can be decided about a message before anyone reads it: is it automatic mail we must
//! never answer (RFC 3834), and can we trust who it claims to be from?

use std::sync::LazyLock;

use regex::Regex;

use crate::core::config::Config;
use crate::core::message::{domain_of, Mail};

/// What the guards say about a message, worked out once: from its headers and text, before
/// any document is read.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Why no person wrote it (empty when a person did).
    pub machine: Vec<String>,
    /// Why it is a reply in a thread we answered, when it is.
    pub thread: Option<String>,
    pub sender: Sender,
}

impl Gate {
    pub fn of(mail: &Mail, config: &Config) -> Gate {
        Gate {
            machine: machine_mail(mail, config),
            thread: in_our_thread(mail, config),
            sender: sender(mail, config),
        }
    }

    /// Reasons the message must never get an automatic answer; empty when it may.
    pub fn loop_bait(&self) -> Vec<String> {
        self.machine
            .iter()
            .cloned()
            .chain(self.thread.clone())
            .collect()
    }
}

/// Reasons the message must never get an automatic answer; empty when it may.
pub fn loop_bait(mail: &Mail, config: &Config) -> Vec<String> {
    Gate::of(mail, config).loop_bait()
}

/// Reasons to think no person wrote this message (auto-replies, bounces, list mail, ticket
/// systems, our own mail come back). Such mail is category `other`: it asks nothing.
pub fn machine_mail(mail: &Mail, config: &Config) -> Vec<String> {
    let mut why = Vec::new();
    // Every copy counts: a second header may be the one that tells the truth.
    for v in mail.headers_named("Auto-Submitted") {
        if !v.trim().to_ascii_lowercase().starts_with("no") {
            why.push(format!("Auto-Submitted: {}", shown(v)));
            break;
        }
    }
    for v in mail
        .headers_named("Precedence")
        .chain(mail.headers_named("X-Precedence"))
    {
        let p = first_token(v);
        if ["bulk", "junk", "list", "auto_reply", "auto-reply"].contains(&p.as_str()) {
            why.push(format!("Precedence: {}", shown(v)));
            break;
        }
    }
    if let Some(h) = LIST_HEADERS.iter().find(|h| mail.header(h).is_some()) {
        why.push(format!("mailing list ({h} header)"));
    }
    for v in mail.headers_named("X-Auto-Response-Suppress") {
        let lower = v.to_ascii_lowercase();
        if ["all", "autoreply", "oof"]
            .iter()
            .any(|k| lower.split([',', ' ', ';']).any(|t| t.trim() == *k))
        {
            why.push(format!("X-Auto-Response-Suppress: {}", shown(v)));
            break;
        }
    }
    if let Some(h) = ROBOT_HEADERS.iter().find(|h| mail.header(h).is_some()) {
        why.push(format!("automatic mail ({h} header)"));
    }
    if let Some((h, v)) = ticket_system(mail) {
        why.push(format!("a ticket system's message ({h}: {})", shown(v)));
    }
    own_mail(mail, config, &mut why);
    if mail.content_type == "multipart/report" {
        why.push("multipart/report (a delivery or read report)".into());
    }
    if let Some(from) = &mail.from {
        let local = from.address.split('@').next().unwrap_or("");
        if is_robot(local) {
            why.push(format!("automated sender {}", from.address));
        }
    }
    if let Some(m) = AUTOMATIC_SUBJECT.find(&mail.subject) {
        why.push(format!("automatic subject ({:?})", m.as_str().trim()));
    }
    if let Some(m) = AUTOMATIC_TEXT.find(&mail.new_text) {
        why.push(format!("automatic text ({:?})", m.as_str().trim()));
    }
    why
}

/// The desk's own mail come back: its address as sender, envelope or loop marker.
fn own_mail(mail: &Mail, config: &Config, why: &mut Vec<String>) {
    let own = config.own_addresses();
    if let Some(rp) = mail.header("Return-Path") {
        let rp = rp.trim();
        if rp == "<>" {
            why.push("empty Return-Path (a bounce)".into());
        } else {
            // Our own mail come back (a forwarder, a copy rule) under a partner's From.
            let envelope = rp.trim_matches(['<', '>']).to_ascii_lowercase();
            if own.contains(&envelope) {
                why.push(format!("Return-Path is the desk's own address {envelope}"));
            }
        }
    }
    if let Some(sender) = mail.sender.as_ref().filter(|s| own.contains(&s.address)) {
        why.push(format!(
            "Sender is the desk's own address {}",
            sender.address
        ));
    }
    if let Some(from) = mail.from.as_ref().filter(|f| own.contains(&f.address)) {
        why.push(format!("sent by the desk's own address {}", from.address));
    }
    for x in mail.headers_named("X-Loop") {
        if own
            .iter()
            .any(|a| x.to_ascii_lowercase().contains(a.as_str()))
        {
            why.push(format!("X-Loop: {}", shown(x)));
            break;
        }
    }
}

/// A reply in a thread the service already answered: by its references, or, when a client
/// dropped them, by our own answer quoted in it (our Message-ID domain or our signature).
pub fn in_our_thread(mail: &Mail, config: &Config) -> Option<String> {
    let domain = config.desk.message_id_domain.to_ascii_lowercase();
    let ours = format!("@{domain}");
    let in_thread = mail
        .in_reply_to
        .iter()
        .chain(mail.references.iter())
        .any(|id| {
            id.trim_end_matches('>')
                .to_ascii_lowercase()
                .ends_with(&ours)
        });
    if in_thread {
        return Some("a reply in a thread the service already answered".into());
    }
    let text = squeeze(&mail.text);
    let signature = squeeze(&config.desk.signature);
    let quotes_us = text.contains(&ours)
        || (signature.len() >= 20 && text.contains(&signature))
        || crate::core::threading::ANSWER_MARK.is_match(&mail.text);
    quotes_us.then(|| "it quotes an answer the service sent (a reply in its thread)".into())
}

/// Lower case, quote marks and whitespace removed: a quoted signature still matches.
/// ASCII text goes byte by byte (the same result: an ASCII character's white space
/// and lower case are its `char`'s), any other text char by char.
fn squeeze(s: &str) -> String {
    if s.is_ascii() {
        let kept = s
            .bytes()
            .filter(|b| !(*b as char).is_whitespace() && *b != b'>');
        return kept.map(|b| b.to_ascii_lowercase() as char).collect();
    }
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '>')
        .flat_map(char::to_lowercase)
        .collect()
}

fn first_token(v: &str) -> String {
    v.trim()
        .split([';', ' ', '\t', ','])
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_ascii_lowercase()
}

/// Header text as shown in a reason: one line, bounded.
fn shown(v: &str) -> String {
    let one: String = v.chars().filter(|c| !c.is_control()).take(80).collect();
    one.trim().to_string()
}

const LIST_HEADERS: &[&str] = &[
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "List-Archive",
    "X-Mailing-List",
    "X-List",
    "Mailing-List",
    "X-Campaign",
    "X-CampaignID",
    "X-Mailchimp-Campaign",
    "X-MC-User",
    "X-Newsletter",
    "Feedback-ID",
];

/// Headers only machines write.
const ROBOT_HEADERS: &[&str] = &[
    "X-Autoreply",
    "X-Autorespond",
    "X-Auto-Reply",
    "X-Autoresponder",
    "X-Autogenerated",
    "X-Auto-Generated",
    "X-AutoReply-From",
    "X-Mail-Autoreply",
    "X-Autoresponse",
    "X-Auto-Response",
    "X-FC-MachineGenerated",
    "X-MS-Exchange-Inbox-Rules-Loop",
    "X-MS-Exchange-Generated-Message-Source",
    "X-Failed-Recipients",
    "X-Report-Abuse",
    "X-Loop-Detect",
];

/// Help-desk and ticket systems answer with their own headers (OTRS/Znuny, Zendesk,
/// Freshdesk, RT, Jira Service Management, ServiceNow, osTicket, Zammad, HubSpot).
fn ticket_system(mail: &Mail) -> Option<(&str, &str)> {
    const PREFIXES: &[&str] = &[
        "x-otrs-",
        "x-znuny-",
        "x-zendesk-",
        "x-freshdesk-",
        "x-rt-",
        "x-jsd-",
        "x-jira-",
        "x-servicenow-",
        "x-osticket-",
        "x-zammad-",
        "x-hs-",
        "x-helpscout-",
        "x-kayako-",
    ];
    mail.headers.iter().find_map(|(n, v)| {
        let lower = n.to_ascii_lowercase();
        let by_name = PREFIXES.iter().any(|p| lower.starts_with(p))
            || lower == "rt-ticket"
            || lower == "x-ticket-id";
        let by_mailer = (lower == "x-mailer" || lower == "user-agent") && TICKET_MAILER.is_match(v);
        (by_name || by_mailer).then_some((n.as_str(), v.as_str()))
    })
}

// `(?-u:\b)`, an ASCII word boundary, in these patterns: with a Unicode `\b` the regex
// crate leaves its DFA for a backtracker on any text with a non-ASCII letter (every
// German, French or Japanese message), which made these checks the deciders' second
// cost after base64.
static TICKET_MAILER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?-u:\b)(?:otrs|znuny|zendesk|freshdesk|request\s+tracker|servicenow|osticket|zammad|jira|kayako|help\s*scout|mailchimp|sendgrid|hubspot)(?-u:\b)")
        .expect("ticket mailer")
});

/// Subjects auto-responders, report generators and ticket systems write, in the desk's
/// languages (and the neighbours Outlook and Gmail use for them).
static AUTOMATIC_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*(?:\[[^\]]{1,40}\]\s*)*(?:(?:re|aw|fw|fwd|wg|tr)\s*:\s*)*(?:
            auto(?:matic|matische|matique|mática|matica|matico)?[\s_-]*(?:reply|response|answer|antwort|réponse|reponse|resposta|respuesta|risposta)
          | (?:réponse|reponse|resposta|respuesta|risposta)\s+autom[aá]ti(?:que|ca)
          | out\s+of\s+(?:the\s+)?office | ooo(?-u:\b) | on\s+vacation | away\s+from | abwesen | abwesenheit | nicht\s+im\s+b[üu]ro
          | absen(?:ce|t)(?-u:\b) | (?:je\s+suis\s+)?absent | en\s+cong[ée]
          | aus[eê]n(?:te|cia) | fora\s+do\s+escrit[oó]rio | f[ée]rias
          | 自動(?:応答|返信|送信) | 不在
          | undeliver(?:able|ed) | undelivered\s+mail | delivery\s+(?:status\s+notification|failure|has\s+failed|failed|delayed|report)
          | mail\s+delivery\s+(?:failed|failure|system) | returned\s+mail | failure\s+notice | non\s*-?\s*remis | non\s+distribu
          | unzustellbar | nicht\s+zustellbar | n[aã]o\s+(?:foi\s+)?(?:poss[ií]vel\s+)?entreg | falha\s+na\s+entrega | 配信不能 | 配送不能
          | recall\s*: | r[üu]ckruf\s*:
          | (?:read|gelesen|lu|lido|le[ií]do|开封|開封済み)\s*: | read\s+receipt | lesebest[äa]tigung | accus[ée]\s+de\s+lecture | confirma[cç][aã]o\s+de\s+leitura
        )",
    )
    .expect("automatic subject")
});

/// What auto-responders and ticket systems write in the body, in the desk's languages.
/// Looked for in the new text only: a person quoting such a notice still asks something.
static AUTOMATIC_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
            (?:this\s+is\s+an?\s+)?auto(?:matic(?:ally)?)?[\s-]*(?:generated|reply|response)(?-u:\b).{0,40}(?-u:\b)(?:message|e-?mail|notification)
          | i\s+(?:am|will\s+be)\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|on\s+(?:annual\s+|parental\s+)?leave|on\s+vacation)(?-u:\b).{0,60}(?-u:\b)(?:until|till|returning|return|back)
          | (?:we|i)\s+have\s+(?:successfully\s+)?received\s+your\s+(?:request|message|e-?mail|ticket|inquiry|enquiry)
          | your\s+(?:request|ticket|case)\s+(?:\#\S+\s+)?has\s+been\s+(?:received|created|logged|opened)
          | (?:please\s+)?do\s+not\s+reply\s+to\s+this\s+(?:e-?mail|message)
          | ich\s+bin\s+(?:bis|vom|ab)\s+.{0,40}(?:nicht\s+im\s+b[üu]ro|abwesend|im\s+urlaub|nicht\s+erreichbar)
          | (?:ich\s+bin|befinde\s+mich)\s+(?:derzeit\s+|zurzeit\s+|momentan\s+)?(?:nicht\s+im\s+b[üu]ro|im\s+urlaub|abwesend)
          | ihre\s+(?:anfrage|nachricht|e-?mail)\s+(?:ist\s+(?:bei\s+uns\s+)?eingegangen|wurde\s+empfangen)
          | automatisch\s+(?:generiert|erstellt|versendet) | bitte\s+antworten\s+sie\s+nicht
          | je\s+suis\s+(?:actuellement\s+)?absente? | nous\s+avons\s+bien\s+re[cç]u\s+votre\s+(?:demande|message|e-?mail)
          | (?:message|r[ée]ponse)\s+automatique | merci\s+de\s+ne\s+pas\s+r[ée]pondre
          | estou\s+(?:ausente|fora\s+do\s+escrit[oó]rio|de\s+f[ée]rias) | recebemos\s+(?:a\s+)?(?:sua|seu)\s+(?:solicita[cç][aã]o|mensagem|e-?mail|chamado|pedido)
          | mensagem\s+autom[aá]tica | (?:por\s+favor,?\s+)?n[aã]o\s+responda
          | would\s+like\s+to\s+recall\s+the\s+message | m[öo]chte\s+die\s+nachricht\s+.{0,80}\s+zur[üu]ckrufen
          | souhaite\s+rappeler\s+le\s+message | gostaria\s+de\s+(?:recolher|recuperar)\s+a\s+mensagem | メッセージ.{0,20}取り消
          | 自動(?:応答|返信|送信)(?:メール|メッセージ)? | 不在(?:にして|のため|です) | お問い合わせを受け付けました | このメールは(?:送信専用|自動)
        ",
    )
    .expect("automatic text")
});

/// A bounce of one of our own messages, as far as the message itself can tell: which of
/// our Message-IDs it is about and which addresses failed. Those addresses then get no
/// automatic answer for a while (an answer would only bounce again, or reach an
/// auto-responder behind a forwarding address). Anyone can write a DSN, so one counts only
/// when its sender is verified, it names one of our Message-IDs exactly, and never for the
/// desk's own people; the service further checks the journal sent that message to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounce {
    pub failed: Vec<String>,
    /// Our Message-IDs it is about, without angle brackets.
    pub about: Vec<String>,
    /// Why a DSN about our mail blocks nobody, when that is so.
    pub ignored: Option<String>,
}

pub fn bounced_answer(
    mail: &Mail,
    config: &Config,
    sender: &Sender,
    internal: &dyn Fn(&str) -> bool,
) -> Bounce {
    let Some(report) = &mail.delivery_report else {
        return Bounce::default();
    };
    let ours = format!(
        ".triage@{}",
        config.desk.message_id_domain.to_ascii_lowercase()
    );
    let mut about: Vec<String> = report
        .original_ids
        .iter()
        .chain(mail.in_reply_to.iter())
        .chain(mail.references.iter())
        .map(|id| id.trim().trim_matches(['<', '>']).to_ascii_lowercase())
        .filter(|id| id.ends_with(&ours) && is_our_id(id))
        .collect();
    about.sort();
    about.dedup();
    if about.is_empty() {
        return Bounce::default();
    }
    let mut bounce = Bounce {
        about,
        ..Bounce::default()
    };
    if sender.domain.is_none() {
        bounce.ignored = Some(format!(
            "a delivery report about our mail from an unverified sender ({}) blocks nobody",
            sender.problem.as_deref().unwrap_or_default()
        ));
        return bounce;
    }
    let own = config.own_addresses();
    bounce.failed = report
        .failed
        .iter()
        .filter(|a| !own.contains(a) && !internal(a))
        .cloned()
        .collect();
    bounce
}

/// `<32 hex digits>.triage@domain`, as [`crate::core::threading::message_id_for`] writes them.
fn is_our_id(id: &str) -> bool {
    id.split_once('.')
        .is_some_and(|(h, _)| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Local parts that belong to machines, not people, in the desk's languages.
fn is_robot(local: &str) -> bool {
    let l = local.to_ascii_lowercase();
    let compact: String = l.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    const STARTS: &[&str] = &[
        "noreply",
        "noresponder",
        "noresponda",
        "nepasrepondre",
        "nepasrpondre",
        "naoresponda",
        "naoresponder",
        "naorespondaa",
        "nichtantworten",
        "keineantwort",
        "donotreply",
        "dontreply",
        "donotrespond",
        "bounce",
        "notification",
        "notifications",
        "mailerdaemon",
        "autoreply",
        "autorespond",
        "automailer",
        "autoresponse",
        "autoconfirm",
        "mailer",
        "daemon",
        "postmaster",
        "listserv",
        "majordomo",
        "newsletter",
        "unsubscribe",
        "bestaetigung",
    ];
    STARTS.iter().any(|s| compact.starts_with(s))
        || l.ends_with("-request")
        || l.starts_with("owner-")
        || l.contains("+bounce")
        || compact.ends_with("noreply")
        || compact.ends_with("donotreply")
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
            let id = v.split([';', ' ', '\t']).next().unwrap_or("");
            id.eq_ignore_ascii_case(authserv)
        });
        if let Some(ar) = ours {
            match dmarc_verdict(ar, &from_domain) {
                Ok(()) => {
                    verified = true;
                    evidence = format!("{authserv}: dmarc=pass header.from={from_domain}");
                }
                Err(why) => {
                    evidence = format!("{authserv}: {why}");
                    problem = Some(format!("{why} (per {authserv})"));
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

/// Whether the receiving server's header says DMARC passed for exactly the From domain.
/// Fails closed: an unreadable header, two different DMARC results, a pass without
/// `header.from`, or a pass for another domain are not a pass.
fn dmarc_verdict(ar: &str, from_domain: &str) -> Result<(), String> {
    let (_, results) = parse_authentication_results(ar)
        .ok_or("its Authentication-Results cannot be read (unbalanced comment or quote)")?;
    let dmarc: Vec<&AuthResult> = results.iter().filter(|r| r.method == "dmarc").collect();
    let Some(first) = dmarc.first() else {
        return Err("no DMARC result".into());
    };
    if dmarc.iter().any(|r| r.result != first.result) {
        let all: Vec<&str> = dmarc.iter().map(|r| r.result.as_str()).collect();
        return Err(format!("conflicting DMARC results ({})", all.join(", ")));
    }
    if first.result != "pass" {
        return Err(format!("DMARC {} for {from_domain}", first.result));
    }
    let header_from = dmarc.iter().find_map(|r| {
        r.properties
            .iter()
            .find(|(k, _)| k == "header.from")
            .map(|(_, v)| domain_of_property(v))
    });
    match header_from {
        None => Err("dmarc=pass without header.from: for which domain is not said".into()),
        Some(d) if !d.eq_ignore_ascii_case(from_domain) => Err(format!(
            "DMARC passed for {d}, not for the From domain {from_domain}"
        )),
        Some(_) => Ok(()),
    }
}

/// `header.from=example.com`, or an address some servers write there.
fn domain_of_property(v: &str) -> String {
    let d = if v.contains('@') { domain_of(v) } else { v };
    d.trim_matches(['<', '>', '.']).to_ascii_lowercase()
}

/// One result of an `Authentication-Results` header (RFC 8601 §2.2): `dmarc=pass
/// header.from=example.com`, comments removed, quoted strings unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResult {
    pub method: String,
    pub result: String,
    /// `ptype.property` (lower case) and its value.
    pub properties: Vec<(String, String)>,
}

/// An `Authentication-Results` header value: the authserv-id and its results. `None`
/// when it cannot be read (unbalanced comment or quote): such a header proves nothing.
pub fn parse_authentication_results(value: &str) -> Option<(String, Vec<AuthResult>)> {
    let statements = split_statements(value)?;
    let mut it = statements.into_iter();
    let authserv = it.next()?.into_iter().next()?;
    let mut results = Vec::new();
    for words in it {
        let mut words = words.into_iter();
        let Some(first) = words.next() else { continue };
        let Some((method, result)) = first.split_once('=') else {
            continue; // "none" or a stray word: no result
        };
        let method = method.split('/').next().unwrap_or("").to_ascii_lowercase();
        let mut r = AuthResult {
            method,
            result: result.to_ascii_lowercase(),
            properties: Vec::new(),
        };
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                r.properties.push((k.to_ascii_lowercase(), v.to_string()));
            }
        }
        results.push(r);
    }
    Some((authserv, results))
}

/// Splits on `;` outside quoted strings and comments, drops comments (nested, with
/// quoted-pairs), unquotes quoted strings, and returns each statement's words with
/// `name = value` joined into `name=value`. Linear in the header's length.
fn split_statements(value: &str) -> Option<Vec<Vec<String>>> {
    let mut statements = vec![Vec::new()];
    let mut word = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut chars = value.chars();
    let end_word = |word: &mut String, statements: &mut Vec<Vec<String>>| {
        if !word.is_empty() {
            statements
                .last_mut()
                .expect("one")
                .push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => word.push(chars.next()?),
                '"' => quoted = false,
                _ => word.push(c),
            }
            continue;
        }
        if depth > 0 {
            match c {
                '\\' => {
                    chars.next()?;
                }
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            continue;
        }
        match c {
            '(' => {
                end_word(&mut word, &mut statements);
                depth = 1;
            }
            '"' => quoted = true,
            ';' => {
                end_word(&mut word, &mut statements);
                statements.push(Vec::new());
            }
            c if c.is_whitespace() => end_word(&mut word, &mut statements),
            _ => word.push(c),
        }
    }
    if quoted || depth > 0 {
        return None;
    }
    end_word(&mut word, &mut statements);
    // "dmarc = pass" and "header.from= x": join the pieces around a lone '='.
    Some(statements.into_iter().map(join_equals).collect())
}

fn join_equals(words: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        let glue = out.last().is_some_and(|p| p.ends_with('=')) || w.starts_with('=');
        match out.last_mut() {
            Some(prev) if glue => prev.push_str(&w),
            _ => out.push(w),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeezed_ascii_is_squeezed_as_any_text() {
        let by_char = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace() && *c != '>')
                .flat_map(char::to_lowercase)
                .collect()
        };
        // Every ASCII character, among others.
        let all: String = (0u8..128).map(char::from).collect();
        for s in [
            all.as_str(),
            "> Best Regards,\n>  The Partner\x0BDesk\r\n",
            "",
            " \t>>",
        ] {
            assert_eq!(squeeze(s), by_char(s), "{s:?}");
        }
        assert_eq!(squeeze("> Grüße\u{85}DESK"), "grüßedesk");
    }
}
