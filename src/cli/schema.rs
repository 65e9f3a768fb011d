//! `triage schema rules|config`: the JSON Schema of the rule files or the config,
//! generated from the types that load them (the files in `schemas/` are its output; a
//! test keeps them equal).

use super::Failure;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Which {
    Rules,
    Config,
}

pub fn execute(which: Which) -> Result<(), Failure> {
    let schema = match which {
        Which::Rules => triage::core::rules::schema(),
        Which::Config => triage::core::config::schema(),
    };
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| Failure::Failed(format!("triage schema: {e}")))?;
    println!("{text}");
    Ok(())
}
