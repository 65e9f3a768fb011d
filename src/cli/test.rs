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
            for f in &result.failures {
                println!("     {f}");
            }
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
