//! Message text shown to operators and reviewers. A subject is the sender's words: with a
//! newline it could print a fake `respond: none` line, with ESC it could drive the
//! terminal, with a bidi override it could reverse what is read, and in a spreadsheet a
//! leading `=` makes it a formula. Every operator output passes it through here.

/// One line of text, control and invisible formatting characters written as escapes
/// (`\n`, `\u{1b}`, `\u{202e}`).
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A CSV cell: escaped as for the terminal, and a cell a spreadsheet would take for a
/// formula (`=`, `+`, `-`, `@`, tab or carriage return first) starts with `'` instead.
pub fn for_spreadsheet(text: &str) -> String {
    let shown = for_terminal(text);
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{shown}")
    } else {
        shown
    }
}

/// Characters that change how the text around them is shown without showing themselves.
/// Text for HTML outside templates (an error page): the five characters that matter.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
        | '\u{061C}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{00AD}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_the_sender_writes_reaches_the_screen_as_control() {
        let subject = "Quote\n  respond:    none (left for a human)\u{1b}[2J\u{202e}gpj.exe";
        let shown = for_terminal(subject);
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}') && !shown.contains('\u{202e}'));
        assert!(shown.contains("\\n") && shown.contains("\\u{1b}") && shown.contains("\\u{202e}"));
        assert_eq!(
            for_terminal("Angebot für Acme 見積"),
            "Angebot für Acme 見積"
        );
        for formula in ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\t=1"] {
            assert!(for_spreadsheet(formula).starts_with('\''), "{formula}");
        }
        assert_eq!(for_spreadsheet("Q-100234"), "Q-100234");
    }
}
