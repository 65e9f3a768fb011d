//! The commands, one file each. Every command has one `execute` that returns a
//! [`Failure`]; `main.rs` only parses the command line, dispatches and turns the failure
//! into an exit code.

use std::path::Path;
use std::process::ExitCode;

use triage::core::config::Config;
use triage::core::plan::Playbook;

pub mod audit;
pub mod auth;
pub mod breaker;
pub mod check;
pub mod classify;
pub mod read_document;
pub mod replay;
pub mod review_account;
pub mod run;
pub mod schema;
pub mod test;

/// Text or one JSON object per line, for the commands that print decisions or logs.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Why a command did not succeed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration, the rules or the command line are wrong: nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Something failed while doing the work (a server, the journal, a file).
    #[error("{0}")]
    Failed(String),
    /// What went wrong has already been printed or logged; exit with this code.
    #[error("")]
    Said(u8),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Invalid(_) => ExitCode::from(2),
            Failure::Failed(_) => ExitCode::from(1),
            Failure::Said(code) => ExitCode::from(*code),
        }
    }
}

/// The config alone, as every command that does not decide needs it.
pub fn config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|problems| Failure::Invalid(problems.to_string()))
}

/// The playbook as the service uses it: documents read in a child process under limits.
pub fn playbook(config: &Path, directory: Option<&Path>) -> Result<Playbook, Failure> {
    let loaded = Config::load(config).and_then(|c| Playbook::load(c, directory));
    match loaded {
        Ok(mut book) => {
            book.documents = triage::core::documents::Reader::child(book.config.limits.documents());
            Ok(book)
        }
        Err(problems) => Err(Failure::Invalid(format!(
            "{problems}\ntriage: the configuration is not valid ({} problem(s)); run `triage check` after fixing",
            problems.0.len()
        ))),
    }
}

/// One thread: the service waits on the network, and documents are read in children.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Failed(format!("triage: cannot start the runtime: {e}")))
}

/// The journal named by the config, which must already exist for the review commands.
pub fn journal(config: &Config) -> Result<triage::shell::journal::Journal, Failure> {
    let path = &config.service.state;
    triage::shell::journal::Journal::open(path)
        .map_err(|e| Failure::Failed(format!("triage: {e} ({})", path.display())))
}

/// Text that comes from messages, printed line by line with control characters made
/// visible (a crafted subject cannot move the cursor or recolour the terminal).
pub fn print_lines(text: &str) {
    for line in text.lines() {
        println!("{}", triage::core::escape::for_terminal(line));
    }
}

/// The message for a time flag the journal could not read.
pub fn bad_time(flag: &str, value: &str) -> Failure {
    Failure::Invalid(format!(
        "triage: {flag} {value:?}: expected a date (2026-11-20), a date and time (2026-11-20T10:00) or an age (24h, 7d, 30m)"
    ))
}
