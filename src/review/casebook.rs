//! Rule test cases: a folder of `.eml` files, each with the decision a specialist expects
//! next to it in `NAME.expect.yaml`. Run by `triage test` and by `cargo test`, so a rule
//! editor can prove a change before it goes live.
//!
//! Only what the expectation names is compared; address lists compare as sets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::core::plan::{Kind, Plan, Playbook};
use crate::core::problems::Problem;
use crate::core::rules::{Category, Respond};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub category: Option<Category>,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub respond: Option<Respond>,
    /// Words the reason must contain (case-insensitive).
    #[serde(default)]
    pub reason_contains: Option<String>,
    #[serde(default)]
    pub missing: Option<Vec<String>>,
    #[serde(default)]
    pub fields: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub outgoing: Option<Vec<ExpectedOutgoing>>,
    /// The original is kept visible for a human.
    #[serde(default)]
    pub human: Option<bool>,
    /// No internal address (the desk's domain) may appear in any outgoing message.
    #[serde(default)]
    pub discloses_nothing: Option<bool>,
    /// A bounce of our own mail: the addresses to block from automatic answers.
    #[serde(default)]
    pub bounced: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOutgoing {
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub to: Option<Vec<String>>,
    #[serde(default)]
    pub cc: Option<Vec<String>>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub attachments: Option<Vec<String>>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<Vec<String>>,
}

pub struct CaseResult {
    pub eml: PathBuf,
    pub plan: Plan,
    pub failures: Vec<String>,
}

/// Finds the cases under `dir` (recursively), sorted by path.
pub fn cases(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d)
            .map_err(|e| Problem::file(&d, format!("cannot read case folder: {e}")))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "eml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn expectation_path(eml: &Path) -> PathBuf {
    eml.with_extension("expect.yaml")
}

pub fn run_case(book: &Playbook, eml: &Path) -> CaseResult {
    let raw = match std::fs::read(eml) {
        Ok(r) => r,
        Err(e) => {
            return CaseResult {
                eml: eml.to_path_buf(),
                plan: Plan::for_human(None, String::new(), &book.config),
                failures: vec![format!("cannot read: {e}")],
            }
        }
    };
    let plan = book.decide(&raw);
    let exp_path = expectation_path(eml);
    let failures = match std::fs::read_to_string(&exp_path) {
        Err(_) => vec![format!("no expectation file {}", exp_path.display())],
        Ok(text) => match serde_yaml::from_str::<Expectation>(&text) {
            Err(e) => vec![Problem::yaml(&exp_path, &e).to_string()],
            Ok(exp) => compare(&exp, &plan, &book.config.desk.address),
        },
    };
    CaseResult {
        eml: eml.to_path_buf(),
        plan,
        failures,
    }
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_lowercase()).collect()
}

/// Every expectation of a case against the plan, one line per difference.
#[allow(
    clippy::too_many_lines,
    reason = "one comparison per field a case may expect, in the order cases list them"
)]
pub fn compare(exp: &Expectation, plan: &Plan, desk_address: &str) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(c) = exp.category {
        if c != plan.category {
            f.push(format!("category: expected {c}, got {}", plan.category));
        }
    }
    if let Some(r) = &exp.rule {
        if plan.rule.as_deref() != Some(r.as_str()) {
            f.push(format!(
                "rule: expected {r}, got {}",
                plan.rule.as_deref().unwrap_or("(none)")
            ));
        }
    }
    if let Some(r) = exp.respond {
        if r != plan.respond {
            f.push(format!(
                "respond: expected {r:?}, got {:?} ({})",
                plan.respond, plan.reason
            ));
        }
    }
    if let Some(words) = &exp.reason_contains {
        if !plan.reason.to_lowercase().contains(&words.to_lowercase()) {
            f.push(format!(
                "reason: expected to contain {words:?}, got {:?}",
                plan.reason
            ));
        }
    }
    if let Some(m) = &exp.missing {
        if set(m) != set(&plan.missing) {
            f.push(format!("missing: expected {m:?}, got {:?}", plan.missing));
        }
    }
    if let Some(fields) = &exp.fields {
        for (k, v) in fields {
            if plan.fields.get(k) != Some(v) {
                f.push(format!(
                    "field {k}: expected {v:?}, got {:?}",
                    plan.fields.get(k)
                ));
            }
        }
    }
    if let Some(h) = exp.human {
        if h != plan.original.human {
            f.push(format!("human: expected {h}, got {}", plan.original.human));
        }
    }
    if let Some(b) = &exp.bounced {
        if set(b) != set(&plan.bounced) {
            f.push(format!("bounced: expected {b:?}, got {:?}", plan.bounced));
        }
    }
    if exp.discloses_nothing == Some(true) {
        let internal = crate::core::message::domain_of(desk_address).to_lowercase();
        for o in &plan.outgoing {
            for a in o.to.iter().chain(&o.cc) {
                if crate::core::message::domain_of(a).eq_ignore_ascii_case(&internal) {
                    f.push(format!("discloses internal address {a}"));
                }
            }
        }
    }
    if let Some(outs) = &exp.outgoing {
        if outs.len() != plan.outgoing.len() {
            f.push(format!(
                "outgoing: expected {} messages, got {}",
                outs.len(),
                plan.outgoing.len()
            ));
        }
        for (i, (e, o)) in outs.iter().zip(&plan.outgoing).enumerate() {
            if let Some(k) = e.kind {
                if k != o.kind {
                    f.push(format!(
                        "outgoing[{i}].kind: expected {k:?}, got {:?}",
                        o.kind
                    ));
                }
            }
            for (what, want, got) in [
                ("to", &e.to, &o.to),
                ("cc", &e.cc, &o.cc),
                ("attachments", &e.attachments, &o.attachments),
            ] {
                if let Some(want) = want {
                    if set(want) != set(got) {
                        f.push(format!(
                            "outgoing[{i}].{what}: expected {want:?}, got {got:?}"
                        ));
                    }
                }
            }
            if let Some(t) = &e.template {
                if *t != o.template {
                    f.push(format!(
                        "outgoing[{i}].template: expected {t}, got {}",
                        o.template
                    ));
                }
            }
            if let Some(s) = &e.subject {
                if *s != o.subject {
                    f.push(format!(
                        "outgoing[{i}].subject: expected {s:?}, got {:?}",
                        o.subject
                    ));
                }
            }
            for words in e.body_contains.iter().flatten() {
                if !o.body.contains(words.as_str()) {
                    f.push(format!("outgoing[{i}].body: expected to contain {words:?}"));
                }
            }
        }
    }
    f
}
