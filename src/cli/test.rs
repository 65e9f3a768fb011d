//! `triage test FOLDER…`: the rule cases (`*.eml` with the expected decision in
//! `*.expect.yaml`), run as a test runner would: failures listed, a count, exit 1 if any.

use std::path::{Path, PathBuf};

use triage::core::plan;
use triage::review::casebook;

use super::Failure;

pub fn execute(
    config: &Path,
    directory: Option<&Path>,
    verbose: bool,
    folders: &[PathBuf],
) -> Result<(), Failure> {
    let book = super::playbook(config, directory)?;
    let folders = if folders.is_empty() {
        vec![PathBuf::from("tests/cases")]
    } else {
        folders.to_vec()
    };
    let (mut passed, mut failed) = (0, 0);
    for folder in &folders {
        let cases = casebook::cases(folder).map_err(|p| Failure::Invalid(p.to_string()))?;
        for eml in cases {
            let result = casebook::run_case(&book, &eml);
            let name = eml.display().to_string();
            if result.failures.is_empty() {
                passed += 1;
                if verbose {
                    print!("ok   {}", plan::explain(&name, &result.plan));
                }
                continue;
            }
            failed += 1;
            println!("FAIL {name}");
            print_side_by_side(&result.failures);
            if verbose {
                print!("{}", plan::explain("     decision:", &result.plan));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        return Err(Failure::Said(1));
    }
    Ok(())
}

/// A failing case's differences as a table: what the case expects beside what the
/// rules decided. Lines that are not such a pair are printed as they are.
fn print_side_by_side(failures: &[String]) {
    let pairs: Vec<Option<(&str, &str, &str)>> = failures
        .iter()
        .map(|f| {
            let (what, rest) = f.split_once(": expected ")?;
            let (expected, actual) = rest.rsplit_once(", got ")?;
            Some((what, expected, actual))
        })
        .collect();
    let width = |pick: fn(&(&str, &str, &str)) -> usize| {
        pairs.iter().flatten().map(pick).max().unwrap_or(0)
    };
    let (w1, w2) = (
        width(|p| p.0.chars().count()).max(5),
        width(|p| p.1.chars().count()).max(8),
    );
    if pairs.iter().any(Option::is_some) {
        println!("     {:<w1$}  {:<w2$}  actual", "field", "expected");
    }
    for (line, pair) in failures.iter().zip(&pairs) {
        let line = triage::core::escape::for_terminal(line);
        match pair {
            Some((what, expected, actual)) => {
                let [what, expected, actual] =
                    [what, expected, actual].map(|t| triage::core::escape::for_terminal(t));
                println!("     {what:<w1$}  {expected:<w2$}  {actual}");
            }
            None => println!("     {line}"),
        }
    }
}
