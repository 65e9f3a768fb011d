//! How our answers are marked so that whatever comes back to them is recognised: a
//! Message-ID derived from the original's and the answer's place in its plan (so after a
//! crash the Sent folder tells whether it already went out), and a short mark in the text
//! that survives clients which drop References.

use sha2::{Digest, Sha256};

use crate::core::plan::{hex, Outgoing};

/// `<hash@domain>`, the same for the same original and the same place in its plan.
pub fn message_id_for(original: &str, index: usize, out: &Outgoing, domain: &str) -> String {
    let mut h = Sha256::new();
    h.update(original.as_bytes());
    h.update(format!("|{index}|{:?}|{}", out.kind, out.to.join(",")).as_bytes());
    format!("<{}.triage@{domain}>", &hex(&h.finalize())[..32])
}

/// `[ref:triage:0123abcd]`, from our Message-ID: what [`ANSWER_MARK`] finds again.
pub fn answer_mark(message_id: &str) -> String {
    let digest = Sha256::digest(message_id.as_bytes());
    format!("[ref:triage:{}]", hex(&digest[..5]))
}

pub static ANSWER_MARK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\[ref:triage:[0-9a-f]{10}\]").expect("answer mark")
});
