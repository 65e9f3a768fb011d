//! The rules loader: any text as a rule file. It must come back as rules or as problems
//! with a file:line:col, never a panic (regexes are compiled with a size limit).
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use triage::core::rules::Rulebook;

fuzz_target!(|text: &str| {
    let file = PathBuf::from("fuzz.yaml");
    if let Err(problems) = Rulebook::from_files(vec![(file, text.to_string())]) {
        assert!(!problems.0.is_empty());
        let _ = problems.to_string();
    }
});
