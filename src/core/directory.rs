//! Who is who: the CRM report exports (partners, opportunities, deal registrations).
//!
//! Lookups go from the most specific evidence to the least, and never guess: two
//! candidates are as much a reason to stop as none.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use crate::core::problems::{Problem, Problems};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Partner {
    pub partner_domain: String,
    pub partner_name: String,
    pub geo: String,
    pub segment: String,
    pub area: String,
    pub cam_email: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Opportunity {
    pub opportunity_id: String,
    pub opportunity_name: String,
    pub account_name: String,
    pub partner_domain: String,
    pub owner_email: String,
    pub isr_email: String,
    pub cam_email: String,
    pub quote_number: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DealRegistration {
    pub deal_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub partner_domain: String,
    pub partner_name: String,
    pub customer_name: String,
    pub status: String,
    pub channel_manager_email: String,
    pub linked_opportunity_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub partners: Vec<Partner>,
    pub opportunities: Vec<Opportunity>,
    pub deals: Vec<DealRegistration>,
    /// Every known id, lower-cased, for finding them in free text in one pass.
    ids: IdIndex,
    /// Each opportunity's account name as `names_of` gives it, worked out at load: the
    /// lookups compare against these rather than normalise the export on every message.
    accounts: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Copy)]
enum IdHit {
    Opportunity(usize),
    Deal(usize),
    Quote(usize),
}

#[derive(Debug, Clone, Default)]
struct IdIndex {
    by_token: HashMap<String, Vec<IdHit>>,
    longest: usize,
}

impl IdIndex {
    fn build(opportunities: &[Opportunity], deals: &[DealRegistration]) -> IdIndex {
        let mut index = IdIndex::default();
        let mut add = |id: &str, hit: IdHit| {
            let id = id.trim();
            if id.len() >= 3 {
                index.longest = index.longest.max(id.len());
                index
                    .by_token
                    .entry(id.to_ascii_lowercase())
                    .or_default()
                    .push(hit);
            }
        };
        for (i, o) in opportunities.iter().enumerate() {
            add(&o.opportunity_id, IdHit::Opportunity(i));
            if o.opportunity_id.len() == 18 {
                add(&o.opportunity_id[..15], IdHit::Opportunity(i));
            }
            add(&o.quote_number, IdHit::Quote(i));
        }
        for (i, d) in deals.iter().enumerate() {
            add(&d.deal_id, IdHit::Deal(i));
        }
        index
    }
}

const PARTNER_COLUMNS: &[&str] = &[
    "partner_domain",
    "partner_name",
    "geo",
    "segment",
    "area",
    "cam_email",
];
const OPPORTUNITY_COLUMNS: &[&str] = &[
    "opportunity_id",
    "opportunity_name",
    "account_name",
    "partner_domain",
    "owner_email",
    "isr_email",
    "cam_email",
    "quote_number",
];
const DEAL_COLUMNS: &[&str] = &[
    "deal_id",
    "type",
    "partner_domain",
    "partner_name",
    "customer_name",
    "status",
    "channel_manager_email",
    "linked_opportunity_id",
];
/// Columns that may be blank in a row: a blank ISR is not an error, we cc the rest.
const OPTIONAL: &[&str] = &[
    "isr_email",
    "cam_email",
    "quote_number",
    "geo",
    "segment",
    "area",
    "linked_opportunity_id",
    "opportunity_name",
];

/// Reads one export into rows of our column names. `mapping` maps our name to the export's.
/// One pass in one function on purpose: header checks, size limits and per-row problems
/// all need the same position, so every problem names its line.
fn read_csv(
    path: &Path,
    columns: &[&str],
    mapping: Option<&BTreeMap<String, String>>,
    problems: &mut Problems,
) -> Vec<HashMap<&'static str, String>>
where
{
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            problems.push(Problem::file(
                path,
                format!("cannot read directory export: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(file);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h
            .iter()
            .map(|s| s.trim_start_matches('\u{feff}').to_string())
            .collect(),
        Err(e) => {
            problems.push(Problem::at(
                path,
                1,
                1,
                format!("cannot read the header row: {e}"),
            ));
            return Vec::new();
        }
    };
    if let Some(mapping) = mapping {
        for ours in mapping.keys() {
            if !columns.contains(&ours.as_str()) {
                problems.push(Problem::file(
                    path,
                    format!(
                        "column mapping names unknown column {ours:?}; expected one of {}",
                        columns.join(", ")
                    ),
                ));
            }
        }
    }
    let mut index = Vec::new();
    let mut ok = true;
    for &col in columns {
        let theirs = mapping
            .and_then(|m| m.get(col))
            .map(String::as_str)
            .unwrap_or(col);
        match headers.iter().position(|h| h.eq_ignore_ascii_case(theirs)) {
            Some(i) => index.push((leak(col), i)),
            None => {
                ok = false;
                problems.push(Problem::at(
                    path,
                    1,
                    1,
                    format!(
                        "missing column {theirs:?}{}; the header row has: {}",
                        if theirs != col {
                            format!(" (mapped from {col})")
                        } else {
                            String::new()
                        },
                        headers.join(", ")
                    ),
                ));
            }
        }
    }
    if !ok {
        return Vec::new();
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        match record {
            Ok(rec) => {
                let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
                let mut row = HashMap::new();
                for (col, i) in &index {
                    let value = rec.get(*i).unwrap_or("").to_string();
                    if value.is_empty() && !OPTIONAL.contains(col) {
                        problems.push(Problem::at(path, line, 1, format!("column {col} is blank")));
                    }
                    row.insert(*col, value);
                }
                rows.push(row);
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                problems.push(Problem::at(path, line, 1, format!("unreadable row: {e}")));
            }
        }
    }
    rows
}

/// Column names are a small fixed set; this maps a `&str` to its `'static` twin.
fn leak(col: &str) -> &'static str {
    PARTNER_COLUMNS
        .iter()
        .chain(OPPORTUNITY_COLUMNS)
        .chain(DEAL_COLUMNS)
        .find(|c| **c == col)
        .copied()
        .unwrap_or("")
}

fn take(row: &mut HashMap<&'static str, String>, col: &str) -> String {
    row.remove(col).unwrap_or_default()
}

impl Directory {
    pub fn load(
        dir: &Path,
        columns: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Directory, Problems> {
        let mut problems = Problems::default();
        for file in columns.keys() {
            if !["partners", "opportunities", "deal_registrations"].contains(&file.as_str()) {
                problems.push(Problem::file(
                    dir,
                    format!("directory.columns names unknown export {file:?}; expected partners, opportunities or deal_registrations"),
                ));
            }
        }
        let partners = read_csv(
            &dir.join("partners.csv"),
            PARTNER_COLUMNS,
            columns.get("partners"),
            &mut problems,
        )
        .into_iter()
        .map(|mut r| Partner {
            partner_domain: take(&mut r, "partner_domain").to_lowercase(),
            partner_name: take(&mut r, "partner_name"),
            geo: take(&mut r, "geo"),
            segment: take(&mut r, "segment"),
            area: take(&mut r, "area"),
            cam_email: take(&mut r, "cam_email").to_lowercase(),
        })
        .collect();
        let opportunities: Vec<Opportunity> = read_csv(
            &dir.join("opportunities.csv"),
            OPPORTUNITY_COLUMNS,
            columns.get("opportunities"),
            &mut problems,
        )
        .into_iter()
        .map(|mut r| Opportunity {
            opportunity_id: take(&mut r, "opportunity_id"),
            opportunity_name: take(&mut r, "opportunity_name"),
            account_name: take(&mut r, "account_name"),
            partner_domain: take(&mut r, "partner_domain").to_lowercase(),
            owner_email: take(&mut r, "owner_email").to_lowercase(),
            isr_email: take(&mut r, "isr_email").to_lowercase(),
            cam_email: take(&mut r, "cam_email").to_lowercase(),
            quote_number: take(&mut r, "quote_number"),
        })
        .collect();
        let deals: Vec<DealRegistration> = read_csv(
            &dir.join("deal_registrations.csv"),
            DEAL_COLUMNS,
            columns.get("deal_registrations"),
            &mut problems,
        )
        .into_iter()
        .map(|mut r| DealRegistration {
            deal_id: take(&mut r, "deal_id"),
            kind: take(&mut r, "type").to_lowercase().replace(['-', ' '], "_"),
            partner_domain: take(&mut r, "partner_domain").to_lowercase(),
            partner_name: take(&mut r, "partner_name"),
            customer_name: take(&mut r, "customer_name"),
            status: take(&mut r, "status"),
            channel_manager_email: take(&mut r, "channel_manager_email").to_lowercase(),
            linked_opportunity_id: take(&mut r, "linked_opportunity_id"),
        })
        .collect();
        let ids = IdIndex::build(&opportunities, &deals);
        let accounts = opportunities
            .iter()
            .map(|o| names_of(&o.account_name))
            .collect();
        problems.into_result(Directory {
            partners,
            opportunities,
            deals,
            ids,
            accounts,
        })
    }

    /// The desk's own people: sales reps, ISRs, CAMs and channel managers in the exports.
    pub fn is_internal(&self, address: &str) -> bool {
        let same = |a: &str| !a.is_empty() && a.eq_ignore_ascii_case(address);
        self.opportunities
            .iter()
            .any(|o| same(&o.owner_email) || same(&o.isr_email) || same(&o.cam_email))
            || self.partners.iter().any(|p| same(&p.cam_email))
            || self.deals.iter().any(|d| same(&d.channel_manager_email))
    }

    pub fn partner(&self, domain: &str) -> Option<&Partner> {
        self.partners
            .iter()
            .find(|p| domain_matches(domain, &p.partner_domain))
    }

    pub fn opportunities_by_id(&self, id: &str) -> Vec<&Opportunity> {
        self.opportunities
            .iter()
            .filter(|o| same_salesforce_id(&o.opportunity_id, id))
            .collect()
    }

    pub fn opportunities_by_quote(&self, quote: &str) -> Vec<&Opportunity> {
        let q = normalize_token(quote);
        self.opportunities
            .iter()
            .filter(|o| !o.quote_number.is_empty() && normalize_token(&o.quote_number) == q)
            .collect()
    }

    pub fn opportunities_by_customer(
        &self,
        customer: &str,
        partner_domain: &str,
    ) -> Vec<&Opportunity> {
        let wanted = names_of(customer);
        self.opportunities
            .iter()
            .zip(&self.accounts)
            .filter(|(o, names)| {
                domain_matches(partner_domain, &o.partner_domain)
                    && names.iter().any(|n| wanted.contains(n))
            })
            .map(|(o, _)| o)
            .collect()
    }

    /// The registration with this id; failing that, the ones whose id is this one with a
    /// letter prefix the partner left out ("2026-0042" for DR-2026-0042), as a search in
    /// the CRM would find them.
    pub fn deals_by_id(&self, id: &str) -> Vec<&DealRegistration> {
        let d = normalize_token(id);
        let exact: Vec<&DealRegistration> = self
            .deals
            .iter()
            .filter(|r| normalize_token(&r.deal_id) == d)
            .collect();
        if !exact.is_empty() || !d.starts_with(|c: char| c.is_ascii_digit()) || d.len() < 4 {
            return exact;
        }
        self.deals
            .iter()
            .filter(|r| {
                let full = normalize_token(&r.deal_id);
                full.strip_suffix(d.as_str()).is_some_and(|prefix| {
                    let letters = prefix.trim_end_matches(['-', '_', ' ']);
                    !letters.is_empty() && letters.chars().all(|c| c.is_ascii_alphabetic())
                })
            })
            .collect()
    }

    /// Known identifiers that appear in the texts as whole tokens: what a specialist finds
    /// by pasting the message into the CRM search box. Used when no extractor pattern
    /// matched, so that ids in an export's own format are still found.
    pub fn known_ids_in<'a>(&'a self, texts: &[&str]) -> KnownIds<'a> {
        let mut found = KnownIds {
            opportunity_ids: Vec::new(),
            deal_ids: Vec::new(),
            quote_numbers: Vec::new(),
        };
        let mut buf = String::new();
        for text in texts {
            for token in text.split(|c: char| {
                !((c.is_alphanumeric() && !is_cjk(c)) || c == '-' || c == '_' || c == '/')
            }) {
                let token = token.trim_matches(['-', '_', '/']);
                if token.len() < 3 || token.len() > self.ids.longest {
                    continue;
                }
                buf.clear();
                buf.push_str(token);
                buf.make_ascii_lowercase();
                let Some(hits) = self.ids.by_token.get(buf.as_str()) else {
                    continue;
                };
                for hit in hits {
                    let (list, value) = match *hit {
                        IdHit::Opportunity(i) => {
                            let id = &self.opportunities[i].opportunity_id;
                            // 15-character ids are case-sensitive: "006abc" is not "006ABC".
                            if !(token == id.as_str()
                                || (id.len() == 18
                                    && token.len() == 15
                                    && id.get(..15) == Some(token))
                                || (token.len() == 18 && id.eq_ignore_ascii_case(token)))
                            {
                                continue;
                            }
                            (&mut found.opportunity_ids, id.as_str())
                        }
                        IdHit::Deal(i) => (&mut found.deal_ids, self.deals[i].deal_id.as_str()),
                        IdHit::Quote(i) => (
                            &mut found.quote_numbers,
                            self.opportunities[i].quote_number.as_str(),
                        ),
                    };
                    // Bounded: a flood of known ids must not make this quadratic.
                    if list.len() < 50 && !list.iter().any(|x: &&str| x.eq_ignore_ascii_case(value))
                    {
                        list.push(value);
                    }
                }
            }
        }
        found
    }

    /// Account names of the partner's own opportunities that the text mentions.
    pub fn customers_in(&self, text: &str, partner_domain: &str) -> Vec<&str> {
        let hay = name_haystack(text);
        dedup(
            self.opportunities
                .iter()
                .zip(&self.accounts)
                .filter(|(o, _)| domain_matches(partner_domain, &o.partner_domain))
                .filter(|(_, names)| {
                    let Some(n) = names.first() else { return false };
                    // Japanese runs on without spaces: there a name is found inside words.
                    let cjk = n.chars().any(is_cjk);
                    n.chars().count() >= 2
                        && if cjk {
                            hay.contains(n.as_str())
                        } else {
                            hay.contains(&format!(" {n} "))
                        }
                })
                .map(|(o, _)| o.account_name.as_str()),
        )
    }
}

pub struct KnownIds<'a> {
    pub opportunity_ids: Vec<&'a str>,
    pub deal_ids: Vec<&'a str>,
    pub quote_numbers: Vec<&'a str>,
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for s in it {
        if !v.iter().any(|x| x.eq_ignore_ascii_case(s)) {
            v.push(s);
        }
    }
    v
}

/// Whether the texts name the opportunity by what its name adds to the account's
/// ("Initech - Ultimate upgrade" → "ultimate upgrade"), as whole words. `texts` are
/// [`name_haystack`]s, made once for all candidates.
pub fn opportunity_named(o: &Opportunity, texts: &[String]) -> bool {
    let name = normalize_name(&o.opportunity_name);
    let account = normalize_name(&o.account_name);
    let rest = name.strip_prefix(account.as_str()).unwrap_or(&name).trim();
    if rest.chars().count() < 4 {
        return false;
    }
    let rest = format!(" {rest} ");
    texts.iter().any(|t| t.contains(&rest))
}

/// A text normalized as names are, with a space at each end, to look for whole names in.
pub fn name_haystack(text: &str) -> String {
    format!(" {} ", normalize_name(text))
}

/// Scripts written without spaces between words (kana, CJK ideographs, Hangul): there
/// a name or an id runs on into the next word, and the change of script is the boundary.
pub fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}'
        | '\u{f900}'..='\u{faff}' | '\u{ac00}'..='\u{d7af}' | '\u{1100}'..='\u{11ff}')
}

/// A sender's domain belongs to a partner when it is the partner's domain or a subdomain of it.
pub fn domain_matches(sender_domain: &str, partner_domain: &str) -> bool {
    let s = sender_domain.to_ascii_lowercase();
    let p = partner_domain.to_ascii_lowercase();
    !p.is_empty() && (s == p || s.ends_with(&format!(".{p}")))
}

/// Salesforce ids: 15 characters case-sensitive, or 18 with a case-insensitive suffix.
pub fn same_salesforce_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a.len() >= 15
        && b.len() >= 15
        && (a.len() == 18 || a.len() == 15)
        && (b.len() == 18 || b.len() == 15)
        && a.is_ascii()
        && b.is_ascii()
    {
        a[..15] == b[..15]
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

fn normalize_token(s: &str) -> String {
    s.trim().trim_start_matches('#').to_ascii_lowercase()
}

/// Company names as people write them: width, case, accents, punctuation and legal forms
/// vary ("ACME, Inc", "Acme Inc.", "ＡＣＭＥ株式会社", "Société Générale S.A.").
pub fn normalize_name(s: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    const SUFFIXES: &[&str] = &[
        "inc",
        "incorporated",
        "llc",
        "llp",
        "lp",
        "ltd",
        "limited",
        "gmbh",
        "mbh",
        "ag",
        "kg",
        "ohg",
        "ug",
        "se",
        "sa",
        "sas",
        "sasu",
        "sarl",
        "eurl",
        "ltda",
        "eireli",
        "me",
        "corp",
        "corporation",
        "co",
        "company",
        "kk",
        "gk",
        "plc",
        "bv",
        "nv",
        "srl",
        "spa",
        "sl",
        "oy",
        "ab",
        "as",
        "aps",
        "pty",
        "pte",
        "bhd",
        "sdn",
        "&",
    ];
    // Japanese legal forms, written before or after the name.
    const JA_FORMS: &[&str] = &["株式会社", "有限会社", "合同会社", "(株)", "(有)"];
    let mut folded: String = s
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .nfkc()
        .collect::<String>()
        .to_lowercase();
    for form in JA_FORMS {
        folded = folded.replace(form, " ");
    }
    // "Yamato Seiki向けの注文": the change from Latin to Japanese ends a word too.
    let mut raw: Vec<&str> = Vec::new();
    for word in folded.split(|c: char| !c.is_alphanumeric() && c != '&') {
        let mut start = 0;
        let mut last: Option<bool> = None;
        for (i, c) in word.char_indices() {
            let cjk = is_cjk(c);
            if last.is_some_and(|l| l != cjk) {
                raw.push(&word[start..i]);
                start = i;
            }
            last = Some(cjk);
        }
        raw.push(&word[start..]);
    }
    raw.retain(|w| !w.is_empty());
    // "S.A." and "K.K." arrive as single letters: join runs of them into one word.
    let mut words: Vec<String> = Vec::new();
    let mut letters = String::new();
    for w in raw {
        if w.chars().count() == 1 && w.chars().all(char::is_alphabetic) {
            letters.push_str(w);
            continue;
        }
        if !letters.is_empty() {
            words.push(std::mem::take(&mut letters));
        }
        words.push(w.to_string());
    }
    if !letters.is_empty() {
        words.push(letters);
    }
    while words.len() > 1 && words.last().is_some_and(|w| SUFFIXES.contains(&w.as_str())) {
        words.pop();
    }
    words.join(" ")
}

/// The names a company goes by in one written name: the whole, and for a bilingual pair
/// ("日本リセラー（Reseller Japan K.K.）") each side of the brackets.
fn names_of(s: &str) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let s: String = s.nfkc().collect();
    let mut names = vec![normalize_name(&s)];
    if let Some((outside, rest)) = s.split_once(['(', '[']) {
        let inside = rest.split([')', ']']).next().unwrap_or("");
        names.push(normalize_name(outside));
        names.push(normalize_name(inside));
    }
    names.retain(|n| !n.is_empty());
    names
}

/// Two written names of one company: equal after normalising, either name of a
/// bilingual pair counting.
pub fn same_company(a: &str, b: &str) -> bool {
    let (a, b) = (names_of(a), names_of(b));
    a.iter().any(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_compare_as_people_write_them() {
        assert_eq!(normalize_name("Acme Corp."), "acme");
        assert_eq!(normalize_name("ACME, Inc"), "acme");
        assert!(same_salesforce_id("0065e00000AbCdE", "0065e00000AbCdEXYZ"));
        assert!(!same_salesforce_id("0065e00000AbCdE", "0065e00000abcde"));
        assert!(domain_matches("emea.reseller.example", "reseller.example"));
        assert_eq!(normalize_name("Société Générale S.A."), "societe generale");
        assert_eq!(normalize_name("ＡＣＭＥ株式会社"), "acme");
        assert_eq!(
            normalize_name("Müller Maschinenbau GmbH & Co. KG"),
            "muller maschinenbau"
        );
        assert!(same_company(
            "日本リセラー（Reseller Japan K.K.）",
            "Reseller Japan KK"
        ));
        assert!(same_company(
            "Reseller Japan K.K.",
            "日本リセラー株式会社 (Reseller Japan K.K.)"
        ));
        assert!(!same_company("Acme", "Globex"));
        assert_eq!(
            normalize_name("Yamato Seiki向けの注文"),
            "yamato seiki 向けの注文"
        );
        assert!(!domain_matches("evilreseller.example", "reseller.example"));
    }
}
