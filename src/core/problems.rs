//! Errors in operator-edited files, each naming file:line:col and what was expected.
//!
//! `triage check` collects all of them at once rather than stopping at the first, so a
//! rule editor fixes a whole change in one pass.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn file(file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// A YAML syntax or shape error; serde_norway knows where it happened.
    pub fn yaml(file: &Path, error: &serde_yaml::Error) -> Problem {
        let message = error.to_string();
        // serde's message repeats the position ("... at line 3 column 5"); we lead with it.
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        let message = suggest_in_serde_message(&message);
        match error.location() {
            Some(loc) => Problem::at(file, loc.line(), loc.column(), message),
            None => Problem::file(file, message),
        }
    }

    /// A problem found after parsing: point at the first place the offending text stands,
    /// searching from `after` (a byte offset, e.g. where the rule starts).
    pub fn at_text_after(
        file: &Path,
        text: &str,
        after: usize,
        needle: &str,
        message: impl Into<String>,
    ) -> Problem {
        let start = after.min(text.len());
        let found = text[start..]
            .find(needle)
            .map(|i| i + start)
            .or_else(|| text.find(needle));
        match found {
            Some(offset) => {
                let (line, column) = line_column(text, offset);
                Problem::at(file, line, column, message)
            }
            None => Problem::file(file, message),
        }
    }

    /// A problem with a setting, pointed at by its key path (`imap.timeout_seconds`):
    /// at the key where it is written, else at the nearest enclosing key written out
    /// (`imap.oauth2` for a missing `imap.oauth2.client_id`), else the file.
    pub fn at_key(file: &Path, text: &str, path: &str, message: impl Into<String>) -> Problem {
        match key_position(text, path) {
            Some((line, column)) => Problem::at(file, line, column, message),
            None => Problem::file(file, message),
        }
    }

    pub fn at_text(file: &Path, text: &str, needle: &str, message: impl Into<String>) -> Problem {
        Problem::at_text_after(file, text, 0, needle, message)
    }
}

/// The valid name nearest to a misspelt one, when it is near enough to be what was
/// meant (`subjekt` → `subject`, `categroy` → `category`).
pub fn nearest<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(2);
    (names.into_iter())
        .map(|n| (strsim::damerau_levenshtein(&word, &n.to_lowercase()), n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// " (did you mean `x`?)" when one name is near enough, else nothing.
pub fn did_you_mean<'a>(word: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    nearest(word, names)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default()
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or variant) with the nearest
/// name suggested.
fn suggest_in_serde_message(message: &str) -> String {
    let rest = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.split_once(p).map(|(_, rest)| rest));
    let Some((word, expected)) = rest.and_then(|r| r.split_once('`')) else {
        return message.to_string();
    };
    let names = expected.split('`').skip(1).step_by(2);
    format!("{message}{}", did_you_mean(word, names))
}

/// Where a key path stands in a block-style YAML text, as 1-based line and column of the
/// deepest of its keys that is written out. Each key is looked for only inside the
/// block of the key before it, so `imap.timeout_seconds` is never found under `smtp:`.
pub fn key_position(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = None;
    let (mut from, mut parent) = (0, None::<usize>);
    for key in path.split('.') {
        let Some((i, indent)) = key_in_block(&lines, from, parent, key) else {
            break;
        };
        found = Some((i + 1, indent + 1));
        (from, parent) = (i + 1, Some(indent));
    }
    found
}

/// The line and indentation of `key:` among the direct children of the block that starts
/// at line `from` and is indented more than `parent` (None: the top level).
fn key_in_block(
    lines: &[&str],
    from: usize,
    parent: Option<usize>,
    key: &str,
) -> Option<(usize, usize)> {
    let mut children = None;
    for (i, line) in lines.iter().enumerate().skip(from) {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if parent.is_some_and(|p| indent <= p) {
            return None; // the parent's block ended
        }
        if indent != *children.get_or_insert(indent) {
            continue; // deeper: a grandchild
        }
        let name = body
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        if name == key && body.contains(':') {
            return Some((i, indent));
        }
    }
    None
}

/// 1-based line and column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn one(problem: Problem) -> Problems {
        Problems(vec![problem])
    }
    pub fn push(&mut self, problem: Problem) {
        self.0.push(problem);
    }
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod key_tests {
    use super::key_position;

    #[test]
    fn a_key_is_found_in_its_own_section_only() {
        let text = "smtp:\n  host: a\n  timeout_seconds: 5\n# imap:\nimap:\n  host: b\n  oauth2:\n    grant: command\n  timeout_seconds: 0\n";
        assert_eq!(key_position(text, "imap.timeout_seconds"), Some((9, 3)));
        assert_eq!(key_position(text, "smtp.timeout_seconds"), Some((3, 3)));
        // Not written out: the nearest key that is.
        assert_eq!(key_position(text, "imap.oauth2.client_id"), Some((7, 3)));
        assert_eq!(key_position(text, "imap.oauth2.grant"), Some((8, 5)));
        assert_eq!(key_position(text, "limits.per_sender.hours"), None);
    }
}

#[cfg(test)]
mod suggestion_tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_not() {
        assert_eq!(
            nearest("subjekt", ["subject", "body", "text"]),
            Some("subject")
        );
        assert_eq!(nearest("categroy", ["category", "cc"]), Some("category"));
        assert_eq!(
            nearest("asks_about_nfrs", ["asks_about_nfr"]),
            Some("asks_about_nfr")
        );
        assert_eq!(nearest("weather", ["subject", "body"]), None);
        let said = suggest_in_serde_message(
            "rules[3].then: unknown field `categroy`, expected one of `category`, `respond`",
        );
        assert!(said.ends_with("(did you mean `category`?)"), "{said}");
    }
}
