//! The decision for one message, as one plain value: what to send to whom, with which
//! documents, and where the original goes. Built by pure functions from the message bytes,
//! the rules, the templates, the directory and the config; the service only executes it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::core::config::Config;
use crate::core::directory::{domain_matches, DealRegistration, Directory, KnownIds, Opportunity};
use crate::core::documents;
use crate::core::guard;
use crate::core::message::{Mail, Mailbox};
use crate::core::problems::Problems;
use crate::core::rules::{
    self, Action, AnswerPolicy, Category, Facts, Lookup, Respond, Role, Rule, Rulebook,
    StatusChange,
};
use crate::core::templates::Templates;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Reply,
    Forward,
}

impl Kind {
    /// "reply" or "forward", as the logs, metrics and audit log say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Reply => "reply",
            Kind::Forward => "forward",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outgoing {
    pub kind: Kind,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub template: String,
    pub subject: String,
    /// File names of the partner's documents attached to this message.
    pub attachments: Vec<String>,
    /// Positions of those documents in the original's attachment list.
    pub attachment_index: Vec<usize>,
    /// SHA-256 of each of those documents, for the audit log.
    #[serde(default)]
    pub attachment_sha256: Vec<String>,
    pub body: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// A document kept for the CRM (the PO for the opportunity, the PoE for the deal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeptDocument {
    pub name: String,
    pub attachment_index: usize,
    /// e.g. `opportunity/0065e00000AbCdEAAX` or `deal/DR-2026-0042`.
    pub under: String,
    pub sha256: String,
}

/// A change the CRM should record (the service cannot write to the CRM; it says what to do).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CrmUpdate {
    pub record: String,
    pub field: String,
    pub from: String,
    pub to: String,
}

/// Where the original message goes when its plan is done.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Filing {
    /// Left visible for a human (flagged, or in the human folder).
    pub human: bool,
    /// Target folder; None means it stays in the inbox.
    pub folder: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub subject: String,
    pub category: Category,
    pub rule: Option<String>,
    pub respond: Respond,
    pub reason: String,
    /// The conditions that held for the matching rule.
    pub conditions: Vec<String>,
    /// Why automatic answers are off for this message (loop bait, trust).
    pub guards: Vec<String>,
    pub fields: BTreeMap<String, String>,
    /// Where each field came from and how the directory lookup went.
    pub evidence: Vec<String>,
    pub missing: Vec<String>,
    pub outgoing: Vec<Outgoing>,
    pub keep_documents: Vec<KeptDocument>,
    pub crm_updates: Vec<CrmUpdate>,
    /// The handbook's CRM steps for this message, in order (`core::crm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crm_actions: Vec<crate::core::crm::CrmAction>,
    pub original: Filing,
    /// When this message is a bounce of one of our answers: the addresses it failed for.
    /// The service blocks them from automatic answers for `limits.bounce_block_days`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounced: Vec<String>,
    /// Our Message-IDs that bounce is about: the service blocks only when its journal
    /// shows it sent one of them to those addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounce_of: Vec<String>,
    /// With `respond: draft`: what the person who approves the draft reads first (why
    /// it is a draft; for an ambiguous lookup, the candidates and their people).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_note: Option<String>,
    /// Made by `triage run --shadow`: its brakes saw a history with nothing sent, so a
    /// live run decides the message anew instead of carrying this plan out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub made_in_shadow: bool,
    /// The message's Date header (RFC 3339), as the sender's clock had it: the review
    /// pages measure the time to an answer from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// Everything the desk knows, loaded and validated together: the service swaps it whole.
#[derive(Debug)]
pub struct Playbook {
    pub config: Config,
    pub rules: Rulebook,
    pub templates: Templates,
    pub directory: Directory,
    /// How attached documents are read: in a child process under limits in the service
    /// and `classify`, in process in tests.
    pub documents: documents::Reader,
}

/// Human-readable names of required fields, for the reply that asks for them.
pub fn field_label(field: &str) -> String {
    match field {
        "partner_name" => "Partner Name".into(),
        "customer_name" => "Customer Name".into(),
        "deal_id" => "Service Attach Deal ID".into(),
        "opportunity_id" => "Opportunity ID".into(),
        "quote_number" => "Quote Number".into(),
        "po_number" => "PO Number".into(),
        other => other
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

impl Playbook {
    /// Loads rules, templates and directory, collecting every problem; then renders each
    /// template with the variables its rules provide, so an undefined variable is found now.
    /// What is loaded, in one line (`triage check`, reload).
    pub fn summary(&self) -> String {
        format!(
            "{} rules, {} templates, directory with {} partners, {} opportunities, {} deal registrations",
            self.rules.rules.len(),
            self.templates.names.len(),
            self.directory.partners.len(),
            self.directory.opportunities.len(),
            self.directory.deals.len()
        )
    }

    pub fn load(config: Config, directory_override: Option<&Path>) -> Result<Playbook, Problems> {
        let mut problems = Problems::default();
        let rules = Rulebook::load(&config.rules)
            .map_err(|p| problems.extend(p))
            .ok();
        let templates = Templates::load(&config.templates)
            .map_err(|p| problems.extend(p))
            .ok();
        let dir = directory_override.unwrap_or(&config.directory.path);
        let directory = Directory::load(dir, &config.directory.columns)
            .map_err(|p| problems.extend(p))
            .ok();
        let (Some(rules), Some(templates), Some(directory)) = (rules, templates, directory) else {
            return Err(problems);
        };
        let book = Playbook {
            config,
            rules,
            templates,
            directory,
            documents: documents::Reader::InProcess,
        };
        book.check_templates(&mut problems);
        problems.into_result(book)
    }

    fn check_templates(&self, problems: &mut Problems) {
        for rule in &self.rules.rules {
            let a = &rule.then;
            let uses = [
                (a.template.as_deref(), false),
                (a.missing_template.as_deref(), true),
                (a.forward.as_ref().map(|f| f.template.as_str()), false),
            ];
            for (name, missing) in uses.into_iter().filter_map(|(n, m)| n.map(|n| (n, m))) {
                if !self.templates.names.contains(name) {
                    problems.push(self.rules.locate(
                        rule,
                        name,
                        format!(
                            "rule {:?}: template {name:?} does not exist in {}{}; available: {}",
                            rule.name,
                            self.templates.dir.display(),
                            crate::core::problems::did_you_mean(
                                name,
                                self.templates.names.iter().map(String::as_str)
                            ),
                            self.templates.names.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                    continue;
                }
                let ctx = sample_context(&self.config, a, missing);
                if let Err(p) = self.templates.render(name, &ctx) {
                    let mut p = p;
                    p.message = format!("{} (as used by rule {:?})", p.message, rule.name);
                    problems.push(p);
                }
            }
        }
    }

    /// The decision for one raw message. Never panics on bad input: anything it cannot
    /// handle becomes a plan that leaves the message for a human, with the reason.
    pub fn decide(&self, raw: &[u8]) -> Plan {
        // A bug must cost one message, not the desk: the panic becomes this message's
        // reason, and the service goes on with the next.
        let guarded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.decide_raw(raw)));
        guarded.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Plan::for_human(
                None,
                format!("internal error: {what}; left for a human"),
                &self.config,
            )
        })
    }

    /// For `triage classify --why-not`: the named rule's conditions on this message, and
    /// what the decision was.
    pub fn why_not(&self, raw: &[u8], rule: &str) -> Result<Vec<String>, String> {
        let (mail, gate) = self.read(raw)?;
        let plan = self.decide_mail(&mail, &gate);
        let facts = Facts {
            mail: &mail,
            order_ops: &self.config.desk.order_ops,
            fields: &plan.fields,
        };
        let mut out = self.rules.why_not(rule, &facts)?;
        let decided = plan.rule.as_deref().unwrap_or("(no rule)");
        out.push(format!(
            "decision: {} by {decided}: {}",
            plan.category, plan.reason
        ));
        Ok(out)
    }

    fn decide_raw(&self, raw: &[u8]) -> Plan {
        let limit = self.config.limits.max_message_bytes;
        if raw.len() > limit {
            return Plan::for_human(
                None,
                format!(
                    "message is {} bytes, over the limit of {limit} bytes",
                    raw.len()
                ),
                &self.config,
            );
        }
        match self.read(raw) {
            Ok((mail, gate)) => self.decide_mail(&mail, &gate),
            Err(why) => Plan::for_human(None, why, &self.config),
        }
    }

    /// The message parsed, its guards worked out, and its documents read when the
    /// guards allow it.
    fn read(&self, raw: &[u8]) -> Result<(Mail, guard::Gate), String> {
        let mut mail = Mail::parse(raw).map_err(|e| format!("cannot read the message: {}", e.0))?;
        let gate = guard::Gate::of(&mail, &self.config);
        self.read_documents(&mut mail, &gate);
        Ok((mail, gate))
    }

    /// Where a message this rule handled is filed: the rule's own folder, else its
    /// category's.
    fn filing_folder(&self, rule: &Rule) -> Option<String> {
        rule.then.folder.clone().or_else(|| {
            self.config
                .folders
                .by_category
                .get(rule.then.category.as_str())
                .cloned()
        })
    }

    /// Unpacks winmail.dat and reads the attached documents as text, so that rules and
    /// extractors see what the partner put in them. Reading is the costly step, so it is
    /// done only for a verified partner's own mail, once per distinct document, and within
    /// one CPU budget for the whole message (`limits.document_seconds`).
    pub fn read_documents(&self, mail: &mut Mail, gate: &guard::Gate) {
        unwrap_attachments(mail);
        if !self.rules.reads_documents() {
            return;
        }
        if let Err(why) = self.may_read_documents(gate) {
            if mail
                .attachments
                .iter()
                .any(|a| documents::Kind::of(&a.name, &a.content_type).is_some())
            {
                mail.not_read = Some(why);
            }
            return;
        }
        // The configured seconds, but no more than 1 s per MB of message (at least 1 s):
        // a small message cannot buy a long time of reading.
        let budget = self.documents.budget().min((mail.size as u64 >> 20).max(1));
        let started = std::time::Instant::now();
        let mut seen: std::collections::HashMap<[u8; 32], Result<String, String>> =
            Default::default();
        for a in &mut mail.attachments {
            let Some(kind) = documents::Kind::of(&a.name, &a.content_type) else {
                continue;
            };
            if a.text.is_some() {
                continue;
            }
            let digest: [u8; 32] = Sha256::digest(&a.bytes).into();
            if !seen.contains_key(&digest) && seen.len() >= MAX_DOCUMENTS {
                mail.unreadable.push(format!(
                    "{}: more than {MAX_DOCUMENTS} documents; the rest were not read",
                    a.name
                ));
                break;
            }
            let spent = started.elapsed().as_secs();
            let result = seen.entry(digest).or_insert_with(|| {
                if spent >= budget {
                    Err(format!(
                        "not read: the message's {budget} s for reading documents are spent"
                    ))
                } else {
                    self.documents.read_within(kind, &a.bytes, budget - spent)
                }
            });
            match result {
                Ok(text) => a.text = Some(text.clone()),
                Err(why) => mail.unreadable.push(format!("{}: {why}", a.name)),
            }
        }
    }

    /// Documents are read only when an answer could follow: mail a person wrote, from a
    /// verified sender whose domain is a partner.
    fn may_read_documents(&self, gate: &guard::Gate) -> Result<(), String> {
        let bait = gate.loop_bait();
        if !bait.is_empty() {
            return Err(format!(
                "no automatic answer is possible ({})",
                bait.join("; ")
            ));
        }
        let Some(domain) = &gate.sender.domain else {
            return Err(gate
                .sender
                .problem
                .clone()
                .unwrap_or_else(|| "the sender is not verified".into()));
        };
        if self.directory.partner(domain).is_none() {
            return Err(format!("{domain} is not a partner in the directory"));
        }
        Ok(())
    }

    pub fn decide_mail(&self, mail: &Mail, gate: &guard::Gate) -> Plan {
        let evidence = rules::extract(&self.rules, mail);
        // The first value of each field decides; the others are kept to see conflicts.
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for e in &evidence {
            fields
                .entry(e.field.clone())
                .or_insert_with(|| e.value.clone());
        }
        let mut notes: Vec<String> = evidence
            .iter()
            .map(|e| format!("{} {:?} from {}", e.field, e.value, e.source))
            .collect();
        // Known ids are looked for once: they fill missing fields and show conflicts.
        let sources = rules::evidence_sources(mail);
        let texts: Vec<&str> = sources.iter().map(|(_, t)| t.as_ref()).collect();
        let known = self.directory.known_ids_in(&texts);
        self.fill_from_directory(&known, &mut fields, &mut notes);
        if let Some(why) = &mail.not_read {
            notes.push(format!("attached documents not read: {why}"));
        }
        let mut plan = Plan::undecided(mail, fields, notes, &self.config);
        if self.holds_for_bounce(mail, gate, &mut plan) {
            return plan;
        }
        let facts = Facts {
            mail,
            order_ops: &self.config.desk.order_ops,
            fields: &plan.fields.clone(),
        };
        // The rule is matched first, so that every plan, even one left for a human, says
        // what the message is.
        let matched = self.rules.first_match(&facts);
        if let Some((rule, trail)) = &matched {
            plan.category = rule.then.category;
            plan.rule = Some(rule.name.clone());
            plan.conditions = trail.clone();
        }
        let Some((rule, held)) = self.screen(mail, gate, matched.map(|(r, _)| r), &mut plan) else {
            return plan;
        };
        let Some(sender_domain) = self.answerable_sender(gate, rule, &mut plan) else {
            return plan;
        };
        // Past this point the sender is a verified partner: a draft may name its people.
        let draft = held.or_else(|| {
            (rule.then.respond == Respond::Draft)
                .then(|| format!("rule {} prepares drafts for a person to approve", rule.name))
        });
        let clues = Clues {
            evidence: &evidence,
            known: &known,
        };
        match self.carry_out(mail, rule, &sender_domain, &clues, &mut plan) {
            Ok(()) => {
                fill_digests(mail, &mut plan);
                plan.respond = Respond::Auto;
                plan.original = Filing {
                    human: false,
                    folder: self.filing_folder(rule),
                };
                if let Some(why) = draft {
                    make_draft(&mut plan, &why, "", &self.config);
                }
            }
            Err(reason) => {
                plan.outgoing.clear();
                plan.keep_documents.clear();
                plan.crm_updates.clear();
                plan.crm_actions.clear();
                plan.reason = reason;
                if self.config.drafts.when_held || rule.then.respond == Respond::Draft {
                    self.draft_for_ambiguity(mail, rule, &sender_domain, &mut plan);
                }
            }
        }
        plan
    }

    /// An opportunity lookup that found several of the sender's own opportunities for
    /// the customer: a reply to the partner with the people every candidate shares on
    /// cc, and the candidates with their people in the note, for a person to choose.
    fn draft_for_ambiguity(&self, mail: &Mail, rule: &Rule, sender_domain: &str, plan: &mut Plan) {
        let a = &rule.then;
        let Some(customer) = plan.fields.get("customer_name").cloned() else {
            return;
        };
        let candidates = self
            .directory
            .opportunities_by_customer(&customer, sender_domain);
        if a.lookup != Some(Lookup::Opportunity) || candidates.len() < 2 {
            return;
        }
        let address =
            |role: Role, o: &Opportunity| self.role_address(role, Some(o), None, sender_domain);
        let mut cc = Vec::new();
        for role in &a.cc {
            let first = address(*role, candidates[0]);
            if first.is_some() && candidates.iter().all(|o| address(*role, o) == first) {
                cc.extend(first.filter(|f| !cc.contains(f)));
            }
        }
        let mut listed = String::from("The candidates:\n");
        for o in &candidates {
            let people: Vec<String> = (a.cc.iter())
                .filter_map(|r| address(*r, o).map(|addr| format!("{} {addr}", role_label(*r))))
                .collect();
            listed.push_str(&format!(
                "- {} {} ({}): {}\n",
                o.opportunity_id,
                o.opportunity_name,
                o.account_name,
                people.join(", ")
            ));
        }
        let attached = if a.reattach {
            documents(mail)
        } else {
            Vec::new()
        };
        let attached = attached
            .iter()
            .map(|i| (*i, mail.attachments[*i].name.clone()))
            .collect();
        let template = a.template.clone().unwrap_or_default();
        let to = reply_address(mail);
        plan.outgoing
            .push(reply(mail, &to, cc, &template, String::new(), attached));
        fill_digests(mail, plan);
        let why = format!(
            "{}; choose the opportunity, add its people and write the answer",
            plan.reason
        );
        make_draft(plan, &why, &listed, &self.config);
    }

    /// A bounce of our own message: who it failed for is blocked, and nothing more is
    /// decided. True when it is one.
    fn holds_for_bounce(&self, mail: &Mail, gate: &guard::Gate, plan: &mut Plan) -> bool {
        let bounce = guard::bounced_answer(mail, &self.config, &gate.sender, &|a| {
            self.directory.is_internal(a)
        });
        if let Some(why) = &bounce.ignored {
            plan.guards.push(why.clone());
        }
        plan.bounced = bounce.failed;
        plan.bounce_of = bounce.about;
        if plan.bounced.is_empty() {
            return false;
        }
        let why = format!(
            "a bounce of our own message: delivery failed for {}; no automatic answer to {} for {} days",
            plan.bounced.join(", "),
            if plan.bounced.len() == 1 { "it" } else { "them" },
            self.config.limits.bounce_block_days
        );
        plan.guards.push(why.clone());
        plan.reason = why;
        true
    }

    /// What keeps a classified message from being answered, in order: machine mail,
    /// sorting-only rules (filed as they are), unreadable documents, damage, no rule,
    /// our own thread, a rule that leaves it for a person. The rule when none does.
    /// With the rule, why the answer is to be a draft (our own thread, with
    /// `drafts.when_held`).
    fn screen<'r>(
        &self,
        mail: &Mail,
        gate: &guard::Gate,
        matched: Option<&'r Rule>,
        plan: &mut Plan,
    ) -> Option<(&'r Rule, Option<String>)> {
        let files = matched.is_some_and(|r| r.then.respond == Respond::File);
        // Mail no person wrote asks nothing: `other`, whatever words it contains.
        if !gate.machine.is_empty() && !files {
            if let Some(rule) = plan.rule.take() {
                plan.evidence.push(format!(
                    "its words would match rule {rule} had a person written it"
                ));
            }
            plan.category = Category::Other;
            plan.conditions.clear();
            plan.reason = format!("no automatic answer: {}", gate.machine.join("; "));
            plan.guards.extend(gate.machine.iter().cloned());
            return None;
        }
        // Sorting only: filed whatever else is wrong with it, since nothing is sent.
        if let Some(rule) = matched.filter(|_| files) {
            plan.guards = mail
                .damage
                .iter()
                .chain(&mail.unreadable)
                .cloned()
                .collect();
            plan.respond = Respond::File;
            plan.reason = (rule.then.reason.clone())
                .unwrap_or_else(|| format!("filed by rule {}", rule.name));
            plan.original = Filing {
                human: false,
                folder: self.filing_folder(rule),
            };
            return None;
        }
        if !mail.unreadable.is_empty() {
            plan.guards = mail.unreadable.clone();
            plan.reason = format!(
                "an attached document cannot be read: {}; left for a human",
                mail.unreadable.join("; ")
            );
            return None;
        }
        let risky = crate::core::message::risky_attachments(mail);
        if !risky.is_empty() {
            // Never passed on to the desk's people or kept as a PO: a person looks first.
            plan.guards = risky.clone();
            plan.reason = format!(
                "an attachment is a program or active content ({}): nothing is forwarded or kept automatically; left for a human",
                risky.join("; ")
            );
            return None;
        }
        if !mail.damage.is_empty() {
            // Classified for the audit, but a guess from damaged mail is never sent.
            plan.guards = mail.damage.clone();
            plan.reason = format!(
                "the message is damaged: {}; left for a human",
                mail.damage.join("; ")
            );
            return None;
        }
        let Some(rule) = matched else {
            plan.reason = "no rule matched: left for a human".into();
            return None;
        };
        // Machine mail returned above: what is left of the loop guards is our thread. A
        // person writing in it may get a draft, never an automatic answer.
        plan.guards = gate.thread.iter().cloned().collect();
        let mut held = None;
        if !plan.guards.is_empty() {
            plan.reason = format!("no automatic answer: {}", plan.guards.join("; "));
            if !self.config.drafts.when_held || rule.then.respond == Respond::None {
                return None;
            }
            held = Some(plan.guards.join("; "));
        }
        if rule.then.respond == Respond::None {
            plan.reason = (rule.then.reason.clone())
                .unwrap_or_else(|| format!("rule {} leaves this for a human", rule.name));
            return None;
        }
        if held.is_some() {
            return Some((rule, held));
        }
        Some((rule, None))
    }

    /// The sender's verified domain, when the rule may answer it: partners only unless
    /// the rule says `answer: anyone`.
    fn answerable_sender(
        &self,
        gate: &guard::Gate,
        rule: &Rule,
        plan: &mut Plan,
    ) -> Option<String> {
        let sender = &gate.sender;
        plan.evidence
            .push(format!("sender authentication: {}", sender.evidence));
        let Some(sender_domain) = sender.domain.clone() else {
            let problem = sender.problem.clone().unwrap_or_default();
            plan.guards.push(problem.clone());
            plan.reason = format!("no automatic answer: {problem}");
            return None;
        };
        if rule.then.answer == AnswerPolicy::Partners
            && self.directory.partner(&sender_domain).is_none()
        {
            let problem = format!(
                "the sender's domain {sender_domain} is not a partner in the directory (rule {} answers partners only)",
                rule.name
            );
            plan.guards.push(problem.clone());
            plan.reason = format!("no automatic answer: {problem}; left for a human");
            return None;
        }
        Some(sender_domain)
    }

    /// Ids the extractors missed but the directory knows, found as whole tokens in the text.
    fn fill_from_directory(
        &self,
        known: &KnownIds<'_>,
        fields: &mut BTreeMap<String, String>,
        notes: &mut Vec<String>,
    ) {
        for (field, found) in [
            ("opportunity_id", &known.opportunity_ids),
            ("deal_id", &known.deal_ids),
            ("quote_number", &known.quote_numbers),
        ] {
            if fields.contains_key(field) {
                continue;
            }
            if found.len() == 1 {
                fields.insert(field.into(), found[0].to_string());
                notes.push(format!(
                    "{field} {:?} found in the text (known to the directory)",
                    found[0]
                ));
            } else if found.len() > 1 {
                notes.push(format!(
                    "several known {field}s in the text: {}",
                    found.join(", ")
                ));
            }
        }
    }

    /// Follows the rule's procedure. Err is the reason to leave the message for a human.
    fn carry_out(
        &self,
        mail: &Mail,
        rule: &Rule,
        sender_domain: &str,
        clues: &Clues<'_>,
        plan: &mut Plan,
    ) -> Result<(), String> {
        let a = &rule.then;
        // Procedure C, step 1: the document must carry the required fields.
        if self.ask_for_missing(mail, a, sender_domain, plan)? {
            return Ok(());
        }
        let found = match a.lookup {
            Some(Lookup::Opportunity) => Found {
                opportunity: Some(self.look_up_opportunity(mail, sender_domain, clues, plan)?),
                deal: None,
            },
            Some(Lookup::DealRegistration) => Found {
                opportunity: None,
                deal: Some(self.look_up_deal(a, sender_domain, clues, plan)?),
            },
            None => Found::default(),
        };
        let case = Case {
            mail,
            action: a,
            found: &found,
            sender_domain,
            documents: documents(mail),
        };
        // Forward first: the channel manager must get the document before we tell the
        // partner it was submitted.
        if let Some(fwd) = &a.forward {
            self.add_forward(&case, fwd, plan)?;
        }
        if let Some(template) = &a.template {
            self.add_reply(&case, template, plan)?;
        }
        if a.keep_documents {
            keep_for_crm(&case, plan)?;
        }
        if let (Some(change), Some(d)) = (&a.deal_status, found.deal) {
            plan.crm_updates.push(CrmUpdate {
                record: format!("deal_registration/{}", d.deal_id),
                field: "status".into(),
                from: change.from.clone(),
                to: change.to.clone(),
            });
        }
        plan.crm_actions = crm_actions(&case, plan);
        plan.reason = match (found.opportunity, found.deal) {
            (Some(o), _) => format!(
                "{} for opportunity {} ({})",
                plan.category, o.opportunity_id, o.account_name
            ),
            (None, Some(d)) => format!(
                "{} for deal registration {} ({})",
                plan.category, d.deal_id, d.customer_name
            ),
            _ => format!(
                "{} answered with template {}",
                plan.category,
                a.template.as_deref().unwrap_or("-")
            ),
        };
        Ok(())
    }

    /// When the rule's required fields are not all there, the answer asks the partner
    /// for them (procedure C, step 1). True when that is the plan.
    fn ask_for_missing(
        &self,
        mail: &Mail,
        a: &Action,
        sender_domain: &str,
        plan: &mut Plan,
    ) -> Result<bool, String> {
        let missing: Vec<String> = a
            .required_fields
            .iter()
            .filter(|f| !plan.fields.contains_key(*f))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        plan.missing = missing.clone();
        let template = a
            .missing_template
            .as_deref()
            .ok_or("rule has no missing_template")?;
        let labels: Vec<String> = missing.iter().map(|f| field_label(f)).collect();
        let mut ctx = self.context(mail, a, &plan.fields, None, None, sender_domain);
        ctx["missing"] = json!(labels);
        ctx["missing_fields"] = json!(missing);
        let body = self.render(template, &ctx)?;
        let to = reply_address(mail);
        plan.outgoing
            .push(reply(mail, &to, Vec::new(), template, body, Vec::new()));
        plan.reason = format!("{} is missing: asked the partner for it", labels.join(", "));
        Ok(true)
    }

    /// The one opportunity the message is about, of the sender's own partner.
    fn look_up_opportunity(
        &self,
        mail: &Mail,
        sender_domain: &str,
        clues: &Clues<'_>,
        plan: &mut Plan,
    ) -> Result<&Opportunity, String> {
        let (opp, how) = self.find_opportunity(&plan.fields, mail, sender_domain)?;
        plan.evidence.push(how);
        self.one_opportunity(opp, clues, sender_domain)?;
        if !domain_matches(sender_domain, &opp.partner_domain) {
            return Err(format!(
                "opportunity {} belongs to partner {}, not to the sender's domain {sender_domain}: nothing sent automatically",
                opp.opportunity_id, opp.partner_domain
            ));
        }
        Ok(opp)
    }

    /// The deal registration named by `deal_id`, checked against everything the message
    /// and its document say (partner, type, status, partner and customer names).
    fn look_up_deal(
        &self,
        a: &Action,
        sender_domain: &str,
        clues: &Clues<'_>,
        plan: &mut Plan,
    ) -> Result<&DealRegistration, String> {
        let id = plan
            .fields
            .get("deal_id")
            .ok_or("no deal registration id in the message")?;
        let found = self.directory.deals_by_id(id);
        let d = match found.as_slice() {
            [] => return Err(format!("deal registration {id} is not in the directory")),
            [d] => *d,
            _ => {
                return Err(format!(
                    "deal registration {id} appears {} times in the directory",
                    found.len()
                ))
            }
        };
        plan.evidence
            .push(format!("deal registration {} found by deal_id", d.deal_id));
        self.one_deal(d, clues)?;
        if !domain_matches(sender_domain, &d.partner_domain) {
            return Err(format!(
                "deal registration {} belongs to partner {}, not to the sender's domain {sender_domain}: nothing sent automatically",
                d.deal_id, d.partner_domain
            ));
        }
        check_deal_state(d, a)?;
        self.check_deal_names(d, &plan.fields)?;
        Ok(d)
    }

    /// The partner and customer the document names must be the registration's.
    fn check_deal_names(
        &self,
        d: &DealRegistration,
        fields: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        use crate::core::directory::same_company;
        if let Some(p) = fields.get("partner_name") {
            let partner = self.directory.partner(&d.partner_domain);
            let mut known = std::iter::once(d.partner_name.as_str())
                .chain(partner.map(|p| p.partner_name.as_str()));
            if !known.any(|k| same_company(p, k)) {
                return Err(format!(
                    "the document names partner {p:?} but deal registration {} is for {:?}",
                    d.deal_id, d.partner_name
                ));
            }
        }
        if let Some(c) = fields.get("customer_name") {
            if !d.customer_name.is_empty() && !same_company(c, &d.customer_name) {
                return Err(format!(
                    "the document names customer {c:?} but deal registration {} is for {:?}",
                    d.deal_id, d.customer_name
                ));
            }
        }
        Ok(())
    }

    /// The forward to the role the rule names (the channel manager), documents attached.
    fn add_forward(
        &self,
        case: &Case,
        fwd: &crate::core::rules::Forward,
        plan: &mut Plan,
    ) -> Result<(), String> {
        let (mail, a, sender_domain, documents) =
            (case.mail, case.action, case.sender_domain, &case.documents);
        let (opportunity, deal) = (case.found.opportunity, case.found.deal);
        let Some(to) = self.role_address(fwd.to, opportunity, deal, sender_domain) else {
            return Err(format!("no address for {:?} in the directory", fwd.to));
        };
        let ctx = self.context(mail, a, &plan.fields, opportunity, deal, sender_domain);
        let body = self.render(&fwd.template, &ctx)?;
        let idx = if fwd.attach {
            documents.to_vec()
        } else {
            Vec::new()
        };
        plan.outgoing.push(Outgoing {
            kind: Kind::Forward,
            to: vec![to],
            cc: Vec::new(),
            template: fwd.template.clone(),
            subject: format!("Fwd: {}", mail.subject),
            attachments: idx
                .iter()
                .map(|i| mail.attachments[*i].name.clone())
                .collect(),
            attachment_index: idx,
            attachment_sha256: Vec::new(),
            body,
            in_reply_to: None,
            references: Vec::new(),
        });
        Ok(())
    }

    /// The answer to the partner, with the rule's roles on cc and the documents
    /// re-attached when the rule says so.
    fn add_reply(&self, case: &Case, template: &str, plan: &mut Plan) -> Result<(), String> {
        let (mail, a, sender_domain, documents) =
            (case.mail, case.action, case.sender_domain, &case.documents);
        let (opportunity, deal) = (case.found.opportunity, case.found.deal);
        let partner_to = reply_address(mail);
        let mut cc: Vec<String> = Vec::new();
        for role in &a.cc {
            if let Some(addr) = self.role_address(*role, opportunity, deal, sender_domain) {
                if !cc.contains(&addr) && !partner_to.contains(&addr) {
                    cc.push(addr);
                }
            }
        }
        let ctx = self.context(mail, a, &plan.fields, opportunity, deal, sender_domain);
        let body = self.render(template, &ctx)?;
        let idx = if a.reattach {
            documents.to_vec()
        } else {
            Vec::new()
        };
        let attached = idx
            .iter()
            .map(|i| (*i, mail.attachments[*i].name.clone()))
            .collect();
        plan.outgoing
            .push(reply(mail, &partner_to, cc, template, body, attached));
        Ok(())
    }
    /// Every id in the evidence, and every known id in the partner's text and documents,
    /// must point at the opportunity found: two records named is for a person to settle.
    fn one_opportunity(
        &self,
        found: &Opportunity,
        clues: &Clues<'_>,
        sender_domain: &str,
    ) -> Result<(), String> {
        let d = &self.directory;
        let (evidence, known) = (clues.evidence, clues.known);
        let mut named: Vec<(String, &Opportunity)> = Vec::new();
        let ids = evidence
            .iter()
            .map(|e| (e.field.as_str(), e.value.as_str(), e.source.as_str()));
        // A few of each are enough to see a second record; a flood of ids stays linear.
        let found_ids = few_ids(&known.opportunity_ids, "opportunity_id")
            .chain(few_ids(&known.quote_numbers, "quote_number"))
            .chain(few_ids(&known.deal_ids, "deal_id"));
        for (field, value, source) in ids.chain(found_ids) {
            let opps: Vec<&Opportunity> = match field {
                "opportunity_id" => d.opportunities_by_id(value),
                "quote_number" => d.opportunities_by_quote(value),
                "deal_id" => d
                    .deals_by_id(value)
                    .iter()
                    .flat_map(|r| d.opportunities_by_id(&r.linked_opportunity_id))
                    .collect(),
                "customer_name" => d.opportunities_by_customer(value, sender_domain),
                _ => continue,
            };
            if let [o] = opps.as_slice() {
                if o.opportunity_id != found.opportunity_id {
                    named.push((format!("{field} {value} in {source}"), o));
                }
            }
        }
        if named.is_empty() {
            return Ok(());
        }
        let mut candidates = vec![format!("{} ({})", found.opportunity_id, found.account_name)];
        let mut listed = vec![found.opportunity_id.as_str()];
        for (how, o) in &named {
            if !listed.contains(&o.opportunity_id.as_str()) {
                listed.push(&o.opportunity_id);
                candidates.push(format!(
                    "{} ({}) by {how}",
                    o.opportunity_id, o.account_name
                ));
            }
        }
        Err(format!(
            "the message points at more than one opportunity: {}; a person decides",
            candidates.join("; ")
        ))
    }

    /// Every deal registration id in the evidence must be the one found.
    fn one_deal(&self, found: &DealRegistration, clues: &Clues<'_>) -> Result<(), String> {
        let mut others: Vec<String> = Vec::new();
        let ids = clues
            .evidence
            .iter()
            .filter(|e| e.field == "deal_id")
            .map(|e| e.value.as_str());
        for v in ids.chain(clues.known.deal_ids.iter().take(8).copied()) {
            let regs = self.directory.deals_by_id(v);
            if let [reg] = regs[..] {
                // The same registration written twice (a label, then the bare id) counts once.
                if !reg.deal_id.eq_ignore_ascii_case(&found.deal_id)
                    && !others.iter().any(|o| o.eq_ignore_ascii_case(&reg.deal_id))
                {
                    others.push(reg.deal_id.clone());
                }
            }
        }
        if others.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the message names more than one deal registration: {} and {}; a person decides",
            found.deal_id,
            others.join(", ")
        ))
    }

    /// Account names of the sender's partner that the partner's new text, subject (not a
    /// reply's) or documents name.
    fn customers_mentioned(&self, mail: &Mail, sender_domain: &str) -> Vec<&str> {
        let mut found: Vec<&str> = Vec::new();
        for (source, text) in rules::evidence_sources(mail) {
            if source.starts_with("file name ") {
                continue;
            }
            for c in self.directory.customers_in(&text, sender_domain) {
                if !found
                    .iter()
                    .any(|f| crate::core::directory::same_company(f, c))
                {
                    found.push(c);
                }
            }
        }
        found
    }

    /// The opportunity, from the most specific evidence to the least: opportunity id, a
    /// deal registration's linked opportunity, quote number, customer. The first way that
    /// finds exactly one decides; one that finds several stops the lookup (ambiguous).
    fn find_opportunity(
        &self,
        fields: &BTreeMap<String, String>,
        mail: &Mail,
        sender_domain: &str,
    ) -> Result<(&Opportunity, String), String> {
        let d = &self.directory;
        let mut tried = Vec::new();
        if let Some(id) = fields.get("opportunity_id") {
            let found = exactly_one(
                d.opportunities_by_id(id),
                &mut tried,
                |o| format!("opportunity {} found by opportunity id", o.opportunity_id),
                || format!("opportunity id {id} is not in the directory"),
                |many| format!("opportunity id {id} matches {} opportunities", many.len()),
            )?;
            if let Some(found) = found {
                return Ok(found);
            }
        }
        if let Some(id) = fields.get("deal_id") {
            if let Some(found) = self.through_deal(id, &mut tried)? {
                return Ok(found);
            }
        }
        if let Some(q) = fields.get("quote_number") {
            let found = exactly_one(
                d.opportunities_by_quote(q),
                &mut tried,
                |o| format!("opportunity {} found by quote number {q}", o.opportunity_id),
                || format!("quote {q} is not in the directory"),
                |many| {
                    let n = many.len();
                    format!(
                        "quote {q} matches {n} opportunities ({}): ambiguous",
                        ids(many)
                    )
                },
            )?;
            if let Some(found) = found {
                return Ok(found);
            }
        }
        if let Some(found) = self.by_customer(fields, mail, sender_domain, &mut tried)? {
            return Ok(found);
        }
        if tried.is_empty() {
            Err("no opportunity id, deal registration, quote number or customer name in the message to look the opportunity up".into())
        } else {
            Err(format!("opportunity not found: {}", tried.join("; ")))
        }
    }

    /// The opportunity a deal registration links to.
    fn through_deal(
        &self,
        id: &str,
        tried: &mut Vec<String>,
    ) -> Result<Option<(&Opportunity, String)>, String> {
        let d = &self.directory;
        let reg = exactly_one(
            d.deals_by_id(id),
            tried,
            |_| String::new(),
            || format!("deal registration {id} is not in the directory"),
            |many| format!("deal registration {id} appears {} times", many.len()),
        )?;
        let Some((reg, _)) = reg else { return Ok(None) };
        if reg.linked_opportunity_id.is_empty() {
            tried.push(format!("deal registration {id} has no linked opportunity"));
            return Ok(None);
        }
        let linked = &reg.linked_opportunity_id;
        exactly_one(
            d.opportunities_by_id(linked),
            tried,
            |o| {
                let (o, r) = (&o.opportunity_id, &reg.deal_id);
                format!("opportunity {o} found through deal registration {r}")
            },
            || format!("deal registration {id} links to unknown opportunity {linked}"),
            |many| {
                format!(
                    "deal registration {id} links to {} opportunities",
                    many.len()
                )
            },
        )
    }

    /// By a "Customer Name:" label; else the partner's own accounts named anywhere in
    /// what it wrote ("Angebot für Müller Maschinenbau GmbH"): one decides, more do not.
    /// Looked for only when nothing more specific was found: it reads every text.
    fn by_customer(
        &self,
        fields: &BTreeMap<String, String>,
        mail: &Mail,
        sender_domain: &str,
        tried: &mut Vec<String>,
    ) -> Result<Option<(&Opportunity, String)>, String> {
        let mentioned;
        let (c, named) = match fields.get("customer_name") {
            Some(c) => (c.as_str(), ""),
            None => {
                mentioned = self.customers_mentioned(mail, sender_domain);
                match &mentioned[..] {
                    [c] => (*c, " named in the text"),
                    [] => return Ok(None),
                    many => {
                        return Err(format!(
                            "the text names several customers of {sender_domain} ({}): ambiguous",
                            many.join(", ")
                        ))
                    }
                }
            }
        };
        let mut found = self.directory.opportunities_by_customer(c, sender_domain);
        let mut by_name = "";
        if found.len() > 1 {
            // "Initech - Ultimate upgrade": the opportunity's own name tells two apart.
            let texts: Vec<String> = rules::evidence_sources(mail)
                .iter()
                .map(|(_, t)| crate::core::directory::name_haystack(t))
                .collect();
            let named: Vec<&Opportunity> = found
                .iter()
                .copied()
                .filter(|o| crate::core::directory::opportunity_named(o, &texts))
                .collect();
            if let [one] = named[..] {
                found = vec![one];
                by_name = " and the opportunity's name";
            }
        }
        exactly_one(
            found,
            tried,
            |o| {
                format!(
                "opportunity {} found by customer {c:?}{named}{by_name} and partner domain {sender_domain}",
                o.opportunity_id
            )
            },
            || format!("no opportunity of {sender_domain} for customer {c:?}"),
            |many| {
                format!(
                "customer {c:?}{named} has {} opportunities with {sender_domain} ({}): ambiguous",
                many.len(),
                ids(many)
            )
            },
        )
    }

    fn role_address(
        &self,
        role: Role,
        opp: Option<&Opportunity>,
        deal: Option<&DealRegistration>,
        sender_domain: &str,
    ) -> Option<String> {
        let v = match role {
            Role::SalesRep => opp.map(|o| o.owner_email.clone()),
            Role::Isr => opp.map(|o| o.isr_email.clone()),
            Role::OpportunityCam => opp.map(|o| o.cam_email.clone()),
            Role::PartnerCam => self
                .directory
                .partner(sender_domain)
                .map(|p| p.cam_email.clone()),
            Role::Partnerorderops => Some(self.config.desk.order_ops.to_lowercase()),
            Role::ChannelManager => deal.map(|d| d.channel_manager_email.clone()),
        };
        v.filter(|s| s.contains('@'))
    }

    fn render(&self, template: &str, ctx: &serde_json::Value) -> Result<String, String> {
        self.templates
            .render(template, ctx)
            .map_err(|p| format!("template problem, nothing sent: {p}"))
    }

    fn context(
        &self,
        mail: &Mail,
        action: &Action,
        fields: &BTreeMap<String, String>,
        opp: Option<&Opportunity>,
        deal: Option<&DealRegistration>,
        sender_domain: &str,
    ) -> serde_json::Value {
        let from = mail.from.clone().unwrap_or(Mailbox {
            name: None,
            address: String::new(),
        });
        let partner = self.directory.partner(sender_domain);
        let mut ctx = base_context(&self.config, action);
        ctx["partner"] = json!({
            "name": from.name.clone().unwrap_or_else(|| from.address.clone()),
            "first_name": first_name(from.name.as_deref()),
            "email": from.address,
            "domain": sender_domain,
            // From the directory only: the sender's own text could name anyone.
            "company": partner.map(|p| p.partner_name.clone()).unwrap_or_else(|| sender_domain.to_string()),
        });
        ctx["subject"] = json!(mail.subject);
        ctx["fields"] = json!(fields);
        ctx["attachments"] = json!(documents(mail)
            .iter()
            .map(|i| mail.attachments[*i].name.clone())
            .collect::<Vec<_>>());
        ctx["original"] = json!({
            "from": from.address,
            "date": mail.date.clone().unwrap_or_default(),
            "message_id": mail.message_id.clone().unwrap_or_default(),
            "text": mail.new_text,
        });
        if let Some(o) = opp {
            ctx["opportunity"] = json!(o);
        }
        if let Some(d) = deal {
            ctx["deal"] = json!(d);
        }
        ctx
    }
}

/// What the message says about which records it is about: the extractors' values (every
/// What the lookup found: the opportunity or the deal registration the message is about.
#[derive(Default)]
struct Found<'a> {
    opportunity: Option<&'a Opportunity>,
    deal: Option<&'a DealRegistration>,
}

/// What one way of looking a record up found: exactly one decides (with how it was
/// found), none is noted in `tried` so the next way is tried, several stop the lookup.
fn exactly_one<'a, T>(
    found: Vec<&'a T>,
    tried: &mut Vec<String>,
    how: impl FnOnce(&T) -> String,
    none: impl FnOnce() -> String,
    many: impl FnOnce(&[&'a T]) -> String,
) -> Result<Option<(&'a T, String)>, String> {
    match found[..] {
        [one] => Ok(Some((one, how(one)))),
        [] => {
            tried.push(none());
            Ok(None)
        }
        _ => Err(many(&found)),
    }
}

/// The opportunity ids of several candidates, for a message.
fn ids(many: &[&Opportunity]) -> String {
    let ids: Vec<&str> = many.iter().map(|o| o.opportunity_id.as_str()).collect();
    ids.join(", ")
}

/// The digest of each attachment an outgoing message carries, for the audit log.
fn fill_digests(mail: &Mail, plan: &mut Plan) {
    for o in &mut plan.outgoing {
        o.attachment_sha256 = (o.attachment_index.iter())
            .map(|&i| {
                (mail.attachments.get(i))
                    .map(|a| hex(&Sha256::digest(&a.bytes)))
                    .unwrap_or_default()
            })
            .collect();
    }
}

/// Turns a plan that would answer into one that prepares the answer in Drafts: nothing
/// is sent, the original waits flagged for a person, and the CRM steps are that person's.
pub fn make_draft(plan: &mut Plan, why: &str, more: &str, config: &Config) {
    plan.respond = Respond::Draft;
    plan.reason = format!("drafted for a person to approve: {why}");
    plan.draft_note = Some(format!(
        "[triage] A draft: nothing was sent. {why}.\n{more}Check it, delete this note and send it, or delete the draft.\n"
    ));
    plan.keep_documents.clear();
    plan.crm_updates.clear();
    plan.crm_actions.clear();
    plan.original = Filing {
        human: true,
        folder: config.folders.human.clone(),
    };
}

/// How a role reads in a note to a person.
fn role_label(role: Role) -> &'static str {
    match role {
        Role::SalesRep => "sales rep",
        Role::Isr => "ISR",
        Role::OpportunityCam | Role::PartnerCam => "CAM",
        Role::Partnerorderops => "order ops",
        Role::ChannelManager => "channel manager",
    }
}

/// One message under one rule's procedure, with what the lookup found.
struct Case<'a> {
    mail: &'a Mail,
    action: &'a Action,
    found: &'a Found<'a>,
    sender_domain: &'a str,
    /// The attachments that count as the partner's documents (PO, PoE, SOW).
    documents: Vec<usize>,
}

/// The registration must be of the rule's type and in the status the change starts from.
fn check_deal_state(d: &DealRegistration, a: &Action) -> Result<(), String> {
    if let Some(kind) = &a.deal_type {
        if !d.kind.eq_ignore_ascii_case(kind) {
            return Err(format!(
                "deal registration {} is of type {}, expected {kind}",
                d.deal_id, d.kind
            ));
        }
    }
    if let Some(StatusChange { from, .. }) = &a.deal_status {
        if !d.status.eq_ignore_ascii_case(from) {
            return Err(format!(
                "deal registration {} has status {:?}, expected {from:?}",
                d.deal_id, d.status
            ));
        }
    }
    Ok(())
}

/// POs and PoEs kept under the record they belong to; two attachments of one name are
/// two documents, both kept.
/// The CRM steps of the procedure: the PO onto its opportunity; for a PoE, the
/// registration's status, then a note for the Channel Manager on the linked opportunity
/// with the PoE.
fn crm_actions(case: &Case, plan: &Plan) -> Vec<crate::core::crm::CrmAction> {
    use crate::core::crm::CrmAction;
    let mut out = Vec::new();
    if let Some(o) = case.found.opportunity {
        for k in &plan.keep_documents {
            out.push(CrmAction::AttachDocument {
                opportunity: o.opportunity_id.clone(),
                document: k.name.clone(),
                under: k.under.clone(),
                sha256: k.sha256.clone(),
            });
        }
    }
    let Some(d) = case.found.deal else { return out };
    for u in &plan.crm_updates {
        out.push(CrmAction::SetRegistrationStatus {
            registration: d.deal_id.clone(),
            from: u.from.clone(),
            to: u.to.clone(),
        });
    }
    let forwarded = plan.outgoing.iter().any(|o| o.kind == Kind::Forward);
    if forwarded && !d.linked_opportunity_id.is_empty() && d.channel_manager_email.contains('@') {
        let kept = plan.keep_documents.first();
        out.push(CrmAction::PostNote {
            opportunity: d.linked_opportunity_id.clone(),
            user: d.channel_manager_email.clone(),
            text: format!(
                "Service Attach proof of execution for deal registration {} ({}), from {}.",
                d.deal_id, d.customer_name, d.partner_name
            ),
            document: kept.map(|k| k.name.clone()),
            under: kept.map(|k| k.under.clone()),
        });
    }
    out
}

fn keep_for_crm(case: &Case, plan: &mut Plan) -> Result<(), String> {
    let (mail, a, documents) = (case.mail, case.action, &case.documents);
    let under = match (case.found.opportunity, case.found.deal) {
        (Some(o), _) => format!("opportunity/{}", o.opportunity_id),
        (None, Some(d)) => format!("deal/{}", d.deal_id),
        _ => return Err("keep_documents without a looked-up record".into()),
    };
    // The procedure keeps and forwards the partner's document: without one there is
    // nothing to keep, upload or forward, and a person asks for it.
    if documents.is_empty() {
        return Err(match a.category {
            Category::PurchaseOrder => "a purchase order without the PO document attached".into(),
            Category::ProofOfExecution => {
                "a proof of execution without the PoE or SOW document attached".into()
            }
            other => format!("a {other} message without its document attached"),
        });
    }
    let mut names = crate::core::message::UniqueNames::default();
    for i in documents {
        let att = &mail.attachments[*i];
        plan.keep_documents.push(KeptDocument {
            name: names.give(&att.name),
            attachment_index: *i,
            under: under.clone(),
            sha256: hex(&Sha256::digest(&att.bytes)),
        });
    }
    Ok(())
}

/// distinct id) and the ids the directory knows that its text names. Worked out once.
struct Clues<'a> {
    evidence: &'a [rules::Evidence],
    known: &'a KnownIds<'a>,
}

/// A few of the known ids of one kind, as (field, value, where): enough to see a second
/// record named, while a flood of ids stays linear.
fn few_ids<'a>(
    list: &'a [&'a str],
    field: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
    list.iter().take(8).map(move |v| (field, *v, "the text"))
}

/// The variables every template gets; `opportunity` and `deal` only with their lookup.
fn base_context(config: &Config, action: &Action) -> serde_json::Value {
    json!({
        "desk": {
            "name": config.desk.name,
            "address": config.desk.address,
            "order_ops": config.desk.order_ops,
            "billing_ops": config.desk.billing_ops.clone().unwrap_or_default(),
            "signature": config.desk.signature,
        },
        "category": action.category.as_str(),
    })
}

/// The context `triage check` renders every template with, shaped like the real one.
fn sample_context(config: &Config, action: &Action, missing: bool) -> serde_json::Value {
    let mut ctx = base_context(config, action);
    ctx["partner"] = json!({"name": "Alex Partner", "first_name": "Alex", "email": "alex@partner.example", "domain": "partner.example", "company": "Partner Co"});
    ctx["subject"] = json!("Sample subject");
    ctx["fields"] = json!({"opportunity_id": "0065e00000AbCdEAAX", "deal_id": "DR-1", "quote_number": "Q-1", "po_number": "PO-1", "customer_name": "Customer Inc", "partner_name": "Partner Co"});
    ctx["attachments"] = json!(["document.pdf"]);
    ctx["original"] =
        json!({"from": "alex@partner.example", "date": "", "message_id": "<x@y>", "text": "..."});
    if missing {
        ctx["missing"] = json!(["Customer Name"]);
        ctx["missing_fields"] = json!(["customer_name"]);
    }
    match action.lookup {
        Some(Lookup::Opportunity) => ctx["opportunity"] = json!(Opportunity::default()),
        Some(Lookup::DealRegistration) => ctx["deal"] = json!(DealRegistration::default()),
        None => {}
    }
    ctx
}

fn first_name(name: Option<&str>) -> String {
    let Some(n) = name else { return String::new() };
    // "Doe, Jane" is how Outlook address books often write it.
    if let Some((_, first)) = n.split_once(',') {
        return first.split_whitespace().next().unwrap_or("").to_string();
    }
    n.split_whitespace().next().unwrap_or("").to_string()
}

/// Indexes of the attachments that are the partner's documents.
fn documents(mail: &Mail) -> Vec<usize> {
    (0..mail.attachments.len()).collect()
}

/// The partner's address for the reply: Reply-To when it is set (the guard already
/// checked it is on the From domain), otherwise From.
fn reply_address(mail: &Mail) -> Vec<String> {
    if !mail.reply_to.is_empty() {
        return mail.reply_to.iter().map(|m| m.address.clone()).collect();
    }
    mail.from.iter().map(|m| m.address.clone()).collect()
}

fn reply(
    mail: &Mail,
    to: &[String],
    cc: Vec<String>,
    template: &str,
    body: String,
    attachments: Vec<(usize, String)>,
) -> Outgoing {
    let subject = if mail.subject.to_ascii_lowercase().starts_with("re:") {
        mail.subject.clone()
    } else {
        format!("Re: {}", mail.subject)
    };
    let mut references = mail.references.clone();
    if references.is_empty() {
        references.extend(mail.in_reply_to.iter().cloned());
    }
    if let Some(id) = &mail.message_id {
        if !references.contains(id) {
            references.push(id.clone());
        }
    }
    Outgoing {
        kind: Kind::Reply,
        to: to.to_vec(),
        cc,
        template: template.into(),
        subject,
        attachments: attachments.iter().map(|(_, n)| n.clone()).collect(),
        attachment_index: attachments.iter().map(|(i, _)| *i).collect(),
        attachment_sha256: Vec::new(),
        body,
        in_reply_to: mail.message_id.clone(),
        references,
    }
}

/// The decision in words, the way a specialist would explain it to a colleague.
pub fn explain(name: &str, plan: &Plan) -> String {
    use crate::core::escape::for_terminal as esc;
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{name}");
    let _ = writeln!(
        s,
        "  message-id: {}",
        esc(plan.message_id.as_deref().unwrap_or("(none)"))
    );
    let _ = writeln!(
        s,
        "  from:       {}",
        esc(plan.from.as_deref().unwrap_or("(none)"))
    );
    let _ = writeln!(s, "  subject:    {}", esc(&plan.subject));
    let _ = writeln!(s, "  category:   {}", plan.category);
    let _ = writeln!(
        s,
        "  rule:       {}",
        esc(plan.rule.as_deref().unwrap_or("(none matched)"))
    );
    for c in &plan.conditions {
        let _ = writeln!(s, "    because   {}", esc(c));
    }
    let _ = writeln!(
        s,
        "  respond:    {}",
        match plan.respond {
            Respond::Auto => "auto",
            Respond::File => "file (sorted, no answer)",
            Respond::None => "none (left for a human)",
            Respond::Draft => "draft (prepared in Drafts for a person to send)",
        }
    );
    let _ = writeln!(s, "  reason:     {}", esc(&plan.reason));
    for (k, v) in &plan.fields {
        let _ = writeln!(s, "  field:      {} = {}", esc(k), esc(v));
    }
    for e in &plan.evidence {
        let _ = writeln!(s, "  evidence:   {}", esc(e));
    }
    if !plan.missing.is_empty() {
        let _ = writeln!(s, "  missing:    {}", esc(&plan.missing.join(", ")));
    }
    for o in &plan.outgoing {
        let kind = if o.kind == Kind::Reply {
            "reply"
        } else {
            "forward"
        };
        let _ = writeln!(s, "  {kind:<10}  to {}", esc(&o.to.join(", ")));
        if !o.cc.is_empty() {
            let _ = writeln!(s, "              cc {}", esc(&o.cc.join(", ")));
        }
        let _ = writeln!(
            s,
            "              subject {:?}, template {}",
            o.subject, o.template
        );
        if !o.attachments.is_empty() {
            let _ = writeln!(
                s,
                "              attachments {}",
                esc(&o.attachments.join(", "))
            );
        }
    }
    for d in &plan.keep_documents {
        let _ = writeln!(s, "  keep:       {} under {}", esc(&d.name), esc(&d.under));
    }
    for u in &plan.crm_updates {
        let _ = writeln!(
            s,
            "  crm:        {} {}: {} -> {}",
            u.record, u.field, u.from, u.to
        );
    }
    for a in &plan.crm_actions {
        let _ = writeln!(s, "  crm step:   {}", esc(&a.describe()));
    }
    let where_ = match (&plan.original.folder, plan.original.human) {
        (Some(f), true) => format!("left for a human in {f}"),
        (None, true) => "left for a human, flagged in the inbox".into(),
        (Some(f), false) => format!("filed to {f}"),
        (None, false) => "stays in the inbox, marked answered".into(),
    };
    let _ = writeln!(s, "  original:   {}", esc(&where_));
    s
}

/// Replaces each winmail.dat by the files Outlook wrapped in it. The plan's attachment
/// positions refer to this list, so the service calls it too before it re-attaches.
pub fn unwrap_attachments(mail: &mut Mail) {
    let mut unpacked = Vec::new();
    for a in std::mem::take(&mut mail.attachments) {
        if !documents::is_tnef(&a.name, &a.content_type, &a.bytes) {
            unpacked.push(a);
            continue;
        }
        match documents::unpack_tnef(&a.bytes) {
            Ok(inner) if !inner.is_empty() => {
                for (name, bytes) in inner {
                    let name = crate::core::message::sanitize_name(&name);
                    let content_type = guess_type(&name);
                    unpacked.push(crate::core::message::Attachment {
                        name,
                        content_type,
                        bytes,
                        text: None,
                    });
                }
            }
            Ok(_) => unpacked.push(a),
            Err(why) => {
                mail.unreadable.push(format!("{}: {why}", a.name));
                unpacked.push(a);
            }
        }
    }
    mail.attachments = unpacked;
}

/// Documents read per message, at most.
const MAX_DOCUMENTS: usize = 10;

/// A content type for a file unpacked from winmail.dat, from its name.
fn guess_type(name: &str) -> String {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("pdf") => "application/pdf",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("odt") => "application/vnd.oasis.opendocument.text",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        _ => "application/octet-stream",
    }
    .to_string()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Plan {
    /// A plan that says what was found and decides nothing yet: left for a human until
    /// a rule, the guards and the lookups say otherwise.
    fn undecided(
        mail: &Mail,
        fields: BTreeMap<String, String>,
        evidence: Vec<String>,
        config: &Config,
    ) -> Plan {
        Plan {
            from: mail.from.as_ref().map(|m| m.address.clone()),
            subject: mail.subject.clone(),
            fields,
            evidence,
            date: mail.date.clone(),
            ..Plan::for_human(mail.message_id.clone(), String::new(), config)
        }
    }

    pub fn for_human(message_id: Option<String>, reason: String, config: &Config) -> Plan {
        Plan {
            message_id,
            from: None,
            subject: String::new(),
            category: Category::Other,
            rule: None,
            respond: Respond::None,
            reason,
            conditions: Vec::new(),
            guards: Vec::new(),
            fields: BTreeMap::new(),
            evidence: Vec::new(),
            missing: Vec::new(),
            outgoing: Vec::new(),
            keep_documents: Vec::new(),
            crm_updates: Vec::new(),
            crm_actions: Vec::new(),
            original: Filing {
                human: true,
                folder: config.folders.human.clone(),
            },
            bounced: Vec::new(),
            bounce_of: Vec::new(),
            draft_note: None,
            made_in_shadow: false,
            date: None,
        }
    }
}

impl Playbook {
    /// A template preview: the message decided with the template of the rule it
    /// matches swapped for `template`, and the answer it would then send, as mail.
    pub fn preview(&mut self, raw: &[u8], template: &str) -> Result<String, String> {
        if !self.templates.names.contains(template) {
            let names = self.templates.names.iter().map(String::as_str);
            return Err(format!(
                "no template {template:?}{}",
                crate::core::problems::did_you_mean(template, names)
            ));
        }
        let first = self.decide(raw);
        let name =
            (first.rule.clone()).ok_or_else(|| format!("no rule matched: {}", first.reason))?;
        let rule = (self.rules.rules.iter().position(|r| r.name == name))
            .ok_or_else(|| format!("rule {name} is gone"))?;
        // Swapped for this one decision only: the playbook stays as loaded.
        let own = self.rules.rules[rule]
            .then
            .template
            .replace(template.to_string());
        let plan = self.decide(raw);
        self.rules.rules[rule].then.template = own;
        let Some(out) = plan.outgoing.iter().find(|o| o.kind == Kind::Reply) else {
            return Err(format!(
                "rule {name} sends no reply to this message: {}",
                plan.reason
            ));
        };
        let mut mail = format!("To: {}\n", out.to.join(", "));
        if !out.cc.is_empty() {
            mail.push_str(&format!("Cc: {}\n", out.cc.join(", ")));
        }
        mail.push_str(&format!("Subject: {}\n", out.subject));
        if !out.attachments.is_empty() {
            mail.push_str(&format!("Attached: {}\n", out.attachments.join(", ")));
        }
        mail.push_str(&format!(
            "(rule {name}, template {template}, {:?})\n\n{}\n",
            plan.respond, out.body
        ));
        Ok(mail)
    }

    /// Whether any message may get a draft: the service then needs a Drafts folder.
    pub fn prepares_drafts(&self) -> bool {
        self.config.drafts.when_held
            || self
                .rules
                .rules
                .iter()
                .any(|r| r.then.respond == Respond::Draft)
    }
}

/// What `triage check` validates: the config, then everything it names. Secrets the
/// service will need are reported as warnings (never their values): `check` also runs on
/// a workstation where they are not set.
pub fn check(
    config_path: &Path,
    directory_override: Option<&Path>,
) -> Result<(Playbook, Vec<String>), Problems> {
    let config = Config::load(config_path)?;
    let mut warnings = Vec::new();
    for (what, secret) in config.secrets() {
        if what.ends_with("refresh_token") && secret.writable_file().is_none() {
            warnings.push(format!(
                "{}: {what}: from an environment variable a rotated refresh token cannot be saved; keep it in a `file`",
                config_path.display()
            ));
        }
        if let Err(e) = secret.read() {
            warnings.push(format!(
                "{}: {what}: {e} (needed by `triage run`)",
                config_path.display()
            ));
        }
    }
    Playbook::load(config, directory_override).map(|b| (b, warnings))
}
