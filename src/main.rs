use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use triage::casebook;
use triage::config::Config;
use triage::plan::{self, Kind, Plan, Playbook};
use triage::rules::Respond;

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

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum BreakerAction {
    Status,
    Reset,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config, rules, templates and directory; every error names file:line:col.
    Check {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(long)]
        directory: Option<PathBuf>,
    },
    /// Show what the service would do with each message, and why. No network.
    Classify {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Read the directory CSVs from this folder instead of the config's.
        #[arg(long)]
        directory: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
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
    },
    /// The circuit breaker on automatic answers: show it, or close it after a look at why
    /// it opened (`triage audit`, the logs).
    Breaker {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(value_enum, default_value = "status")]
        action: BreakerAction,
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
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, directory } => check(&config, directory.as_deref()),
        Command::Classify {
            config,
            directory,
            format,
            files,
        } => classify(&config, directory.as_deref(), format, &files),
        Command::Run {
            config,
            once,
            shadow,
        } => run(&config, once, shadow),
        Command::Breaker { config, action } => breaker(&config, action),
        Command::Test {
            config,
            directory,
            verbose,
            folders,
        } => test(&config, directory.as_deref(), verbose, &folders),
    }
}

fn load(config: &Path, directory: Option<&Path>) -> Result<Playbook, ExitCode> {
    let loaded = Config::load(config).and_then(|c| Playbook::load(c, directory));
    loaded.map_err(|problems| {
        eprintln!("{problems}");
        eprintln!("triage: the configuration is not valid ({} problem(s)); run `triage check` after fixing", problems.0.len());
        ExitCode::from(2)
    })
}

fn breaker(config: &Path, action: BreakerAction) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    let journal = match triage::journal::Journal::open(&config.service.state) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("triage: journal {}: {e}", config.service.state.display());
            return ExitCode::from(1);
        }
    };
    let setting = config.limits.circuit_breaker.setting();
    let result = match action {
        BreakerAction::Status => journal.breaker_open(&setting).map(|open| match open {
            Some(why) => println!("open {why}"),
            None => println!("closed (limit {setting})"),
        }),
        BreakerAction::Reset => {
            let by = std::env::var("SUDO_USER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "operator".into());
            journal.reset_breaker(&by).map(|n| {
                if n == 0 {
                    println!("the circuit breaker was not open");
                } else {
                    println!("circuit breaker closed by {by}: automatic answers resume");
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triage: journal: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(config: &Path, directory: Option<&Path>) -> ExitCode {
    match plan::check(config, directory) {
        Ok((book, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!("ok: {}", book.summary());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.0.len());
            ExitCode::from(1)
        }
    }
}

fn classify(
    config: &Path,
    directory: Option<&Path>,
    format: Format,
    files: &[PathBuf],
) -> ExitCode {
    let book = match load(config, directory) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let mut status = ExitCode::SUCCESS;
    for file in files {
        let plan = match std::fs::read(file) {
            Ok(raw) => book.decide(&raw),
            Err(e) => {
                eprintln!("{}: cannot read: {e}", file.display());
                status = ExitCode::from(1);
                continue;
            }
        };
        match format {
            Format::Json => println!("{}", json_line(file, &plan)),
            Format::Text => print!("{}", explain(&file.display().to_string(), &plan)),
        }
    }
    status
}

fn json_line(file: &Path, plan: &Plan) -> String {
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "file".into(),
            serde_json::Value::String(file.display().to_string()),
        );
    }
    value.to_string()
}

/// The decision in words, the way a specialist would explain it to a colleague.
fn explain(name: &str, plan: &Plan) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{name}");
    let _ = writeln!(
        s,
        "  message-id: {}",
        plan.message_id.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(
        s,
        "  from:       {}",
        plan.from.as_deref().unwrap_or("(none)")
    );
    let _ = writeln!(s, "  subject:    {}", plan.subject);
    let _ = writeln!(s, "  category:   {}", plan.category);
    let _ = writeln!(
        s,
        "  rule:       {}",
        plan.rule.as_deref().unwrap_or("(none matched)")
    );
    for c in &plan.conditions {
        let _ = writeln!(s, "    because   {c}");
    }
    let _ = writeln!(
        s,
        "  respond:    {}",
        if plan.respond == Respond::Auto {
            "auto"
        } else {
            "none (left for a human)"
        }
    );
    let _ = writeln!(s, "  reason:     {}", plan.reason);
    for (k, v) in &plan.fields {
        let _ = writeln!(s, "  field:      {k} = {v}");
    }
    for e in &plan.evidence {
        let _ = writeln!(s, "  evidence:   {e}");
    }
    if !plan.missing.is_empty() {
        let _ = writeln!(s, "  missing:    {}", plan.missing.join(", "));
    }
    for o in &plan.outgoing {
        let kind = if o.kind == Kind::Reply {
            "reply"
        } else {
            "forward"
        };
        let _ = writeln!(s, "  {kind:<10}  to {}", o.to.join(", "));
        if !o.cc.is_empty() {
            let _ = writeln!(s, "              cc {}", o.cc.join(", "));
        }
        let _ = writeln!(
            s,
            "              subject {:?}, template {}",
            o.subject, o.template
        );
        if !o.attachments.is_empty() {
            let _ = writeln!(s, "              attachments {}", o.attachments.join(", "));
        }
    }
    for d in &plan.keep_documents {
        let _ = writeln!(s, "  keep:       {} under {}", d.name, d.under);
    }
    for u in &plan.crm_updates {
        let _ = writeln!(
            s,
            "  crm:        {} {}: {} -> {}",
            u.record, u.field, u.from, u.to
        );
    }
    let where_ = match (&plan.original.folder, plan.original.human) {
        (Some(f), true) => format!("left for a human in {f}"),
        (None, true) => "left for a human, flagged in the inbox".into(),
        (Some(f), false) => format!("filed to {f}"),
        (None, false) => "stays in the inbox, marked answered".into(),
    };
    let _ = writeln!(s, "  original:   {where_}");
    s
}

fn run(config: &Path, once: bool, shadow: bool) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIAGE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let book = match load(config, None) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triage: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let (rules, playbook) = tokio::sync::watch::channel(std::sync::Arc::new(book));
    let result = rt.block_on(async {
        if !once {
            tokio::spawn(triage::reload::watch(config.to_path_buf(), rules));
        }
        let service = triage::service::run(triage::service::Options {
            once,
            shadow,
            stop: stopping,
            playbook,
        });
        tokio::pin!(service);
        tokio::select! {
            r = &mut service => r,
            _ = shutdown() => {
                // Every step is under a timeout, so finishing the message in hand is bounded.
                tracing::info!("stopping on signal: finishing the message in hand");
                let _ = stop.send(true);
                tokio::select! {
                    r = &mut service => r,
                    _ = shutdown() => {
                        tracing::warn!("second signal: stopping now; the journal settles the message in hand at the next start");
                        Ok(())
                    }
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn test(config: &Path, directory: Option<&Path>, verbose: bool, folders: &[PathBuf]) -> ExitCode {
    let book = match load(config, directory) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let folders = if folders.is_empty() {
        vec![PathBuf::from("tests/cases")]
    } else {
        folders.to_vec()
    };
    let (mut passed, mut failed) = (0, 0);
    for folder in &folders {
        let cases = match casebook::cases(folder) {
            Ok(c) => c,
            Err(p) => {
                eprintln!("{p}");
                return ExitCode::from(2);
            }
        };
        for eml in cases {
            let result = casebook::run_case(&book, &eml);
            if result.failures.is_empty() {
                passed += 1;
                if verbose {
                    print!("ok   {}", explain(&eml.display().to_string(), &result.plan));
                }
            } else {
                failed += 1;
                println!("FAIL {}", eml.display());
                for f in &result.failures {
                    println!("     {f}");
                }
                if verbose {
                    print!("{}", explain("     decision:", &result.plan));
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
