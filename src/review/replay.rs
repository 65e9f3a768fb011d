//! `triage replay`: today's rules over messages already decided, to see where they would
//! decide differently from what was done. Nothing is sent: it compares two plans.

use crate::core::plan::Plan;

/// What a plan does, in a few words per outgoing message.
fn actions(plan: &Plan) -> Vec<String> {
    plan.outgoing
        .iter()
        .map(|o| {
            let mut s = format!(
                "{} to {} ({})",
                o.kind.as_str(),
                o.to.join(", "),
                o.template
            );
            if !o.cc.is_empty() {
                s.push_str(&format!(" cc {}", o.cc.join(", ")));
            }
            s
        })
        .collect()
}

fn filing(plan: &Plan) -> String {
    match (&plan.original.folder, plan.original.human) {
        (Some(f), true) => format!("left for a human in {f}"),
        (None, true) => "left for a human".into(),
        (Some(f), false) => format!("filed to {f}"),
        (None, false) => "kept in the inbox".into(),
    }
}

/// Where `now` differs from `then`, each as "what: then → now". A plan held back by
/// history then (per-sender cap, breaker, bounce) is compared on its decision only:
/// history is not replayed.
pub fn differences(then: &Plan, now: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: {a} → {b}"));
        }
    };
    field(
        "category",
        then.category.to_string(),
        now.category.to_string(),
    );
    field(
        "rule",
        then.rule.clone().unwrap_or_else(|| "(none)".into()),
        now.rule.clone().unwrap_or_else(|| "(none)".into()),
    );
    let held = then.evidence.iter().any(|e| e.starts_with("held back: "));
    if !held {
        field(
            "respond",
            format!("{:?}", then.respond),
            format!("{:?}", now.respond),
        );
        field("sends", actions(then).join("; "), actions(now).join("; "));
        field("original", filing(then), filing(now));
    }
    for (k, v) in &now.fields {
        field(
            &format!("field {k}"),
            then.fields
                .get(k)
                .cloned()
                .unwrap_or_else(|| "(none)".into()),
            v.clone(),
        );
    }
    for (k, v) in &then.fields {
        if !now.fields.contains_key(k) {
            field(&format!("field {k}"), v.clone(), "(none)".into());
        }
    }
    out
}
