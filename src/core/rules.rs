//! Routing rules that help-desk specialists edit in YAML (`rules/*.yaml`).
//!
//! Files are read in name order; their rules form one ordered list and the first rule
//! whose `when` holds decides. Named `conditions` can be reused by `is:`, and named
//! `extractors` pull ids out of the message. Every regex is compiled while the YAML is
//! read, so a bad pattern is reported with its file, line and column.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::core::message::Mail;
use crate::core::problems::{Problem, Problems};

/// The stable category identifiers of SPEC §2.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    QuoteRequest,
    PurchaseOrder,
    OrderStatus,
    ProofOfExecution,
    PortalAccess,
    DealRegistration,
    Nfr,
    Invoice,
    CertificationReport,
    Billing,
    Other,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::QuoteRequest,
        Category::PurchaseOrder,
        Category::OrderStatus,
        Category::ProofOfExecution,
        Category::PortalAccess,
        Category::DealRegistration,
        Category::Nfr,
        Category::Invoice,
        Category::CertificationReport,
        Category::Billing,
        Category::Other,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::QuoteRequest => "quote_request",
            Category::PurchaseOrder => "purchase_order",
            Category::OrderStatus => "order_status",
            Category::ProofOfExecution => "proof_of_execution",
            Category::PortalAccess => "portal_access",
            Category::DealRegistration => "deal_registration",
            Category::Nfr => "nfr",
            Category::Invoice => "invoice",
            Category::CertificationReport => "certification_report",
            Category::Billing => "billing",
            Category::Other => "other",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Internal people, by the role they play for the message's opportunity or deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The opportunity owner.
    SalesRep,
    Isr,
    /// The channel account manager on the opportunity (not necessarily the account's).
    OpportunityCam,
    /// The channel account manager who owns the partner account.
    PartnerCam,
    Partnerorderops,
    /// The deal registration's channel manager.
    ChannelManager,
}

/// One or more regular expressions; case-insensitive unless the pattern says `(?-i)`.
#[derive(Debug, Clone)]
pub struct Patterns {
    pub regexes: Vec<Regex>,
}

impl Patterns {
    /// The first pattern that matches, and the match.
    pub fn find<'t>(&self, text: &'t str) -> Option<(&Regex, regex::Match<'t>)> {
        self.regexes
            .iter()
            .find_map(|r| r.find(text).map(|m| (r, m)))
    }
    pub fn source(&self) -> String {
        self.regexes
            .iter()
            .map(|r| format!("/{}/", r.as_str()))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&ascii_word_boundaries(pattern))
        .case_insensitive(true)
        .size_limit(4 << 20)
        .build()
        .map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// `\b` becomes an ASCII word boundary. A Unicode `\b` stops the regex crate's fast
/// engines on any non-ASCII text (every German, French or Japanese mail), which made
/// classifying three times slower. Next to an accented letter, write `(?u:\b)`.
fn ascii_word_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(b @ ('b' | 'B')) => {
                    out.push_str("(?-u:\\");
                    out.push(b);
                    out.push(')');
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let list = match OneOrMany::deserialize(d)
            .map_err(|_| de::Error::custom("expected a regular expression or a list of them"))?
        {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.is_empty() {
            return Err(de::Error::custom(
                "expected at least one regular expression",
            ));
        }
        let regexes = list
            .iter()
            .map(|p| compile(p).map_err(de::Error::custom))
            .collect::<Result<_, _>>()?;
        Ok(Patterns { regexes })
    }
}

/// The JSON Schema of a rules file (`rules/*.yaml`), from the types that load it.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(RuleFile).to_value()
}

impl schemars::JsonSchema for Patterns {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Patterns".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A regular expression, or a list of them (any may match). Case-insensitive; \\b is an ASCII word boundary.",
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1}
            ]
        })
    }
}

/// What a condition key's value is.
#[derive(Clone, Copy)]
enum Takes {
    Conditions,
    Condition,
    Name,
    Bool,
    Header,
    Patterns,
}

/// What each condition key takes, and what it tests: the schema editors complete from.
const CONDITION_DOCS: &[(&str, Takes, &str)] = &[
    (
        "all",
        Takes::Conditions,
        "every condition in the list holds",
    ),
    (
        "any",
        Takes::Conditions,
        "at least one condition in the list holds",
    ),
    ("not", Takes::Condition, "the condition does not hold"),
    (
        "is",
        Takes::Name,
        "a named condition from a `conditions:` section holds",
    ),
    ("from", Takes::Patterns, "the sender's address"),
    ("from_domain", Takes::Patterns, "the sender's domain"),
    ("to", Takes::Patterns, "an address in To"),
    ("cc", Takes::Patterns, "an address in Cc"),
    ("recipient", Takes::Patterns, "an address in To or Cc"),
    (
        "partnerorderops_recipient",
        Takes::Bool,
        "partnerorderops@ (desk.order_ops) is (true) or is not (false) in To or Cc",
    ),
    ("subject", Takes::Patterns, "the subject"),
    (
        "new_text",
        Takes::Patterns,
        "what the partner wrote in this message, without quoted history or signature",
    ),
    (
        "body",
        Takes::Patterns,
        "the whole body, quoted history included",
    ),
    (
        "text",
        Takes::Patterns,
        "the subject (unless a reply's or forward's) or the new text",
    ),
    (
        "attachment_name",
        Takes::Patterns,
        "an attachment's file name",
    ),
    (
        "attachment_type",
        Takes::Patterns,
        "an attachment's content type",
    ),
    (
        "document_text",
        Takes::Patterns,
        "the text of an attached document (PDF, DOCX, XLSX, ODT, text)",
    ),
    (
        "has_attachment",
        Takes::Bool,
        "the message has (true) or has no (false) attachment",
    ),
    (
        "header",
        Takes::Header,
        "a header is present, or matches: {name, matches}",
    ),
    (
        "field",
        Takes::Name,
        "an extractor found a value for this field",
    ),
];

impl schemars::JsonSchema for Condition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Condition".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let patterns = generator.subschema_for::<Patterns>();
        let header = generator.subschema_for::<HeaderTest>();
        let me = schemars::json_schema!({"$ref": "#/$defs/Condition"});
        let mut properties = serde_json::Map::new();
        for (key, takes, what) in CONDITION_DOCS {
            let mut value = match takes {
                Takes::Conditions => serde_json::json!({"type": "array", "items": me}),
                Takes::Condition => me.clone().to_value(),
                Takes::Name => serde_json::json!({"type": "string"}),
                Takes::Bool => serde_json::json!({"type": "boolean"}),
                Takes::Header => header.clone().to_value(),
                Takes::Patterns => patterns.clone().to_value(),
            };
            if let Some(map) = value.as_object_mut() {
                map.insert(
                    "description".into(),
                    serde_json::Value::String(what.to_string()),
                );
            }
            properties.insert(key.to_string(), value);
        }
        schemars::json_schema!({
            "description": "A condition on the message: a map with exactly one key.",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1
        })
    }
}

/// A condition on the message. YAML: a map with one key, e.g. `subject: 'quote'`.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// A named condition from a `conditions:` section.
    Is(String),
    /// Sender address.
    From(Patterns),
    FromDomain(Patterns),
    To(Patterns),
    Cc(Patterns),
    /// Any address in To or Cc.
    Recipient(Patterns),
    /// partnerorderops@ (desk.order_ops) is in To or Cc.
    PartnerorderopsRecipient(bool),
    Subject(Patterns),
    /// Only what the partner wrote in this message, without quoted history or signature.
    NewText(Patterns),
    /// The whole body, quoted history included.
    Body(Patterns),
    /// Subject or new text.
    Text(Patterns),
    AttachmentName(Patterns),
    AttachmentType(Patterns),
    /// Text of attached text documents (plain text, CSV).
    DocumentText(Patterns),
    HasAttachment(bool),
    Header(HeaderTest),
    /// An extractor found a value for this field.
    Field(String),
}

/// The condition keys, for messages.
fn condition_names() -> String {
    let names: Vec<&str> = CONDITION_DOCS.iter().map(|(k, _, _)| *k).collect();
    names.join(", ")
}

// serde_norway reads externally tagged enums only from YAML tags (`!subject`); rule editors
// write one-key maps, so the map is read by hand. Errors keep their line and column.
impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a condition: a map with one key, one of {}",
                    condition_names()
                )
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom(format!(
                        "empty condition; expected one of {}",
                        condition_names()
                    ))
                })?;
                let c = match key.as_str() {
                    "all" => Condition::All(map.next_value()?),
                    "any" => Condition::Any(map.next_value()?),
                    "not" => Condition::Not(Box::new(map.next_value()?)),
                    "is" => Condition::Is(map.next_value()?),
                    "from" => Condition::From(map.next_value()?),
                    "from_domain" => Condition::FromDomain(map.next_value()?),
                    "to" => Condition::To(map.next_value()?),
                    "cc" => Condition::Cc(map.next_value()?),
                    "recipient" => Condition::Recipient(map.next_value()?),
                    "partnerorderops_recipient" => {
                        Condition::PartnerorderopsRecipient(map.next_value()?)
                    }
                    "subject" => Condition::Subject(map.next_value()?),
                    "new_text" => Condition::NewText(map.next_value()?),
                    "body" => Condition::Body(map.next_value()?),
                    "text" => Condition::Text(map.next_value()?),
                    "attachment_name" => Condition::AttachmentName(map.next_value()?),
                    "attachment_type" => Condition::AttachmentType(map.next_value()?),
                    "document_text" => Condition::DocumentText(map.next_value()?),
                    "has_attachment" => Condition::HasAttachment(map.next_value()?),
                    "header" => Condition::Header(map.next_value()?),
                    "field" => Condition::Field(map.next_value()?),
                    other => {
                        let names = CONDITION_DOCS.iter().map(|(k, _, _)| *k);
                        return Err(de::Error::custom(format!(
                            "unknown condition `{other}`{}, expected one of {}",
                            crate::core::problems::did_you_mean(other, names),
                            condition_names()
                        )));
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a condition has one key, found `{key}` and `{extra}`: combine them with `all:` or `any:`"
                    )));
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderTest {
    pub name: String,
    /// Unset: the header only has to be present.
    #[serde(default)]
    pub matches: Option<Patterns>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lookup {
    Opportunity,
    DealRegistration,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    /// Answer automatically, as the rule says.
    #[default]
    Auto,
    /// Leave it for a human.
    None,
    /// Sort only: file the original in its folder, no answer (a filing-only rule set,
    /// as imapfilter or Sieve would sort).
    File,
    /// Prepare the answer in the Drafts folder; a person reads, edits and sends it.
    Draft,
}

impl Respond {
    /// As the audit log and the YAML write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Respond::Auto => "auto",
            Respond::None => "none",
            Respond::File => "file",
            Respond::Draft => "draft",
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub to: Role,
    pub template: String,
    /// Attach the partner's documents to the forward.
    #[serde(default = "yes")]
    pub attach: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub category: Category,
    #[serde(default)]
    pub respond: Respond,
    /// Why a `respond: none` rule leaves the message for a human.
    #[serde(default)]
    pub reason: Option<String>,
    /// The reply to the partner.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub lookup: Option<Lookup>,
    #[serde(default)]
    pub cc: Vec<Role>,
    /// Re-attach every document that came with the original.
    #[serde(default)]
    pub reattach: bool,
    /// Keep the documents, filed under the opportunity or deal, for the CRM.
    #[serde(default)]
    pub keep_documents: bool,
    /// Fields the message or its documents must carry.
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// The reply naming what is missing.
    #[serde(default)]
    pub missing_template: Option<String>,
    #[serde(default)]
    pub forward: Option<Forward>,
    /// The deal registration must be in `from` and moves to `to` (recorded for the CRM).
    #[serde(default)]
    pub deal_status: Option<StatusChange>,
    /// The deal registration must be of this type (e.g. service_attach).
    #[serde(default)]
    pub deal_type: Option<String>,
    /// Where the original goes once handled; overrides folders.by_category.
    #[serde(default)]
    pub folder: Option<String>,
    /// Who may get an automatic answer: `partners` (the default: a verified sender whose
    /// domain is a partner in the directory) or `anyone` verified. Anyone else is left for
    /// a human with the reason.
    #[serde(default)]
    pub answer: AnswerPolicy,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AnswerPolicy {
    #[default]
    Partners,
    Anyone,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub when: Condition,
    pub then: Action,
    /// Where the rule was written, for messages and explanations.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    conditions: BTreeMap<String, Condition>,
    #[serde(default)]
    extractors: BTreeMap<String, Patterns>,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// All rule files of a folder, merged and cross-checked.
#[derive(Debug, Clone, Default)]
pub struct Rulebook {
    pub rules: Vec<Rule>,
    pub conditions: BTreeMap<String, Condition>,
    /// Field name -> patterns; the value is the `value` named group, else group 1, else the match.
    pub extractors: BTreeMap<String, Patterns>,
    /// For locating problems found after parsing: (file, text).
    pub sources: Vec<(PathBuf, String)>,
    /// All extractor patterns in one set, in `extractors` order: one pass over a long body
    /// tells which patterns can match at all, instead of one pass per pattern.
    extractor_set: Option<regex::RegexSet>,
    /// Whether anything here looks at documents' text; worked out once at load.
    reads_documents: bool,
}

/// What held when a rule matched, in words, for `classify` and the audit log.
pub type Trail = Vec<String>;

/// The facts the conditions look at, computed once per message.
pub struct Facts<'a> {
    pub mail: &'a Mail,
    pub order_ops: &'a str,
    pub fields: &'a BTreeMap<String, String>,
}

impl Rulebook {
    pub fn load(dir: &Path) -> Result<Rulebook, Problems> {
        let mut problems = Problems::default();
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect(),
            Err(e) => {
                return Err(Problems::one(Problem::file(
                    dir,
                    format!("cannot read rules folder: {e}"),
                )))
            }
        };
        entries.sort();
        if entries.is_empty() {
            return Err(Problems::one(Problem::file(
                dir,
                "no rule files (*.yaml) in the rules folder",
            )));
        }
        let mut files = Vec::new();
        for path in entries {
            match std::fs::read_to_string(&path) {
                Ok(t) => files.push((path, t)),
                Err(e) => problems.push(Problem::file(&path, format!("cannot read: {e}"))),
            }
        }
        Rulebook::build(files, problems)
    }

    /// The rule files' texts, already read, in order (what `load` and the fuzzer share).
    pub fn from_files(files: Vec<(PathBuf, String)>) -> Result<Rulebook, Problems> {
        Rulebook::build(files, Problems::default())
    }

    fn build(files: Vec<(PathBuf, String)>, mut problems: Problems) -> Result<Rulebook, Problems> {
        let mut book = Rulebook::default();
        for (path, text) in files {
            let file: RuleFile = if text.trim().is_empty() {
                RuleFile::default()
            } else {
                match serde_yaml::from_str(&text) {
                    Ok(f) => f,
                    Err(e) => {
                        problems.push(Problem::yaml(&path, &e));
                        continue;
                    }
                }
            };
            for (name, cond) in file.conditions {
                if book.conditions.insert(name.clone(), cond).is_some() {
                    problems.push(Problem::at_text(
                        &path,
                        &text,
                        &format!("{name}:"),
                        format!("condition {name:?} is defined twice"),
                    ));
                }
            }
            for (name, pats) in file.extractors {
                if book.extractors.insert(name.clone(), pats).is_some() {
                    problems.push(Problem::at_text(
                        &path,
                        &text,
                        &format!("{name}:"),
                        format!("extractor {name:?} is defined twice"),
                    ));
                }
            }
            for mut rule in file.rules {
                rule.source = path.clone();
                book.rules.push(rule);
            }
            book.sources.push((path, text));
        }
        book.cross_check(&mut problems);
        let all: Vec<&str> = book
            .extractors
            .values()
            .flat_map(|p| p.regexes.iter().map(|r| r.as_str()))
            .collect();
        book.extractor_set = regex::RegexSetBuilder::new(all)
            .case_insensitive(true)
            .size_limit(32 << 20)
            .build()
            .ok();
        book.reads_documents = book.find_document_readers();
        problems.into_result(book)
    }

    /// Where `needle` is written in the rule's file, after the rule's name.
    pub fn locate(&self, rule: &Rule, needle: &str, message: String) -> Problem {
        match self.sources.iter().find(|(p, _)| *p == rule.source) {
            Some((path, text)) => {
                let start = text.find(&format!("name: {}", rule.name)).unwrap_or(0);
                Problem::at_text_after(path, text, start, needle, message)
            }
            None => Problem::file(&rule.source, message),
        }
    }

    /// What can only be checked with every rule loaded: names, references, cycles.
    #[allow(
        clippy::too_many_lines,
        reason = "one flat list of load-time checks, each independent of the others"
    )]
    fn cross_check(&self, problems: &mut Problems) {
        let mut seen = std::collections::HashSet::new();
        for rule in &self.rules {
            if !seen.insert(rule.name.as_str()) {
                problems.push(self.locate(
                    rule,
                    &format!("name: {}", rule.name),
                    format!("rule name {:?} is used twice", rule.name),
                ));
            }
            let mut names = Vec::new();
            collect_refs(&rule.when, &mut names, &mut Vec::new());
            for name in names {
                if !self.conditions.contains_key(&name) {
                    problems.push(self.locate(
                        rule,
                        &name,
                        format!(
                                "rule {:?}: unknown condition `is: {name}`; defined conditions: {}",
                                rule.name,
                                self.conditions
                                    .keys()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                    ));
                }
            }
            let mut fields = Vec::new();
            collect_refs(&rule.when, &mut Vec::new(), &mut fields);
            fields.extend(rule.then.required_fields.iter().cloned());
            for field in fields {
                if !self.extractors.contains_key(&field) {
                    problems.push(self.locate(
                        rule,
                        &field,
                        format!(
                            "rule {:?}: field {field:?} has no extractor{}; defined extractors: {}",
                            rule.name,
                            crate::core::problems::did_you_mean(
                                &field,
                                self.extractors.keys().map(String::as_str)
                            ),
                            self.extractors.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
            let a = &rule.then;
            if !a.required_fields.is_empty() && a.missing_template.is_none() {
                problems.push(self.locate(
                    rule,
                    "required_fields",
                    format!(
                        "rule {:?}: required_fields needs a missing_template to ask for them",
                        rule.name
                    ),
                ));
            }
            let answers = matches!(a.respond, Respond::Auto | Respond::Draft);
            if answers && a.template.is_none() && a.forward.is_none() {
                problems.push(self.locate(
                    rule,
                    "then:",
                    format!(
                        "rule {:?}: expected a `template` (or `respond: none`)",
                        rule.name
                    ),
                ));
            }
            let needs_lookup =
                a.cc.iter()
                    .any(|r| !matches!(r, Role::Partnerorderops | Role::PartnerCam))
                    || a.forward.is_some()
                    || a.keep_documents;
            if needs_lookup && a.lookup.is_none() {
                problems.push(self.locate(rule, "then:", format!("rule {:?}: cc roles, forward and keep_documents need `lookup: opportunity` or `lookup: deal_registration`", rule.name)));
            }
            for role in a.cc.iter().chain(a.forward.as_ref().map(|f| &f.to)) {
                let ok = match role {
                    Role::SalesRep | Role::Isr | Role::OpportunityCam => a.lookup.is_some(),
                    Role::ChannelManager => a.lookup == Some(Lookup::DealRegistration),
                    Role::PartnerCam | Role::Partnerorderops => true,
                };
                if !ok {
                    problems.push(self.locate(
                        rule,
                        "channel_manager",
                        format!(
                            "rule {:?}: role {role:?} needs `lookup: deal_registration`",
                            rule.name
                        ),
                    ));
                }
            }
        }
        // A named condition must not refer to itself, directly or not.
        for name in self.conditions.keys() {
            let mut path = vec![name.clone()];
            if self.cycles(name, &mut path) {
                let (file, text) = self
                    .sources
                    .iter()
                    .find(|(_, t)| t.contains(&format!("{name}:")))
                    .cloned()
                    .unwrap_or_default();
                problems.push(Problem::at_text(
                    &file,
                    &text,
                    &format!("{name}:"),
                    format!("condition {name:?} refers to itself: {}", path.join(" -> ")),
                ));
            }
        }
    }

    fn cycles(&self, name: &str, path: &mut Vec<String>) -> bool {
        let Some(cond) = self.conditions.get(name) else {
            return false;
        };
        let mut refs = Vec::new();
        collect_refs(cond, &mut refs, &mut Vec::new());
        for r in refs {
            if path.contains(&r) {
                path.push(r);
                return true;
            }
            path.push(r.clone());
            if self.cycles(&r, path) {
                return true;
            }
            path.pop();
        }
        false
    }

    /// Whether anything here looks at documents' text: a sort-only rule set that does not
    /// is spared reading every PDF.
    pub fn reads_documents(&self) -> bool {
        self.reads_documents
    }

    fn find_document_readers(&self) -> bool {
        fn uses(c: &Condition, book: &Rulebook, depth: usize) -> bool {
            match c {
                Condition::DocumentText(_) => true,
                Condition::All(list) | Condition::Any(list) => {
                    list.iter().any(|c| uses(c, book, depth))
                }
                Condition::Not(inner) => uses(inner, book, depth),
                // Named conditions may refer to each other; cross_check refuses cycles.
                Condition::Is(name) => {
                    depth < 16
                        && book
                            .conditions
                            .get(name)
                            .is_some_and(|c| uses(c, book, depth + 1))
                }
                _ => false,
            }
        }
        !self.extractors.is_empty() || self.rules.iter().any(|r| uses(&r.when, self, 0))
    }

    /// The first rule that holds, with the conditions that made it hold.
    pub fn first_match(&self, facts: &Facts<'_>) -> Option<(&Rule, Trail)> {
        for rule in &self.rules {
            let mut trail = Vec::new();
            if self.holds(&rule.when, facts, &mut trail, 0) {
                return Some((rule, trail));
            }
        }
        None
    }

    /// Whether the condition holds; the trail says why, for the plan's explanation.
    /// `all`, `any`, `not` and named conditions here; the tests on the message in
    /// [`leaf_holds`].
    fn holds(&self, cond: &Condition, f: &Facts<'_>, trail: &mut Trail, depth: usize) -> bool {
        if depth > 64 {
            return false; // cycles are refused at load; this only bounds a pathological nest
        }
        match cond {
            Condition::All(list) => {
                let mark = trail.len();
                for c in list {
                    if !self.holds(c, f, trail, depth + 1) {
                        trail.truncate(mark);
                        return false;
                    }
                }
                true
            }
            Condition::Any(list) => list.iter().any(|c| {
                let mark = trail.len();
                let ok = self.holds(c, f, trail, depth + 1);
                if !ok {
                    trail.truncate(mark);
                }
                ok
            }),
            Condition::Not(inner) => {
                let mut scratch = Vec::new();
                if self.holds(inner, f, &mut scratch, depth + 1) {
                    false
                } else {
                    trail.push(format!("not ({})", describe(inner)));
                    true
                }
            }
            Condition::Is(name) => {
                let Some(c) = self.conditions.get(name) else {
                    return false;
                };
                let mark = trail.len();
                if self.holds(c, f, trail, depth + 1) {
                    let inner: Vec<String> = trail.drain(mark..).collect();
                    trail.push(format!("{name}: {}", inner.join("; ")));
                    true
                } else {
                    false
                }
            }
            leaf => leaf_holds(leaf, f, trail),
        }
    }
}

/// A pattern found in one text: true, and the trail says which pattern matched what.
fn matched(what: &str, pats: &Patterns, text: &str, trail: &mut Trail) -> bool {
    match pats.find(text) {
        Some((re, m)) => {
            trail.push(format!(
                "{what} matches /{}/ ({:?})",
                clip(re.as_str()),
                clip(m.as_str())
            ));
            true
        }
        None => false,
    }
}

/// A pattern found in any of several texts (addresses, attachment names).
fn any_addr(
    what: &str,
    pats: &Patterns,
    texts: &mut dyn Iterator<Item = &str>,
    trail: &mut Trail,
) -> bool {
    for t in texts {
        if matched(what, pats, t, trail) {
            return true;
        }
    }
    false
}

/// What a condition was tested on, for "why not": the text or addresses it saw.
fn tested_on(cond: &Condition, f: &Facts<'_>) -> String {
    let mail = f.mail;
    let list = |v: &mut dyn Iterator<Item = &str>| -> String {
        let all: Vec<&str> = v.collect();
        if all.is_empty() {
            "(none)".into()
        } else {
            clip(&all.join(", "))
        }
    };
    match cond {
        Condition::From(_) | Condition::FromDomain(_) => {
            list(&mut mail.from.iter().map(|m| m.address.as_str()))
        }
        Condition::To(_) => list(&mut mail.to.iter().map(|m| m.address.as_str())),
        Condition::Cc(_) => list(&mut mail.cc.iter().map(|m| m.address.as_str())),
        Condition::Recipient(_) | Condition::PartnerorderopsRecipient(_) => {
            list(&mut mail.recipients().map(|m| m.address.as_str()))
        }
        Condition::Subject(_) => format!("{:?}", clip(&mail.subject)),
        Condition::NewText(_) | Condition::Text(_) => format!(
            "subject {:?}, new text {:?}",
            clip(&mail.subject),
            clip(&mail.new_text)
        ),
        Condition::Body(_) => format!("{:?}", clip(&mail.text)),
        Condition::AttachmentName(_) | Condition::HasAttachment(_) => {
            list(&mut mail.attachments.iter().map(|a| a.name.as_str()))
        }
        Condition::AttachmentType(_) => {
            list(&mut mail.attachments.iter().map(|a| a.content_type.as_str()))
        }
        Condition::DocumentText(_) => {
            let read = mail.attachments.iter().filter(|a| a.text.is_some()).count();
            format!("{read} document(s) with text")
        }
        Condition::Header(h) => list(&mut mail.headers_named(&h.name)),
        Condition::Field(_) => {
            let found: Vec<&str> = f.fields.keys().map(String::as_str).collect();
            format!("fields found: {}", list(&mut found.into_iter()))
        }
        _ => String::new(),
    }
}

impl Rulebook {
    /// "Why did this rule not fire?": the rule's conditions as a tree, each marked held
    /// (✓, with what matched) or failed (✗, with what it was tested on), and the earlier
    /// rule that took the message first, if one did.
    pub fn why_not(&self, name: &str, f: &Facts<'_>) -> Result<Vec<String>, String> {
        let Some(rule) = self.rules.iter().find(|r| r.name == name) else {
            let names = self.rules.iter().map(|r| r.name.as_str());
            return Err(format!(
                "no rule named {name:?}{}",
                crate::core::problems::did_you_mean(name, names)
            ));
        };
        let mut out = Vec::new();
        let holds = self.trace(&rule.when, f, 1, &mut out);
        let verdict = if holds { "holds" } else { "does not hold" };
        out.insert(0, format!("rule {name}: {verdict}"));
        if let Some((first, _)) = self.first_match(f) {
            if first.name != rule.name {
                let but = if holds { "but " } else { "" };
                out.push(format!(
                    "{but}rule {} matches the message and decides it",
                    first.name
                ));
            }
        }
        Ok(out)
    }

    fn trace(&self, cond: &Condition, f: &Facts<'_>, depth: usize, out: &mut Vec<String>) -> bool {
        let pad = "  ".repeat(depth);
        let mark = |ok: bool| if ok { "✓" } else { "✗" };
        if depth > 64 {
            return false;
        }
        let (label, children): (String, Vec<&Condition>) = match cond {
            Condition::All(list) => ("all of".into(), list.iter().collect()),
            Condition::Any(list) => ("any of".into(), list.iter().collect()),
            Condition::Not(inner) => ("not".into(), vec![&**inner]),
            Condition::Is(name) => match self.conditions.get(name) {
                Some(c) => (format!("is {name}"), vec![c]),
                None => {
                    out.push(format!("{pad}✗ is {name}: no such named condition"));
                    return false;
                }
            },
            leaf => {
                let mut trail = Vec::new();
                let ok = leaf_holds(leaf, f, &mut trail);
                let said = if ok {
                    trail.join("; ")
                } else {
                    format!("{}: tested on {}", describe(leaf), tested_on(leaf, f))
                };
                out.push(format!("{pad}{} {said}", mark(ok)));
                return ok;
            }
        };
        let at = out.len();
        out.push(String::new());
        let results: Vec<bool> = children
            .iter()
            .map(|c| self.trace(c, f, depth + 1, out))
            .collect();
        let ok = match cond {
            Condition::All(_) | Condition::Is(_) => results.iter().all(|r| *r),
            Condition::Any(_) => results.iter().any(|r| *r),
            _ => !results[0],
        };
        out[at] = format!("{pad}{} {label}", mark(ok));
        ok
    }
}

/// The conditions that test the message itself. Long only because it has one short arm
/// per condition kind; the arms share nothing but `matched`.
fn leaf_holds(cond: &Condition, f: &Facts<'_>, trail: &mut Trail) -> bool {
    let mail = f.mail;
    match cond {
        Condition::From(p) => mail
            .from
            .as_ref()
            .is_some_and(|m| matched("from", p, &m.address, trail)),
        Condition::FromDomain(p) => mail
            .from
            .as_ref()
            .is_some_and(|m| matched("from domain", p, m.domain(), trail)),
        Condition::To(p) => any_addr(
            "to",
            p,
            &mut mail.to.iter().map(|m| m.address.as_str()),
            trail,
        ),
        Condition::Cc(p) => any_addr(
            "cc",
            p,
            &mut mail.cc.iter().map(|m| m.address.as_str()),
            trail,
        ),
        Condition::Recipient(p) => any_addr(
            "recipient",
            p,
            &mut mail.recipients().map(|m| m.address.as_str()),
            trail,
        ),
        Condition::PartnerorderopsRecipient(want) => {
            let present = mail
                .recipients()
                .any(|m| m.address.eq_ignore_ascii_case(f.order_ops));
            if present == *want {
                trail.push(if present {
                    format!("{} is a recipient", f.order_ops)
                } else {
                    format!("{} is not a recipient", f.order_ops)
                });
                true
            } else {
                false
            }
        }
        Condition::Subject(p) => matched("subject", p, &mail.subject, trail),
        Condition::NewText(p) => matched("new text", p, &mail.new_text, trail),
        Condition::Body(p) => matched("body", p, &mail.text, trail),
        // The subject of a reply or forward names the thread's old topic, not what the
        // partner asks now: there only the new text counts.
        Condition::Text(p) => {
            (!is_reply_subject(&mail.subject) && matched("subject", p, &mail.subject, trail))
                || matched("new text", p, &mail.new_text, trail)
        }
        Condition::AttachmentName(p) => any_addr(
            "attachment name",
            p,
            &mut mail.attachments.iter().map(|a| a.name.as_str()),
            trail,
        ),
        Condition::AttachmentType(p) => any_addr(
            "attachment type",
            p,
            &mut mail.attachments.iter().map(|a| a.content_type.as_str()),
            trail,
        ),
        Condition::DocumentText(p) => mail.attachments.iter().any(|a| {
            a.text
                .as_deref()
                .is_some_and(|t| matched(&format!("document {}", a.name), p, t, trail))
        }),
        Condition::HasAttachment(want) => {
            let has = !mail.attachments.is_empty();
            if has == *want {
                trail.push(format!("has {} attachment", if has { "an" } else { "no" }));
                true
            } else {
                false
            }
        }
        Condition::Header(h) => {
            let mut values = mail.headers_named(&h.name);
            match &h.matches {
                None => {
                    let present = values.next().is_some();
                    if present {
                        trail.push(format!("header {} is present", h.name));
                    }
                    present
                }
                Some(p) => values.any(|v| matched(&format!("header {}", h.name), p, v, trail)),
            }
        }
        Condition::Field(name) => match f.fields.get(name) {
            Some(v) => {
                trail.push(format!("field {name} found ({v:?})"));
                true
            }
            None => false,
        },
        // Combinators are Rulebook::holds's; never asked here.
        Condition::All(_) | Condition::Any(_) | Condition::Not(_) | Condition::Is(_) => false,
    }
}

/// "Re:", "AW:", "Fwd:" and their cousins in the desk's languages.
pub fn is_reply_subject(subject: &str) -> bool {
    is_answer_subject(subject) || is_forward_subject(subject)
}

fn collect_refs(cond: &Condition, names: &mut Vec<String>, fields: &mut Vec<String>) {
    match cond {
        Condition::All(l) | Condition::Any(l) => {
            l.iter().for_each(|c| collect_refs(c, names, fields))
        }
        Condition::Not(c) => collect_refs(c, names, fields),
        Condition::Is(n) => names.push(n.clone()),
        Condition::Field(n) => fields.push(n.clone()),
        _ => {}
    }
}

fn describe(cond: &Condition) -> String {
    match cond {
        Condition::All(l) => format!(
            "all of {}",
            l.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Condition::Any(l) => format!(
            "any of {}",
            l.iter().map(describe).collect::<Vec<_>>().join(", ")
        ),
        Condition::Not(c) => format!("not ({})", describe(c)),
        Condition::Is(n) => n.clone(),
        Condition::From(p) => format!("from matches {}", p.source()),
        Condition::FromDomain(p) => format!("from domain matches {}", p.source()),
        Condition::To(p) => format!("to matches {}", p.source()),
        Condition::Cc(p) => format!("cc matches {}", p.source()),
        Condition::Recipient(p) => format!("recipient matches {}", p.source()),
        Condition::PartnerorderopsRecipient(b) => format!(
            "partnerorderops is {}a recipient",
            if *b { "" } else { "not " }
        ),
        Condition::Subject(p) => format!("subject matches {}", p.source()),
        Condition::NewText(p) => format!("new text matches {}", p.source()),
        Condition::Body(p) => format!("body matches {}", p.source()),
        Condition::Text(p) => format!("subject or new text matches {}", p.source()),
        Condition::AttachmentName(p) => format!("attachment name matches {}", p.source()),
        Condition::AttachmentType(p) => format!("attachment type matches {}", p.source()),
        Condition::DocumentText(p) => format!("document text matches {}", p.source()),
        Condition::HasAttachment(b) => format!("has {} attachment", if *b { "an" } else { "no" }),
        Condition::Header(h) => format!("header {}", h.name),
        Condition::Field(n) => format!("field {n} found"),
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

/// A field value and where it was found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evidence {
    pub field: String,
    pub value: String,
    pub source: String,
}

/// Where evidence may come from, most telling first: the partner's new text, the text of
/// the documents, their file names, then the subject unless it is a reply's inherited one.
/// Quoted history never decides; a forward's content is what the partner sends, so for a
/// forward the rest of the body counts too, last.
pub fn evidence_sources(mail: &Mail) -> Vec<(String, Cow<'_, str>)> {
    let mut sources: Vec<(String, Cow<'_, str>)> =
        vec![("new text".into(), mail.new_text.as_str().into())];
    for a in &mail.attachments {
        if let Some(t) = &a.text {
            sources.push((format!("document {}", a.name), t.as_str().into()));
        }
    }
    for a in &mail.attachments {
        // In a file name `_` stands for a space: `PO_for_Q-100303.pdf` names Q-100303.
        sources.push((
            format!("file name {}", a.name),
            a.name.replace('_', " ").into(),
        ));
    }
    if !is_answer_subject(&mail.subject) {
        sources.push(("subject".into(), mail.subject.as_str().into()));
    }
    if is_forward_subject(&mail.subject) {
        sources.push(("forwarded message".into(), mail.text.as_str().into()));
    }
    sources
}

/// Runs every extractor over the evidence sources. For names the first non-blank value
/// wins (a labelled field that is present but blank counts as not found); for ids every
/// distinct value is returned, in source order, so that two ids pointing at different
/// records can be seen.
pub fn extract(book: &Rulebook, mail: &Mail) -> Vec<Evidence> {
    let sources = evidence_sources(mail);
    let candidates: Vec<Option<regex::SetMatches>> = sources
        .iter()
        .map(|(_, text)| book.extractor_set.as_ref().map(|set| set.matches(text)))
        .collect();
    let mut out: Vec<Evidence> = Vec::new();
    let mut first = 0;
    for (field, pats) in &book.extractors {
        let all_values = is_id_field(field);
        // Distinct values seen, lower-cased: a set, so that a message full of ids stays
        // linear; and a few are enough to see a conflict.
        let mut seen: std::collections::HashSet<String> = Default::default();
        'field: for ((source, text), cands) in sources.iter().zip(&candidates) {
            let is_name = source.starts_with("file name ");
            for (k, re) in pats.regexes.iter().enumerate() {
                if cands.as_ref().is_some_and(|c| !c.matched(first + k)) {
                    continue;
                }
                for caps in re.captures_iter(text) {
                    let m = caps
                        .name("value")
                        .or_else(|| caps.get(1))
                        .or_else(|| caps.get(0));
                    let value = match m {
                        Some(m) if all_values => whole_id(text, m.start(), m.end()),
                        Some(_) if is_name => String::new(), // names are not in file names
                        Some(m) => clean_value(m.as_str()),
                        None => String::new(),
                    };
                    if value.is_empty() {
                        continue;
                    }
                    if seen.insert(value.to_ascii_lowercase()) {
                        out.push(Evidence {
                            field: field.clone(),
                            value,
                            source: source.clone(),
                        });
                    }
                    if !all_values || seen.len() >= MAX_VALUES {
                        break 'field;
                    }
                }
            }
        }
        first += pats.regexes.len();
    }
    out
}

/// Distinct values of one id field looked at, at most: enough to see two records named.
const MAX_VALUES: usize = 8;

/// A reply's subject ("Re:", "AW:", "Réf :" …): it names the thread's old topic. Tags a
/// mail gateway puts in front ("[EXTERNAL] RE: …", "[EXT] AW: …") do not hide it.
pub fn is_answer_subject(subject: &str) -> bool {
    static PREFIX: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)^\s*(?:(?:\[[^\]]{1,40}\]|\*{0,3}external\*{0,3}\s*:?|ext\s*:)\s*)*(?:re|aw|sv|vs|res|ref|réf|rif|antw|odp|ynt|返信|回复|答复|回覆)\s*(?:\[\d+\])?\s*[:：]")
            .expect("answer prefix")
    });
    PREFIX.is_match(subject)
}

/// A forward's subject ("Fwd:", "WG:", "TR:", "Enc:", "RV:", "転送:").
pub fn is_forward_subject(subject: &str) -> bool {
    static PREFIX: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?i)^\s*(?:(?:re|aw|sv|antw)\s*:\s*)*(?:fw|fwd|wg|tr|enc|rv|pd|転送|转发|轉寄)\s*(?:\[\d+\])?\s*[:：]")
            .expect("forward prefix")
    });
    PREFIX.is_match(subject)
}

/// Ids and numbers (`opportunity_id`, `po_number`, …), as opposed to names.
fn is_id_field(field: &str) -> bool {
    field.ends_with("_id") || field.ends_with("_number") || field.ends_with("_no")
}

/// An id is the whole token the pattern landed in: `PO-12345` rather than `-12345`,
/// `XY-PO-6789` rather than `-6789`. Ids are ASCII: a look-alike letter (U+017F, the
/// Kelvin sign) that case-insensitive matching lets through makes it no id at all.
fn whole_id(text: &str, start: usize, end: usize) -> String {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let bytes = text.as_bytes();
    let (mut a, mut b) = (start, end);
    while a > 0 && part(bytes[a - 1] as char) && bytes[a - 1].is_ascii() {
        a -= 1;
    }
    while b < bytes.len() && part(bytes[b] as char) && bytes[b].is_ascii() {
        b += 1;
    }
    // Next to a non-ASCII letter the token is not an id (`006ſſabc…`); next to Japanese
    // or Chinese it is, as those run on without spaces (`見積番号はQ-500444です`).
    let glued = |c: Option<char>| {
        c.is_some_and(|c| {
            !c.is_ascii() && c.is_alphanumeric() && !crate::core::directory::is_cjk(c)
        })
    };
    if glued(text[..a].chars().next_back()) || glued(text[b..].chars().next()) {
        return String::new();
    }
    let value = clean_value(&text[a..b]);
    let value = value.trim_matches('-');
    if value.is_ascii() && value.bytes().any(|c| c.is_ascii_digit()) {
        value.to_string()
    } else {
        String::new()
    }
}

fn clean_value(s: &str) -> String {
    let s = s
        .trim()
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '*' || c == '_');
    let s = s.trim_end_matches(['.', ',', ';', '。', '、']);
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's list of condition keys and the loader's must agree: every key the
    /// schema offers an editor is one the loader reads.
    #[test]
    fn every_documented_condition_key_loads() {
        for (key, takes, _) in CONDITION_DOCS {
            let value = match takes {
                Takes::Conditions => "[{subject: x}]",
                Takes::Condition => "{subject: x}",
                Takes::Name => "x",
                Takes::Bool => "true",
                Takes::Header => "{name: X-Test}",
                Takes::Patterns => "'x'",
            };
            let yaml = format!("{{{key}: {value}}}");
            let loaded: Result<Condition, _> = serde_yaml::from_str(&yaml);
            assert!(loaded.is_ok(), "{yaml}: {:?}", loaded.err());
        }
        let unknown: Result<Condition, _> = serde_yaml::from_str("{subjekt: x}");
        assert!(unknown.is_err());
    }
}
