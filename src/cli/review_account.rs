//! `triage review-account NAME`: a line for the review pages' accounts file
//! (`review.auth.accounts`), the password read from standard input and stored only as
//! an argon2id hash. Append the line to the file; the service reads it anew.

use std::io::BufRead;

use super::Failure;

pub fn execute(name: &str) -> Result<(), Failure> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password for {name} (at least 12 characters), then Enter:");
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| Failure::Failed(format!("triage: cannot read the password: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']);
    let line = triage::shell::review_site::account_line(name, password)
        .map_err(|e| Failure::Invalid(format!("triage review-account: {e}")))?;
    println!("{line}");
    Ok(())
}
