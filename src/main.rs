//! `triage`: parses the command line and hands each command to its file in `src/cli/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "triage",
    version,
    about = "Sorts and answers a partner help desk's shared mailbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config, rules, templates and directory; every error names file:line:col.
    Check {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Also sign in to the IMAP server and show what was discovered there
        /// (namespace, separator, folders by role, capabilities used); fails when a
        /// folder the service files into cannot be created or selected.
        #[arg(long)]
        connect: bool,
    },
    /// Show what the service would do with each message, and why. No network.
    Classify {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Read the directory CSVs from this folder instead of the config's.
        #[arg(long)]
        directory: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: cli::Format,
        /// Show why this rule did (not) fire on each message: its conditions, held or
        /// failed and on what text, and the earlier rule that took the message.
        #[arg(long, value_name = "RULE")]
        why_not: Option<String>,
        /// Preview a template: the reply this message would get with TEMPLATE in place
        /// of its rule's, as mail (recipients, subject, attachments, text).
        #[arg(long, value_name = "TEMPLATE")]
        render: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The service: watch the mailbox, answer, file, record.
    Run {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Drain the mailbox once and exit.
        #[arg(long)]
        once: bool,
        /// Decide and record everything, but send, append and move nothing.
        #[arg(long)]
        shadow: bool,
        /// Log lines as text (default) or one JSON object per line.
        #[arg(long, value_enum, default_value = "text", env = "TRIAGE_LOG_FORMAT")]
        log_format: cli::Format,
    },
    /// The audit log: every decision and action, filtered, as a table, JSON lines or CSV.
    Audit {
        #[arg(long, default_value = "/etc/triage/triage.yaml", global = true)]
        config: PathBuf,
        #[command(flatten)]
        args: cli::audit::Filters,
        #[command(subcommand)]
        view: Option<cli::audit::View>,
    },
    /// Today's rules over messages already decided: where would they decide differently
    /// from what was done? Nothing is sent.
    Replay {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Messages decided since: 2026-11-20, 2026-11-20T10:00, or an age (24h, 7d).
        #[arg(long, default_value = "7d")]
        since: String,
        /// A rules folder to try instead of the config's (a change not yet live).
        #[arg(long)]
        rules: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: cli::Format,
    },
    /// The circuit breaker on automatic answers: show it, or close it after a look at why
    /// it opened (`triage audit`, the logs).
    Breaker {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(value_enum, default_value = "status")]
        action: cli::breaker::Action,
    },
    /// OAuth2: get the first refresh token (the operator signs in once, in a browser),
    /// save it where the config says, and test signing in to IMAP and SMTP.
    Auth {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Whose OAuth2 settings: imap, or smtp when it has settings of its own.
        #[arg(long, value_enum, default_value = "imap")]
        account: cli::auth::Account,
        /// The device-code flow: a code to enter on any browser (Microsoft; Google only
        /// for some clients). Otherwise the authorization-code flow: open a URL, paste
        /// back the address the browser lands on.
        #[arg(long)]
        device: bool,
        /// The code flow's redirect URI, as registered for the app.
        #[arg(long, default_value = "http://localhost")]
        redirect_uri: String,
        /// Only test signing in with what is configured now (any grant, or passwords).
        #[arg(long)]
        check: bool,
    },
    /// A line for the review pages' accounts file (review.auth.accounts): the password,
    /// read from standard input, stored as an argon2id hash. Append it to the file.
    ReviewAccount { name: String },
    /// Internal: reads one document (bytes on stdin) as text, under the limits the
    /// service sets for it (set here before the first byte is read). Exit 3 with the
    /// reason on stderr when it cannot.
    #[command(hide = true)]
    ReadDocument {
        kind: String,
        #[arg(long)]
        cpu_seconds: Option<u64>,
        #[arg(long)]
        memory_bytes: Option<u64>,
    },
    /// Print the JSON Schema of the rule files or the config (what editors with the YAML
    /// language server complete from; shipped in schemas/).
    Schema {
        #[arg(value_enum)]
        which: cli::schema::Which,
    },
    /// Run rule test cases: FOLDER/*.eml with the expected decision in *.expect.yaml.
    Test {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(long)]
        directory: Option<PathBuf>,
        /// Print each case's decision, not only failures.
        #[arg(long, short)]
        verbose: bool,
        folders: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let done = match Cli::parse().command {
        Command::Check {
            config,
            directory,
            connect,
        } => cli::check::execute(&config, directory.as_deref(), connect),
        Command::Classify {
            config,
            directory,
            format,
            why_not,
            render,
            files,
        } => cli::classify::execute(
            &config,
            directory.as_deref(),
            format,
            why_not.as_deref(),
            render.as_deref(),
            &files,
        ),
        Command::Run {
            config,
            once,
            shadow,
            log_format,
        } => cli::run::execute(
            &config,
            cli::run::Options {
                once,
                shadow,
                log_format,
            },
        ),
        Command::Breaker { config, action } => cli::breaker::execute(&config, action),
        Command::ReviewAccount { name } => cli::review_account::execute(&name),
        Command::ReadDocument {
            kind,
            cpu_seconds,
            memory_bytes,
        } => cli::read_document::execute(&kind, cpu_seconds, memory_bytes),
        Command::Schema { which } => cli::schema::execute(which),
        Command::Auth {
            config,
            account,
            device,
            redirect_uri,
            check,
        } => {
            let options = cli::auth::Options {
                account,
                device,
                redirect_uri: &redirect_uri,
                check,
            };
            cli::auth::execute(&config, options)
        }
        Command::Audit { config, args, view } => cli::audit::execute(&config, &args, view),
        Command::Replay {
            config,
            since,
            rules,
            format,
        } => cli::replay::execute(&config, &since, rules.as_deref(), format),
        Command::Test {
            config,
            directory,
            verbose,
            folders,
        } => cli::test::execute(&config, directory.as_deref(), verbose, &folders),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if !matches!(failure, cli::Failure::Said(_)) {
                eprintln!("{failure}");
            }
            failure.exit_code()
        }
    }
}
