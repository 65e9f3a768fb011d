use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use triage::casebook;
use triage::config::Config;
use triage::plan::{self, Plan, Playbook};

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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum AuditFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum AuditView {
    /// One record in full, with the decision explained as `classify` explains it.
    Show { id: i64 },
    /// Counts by category and outcome over the period (default: the last 7 days).
    Summary,
}

/// Filters for `triage audit`; they also apply after `summary`.
#[derive(clap::Args)]
struct AuditArgs {
    /// From this time: 2026-11-20, 2026-11-20T10:00, or an age such as 24h, 7d, 30m.
    #[arg(long, global = true)]
    since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, global = true)]
    until: Option<String>,
    #[arg(long, global = true)]
    category: Option<String>,
    /// replied, forwarded, filed, left for human, shadow
    #[arg(long, global = true)]
    outcome: Option<String>,
    /// Part of the sender's address.
    #[arg(long, global = true)]
    sender: Option<String>,
    #[arg(long, global = true)]
    rule: Option<String>,
    #[arg(long, global = true)]
    message_id: Option<String>,
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: AuditFormat,
    /// Keep printing new records as they are written.
    #[arg(long)]
    follow: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Account {
    Imap,
    Smtp,
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
        /// Log lines as text (default) or one JSON object per line.
        #[arg(long, value_enum, default_value = "text", env = "TRIAGE_LOG_FORMAT")]
        log_format: Format,
    },
    /// The audit log: every decision and action, filtered, as a table, JSON lines or CSV.
    Audit {
        #[arg(long, default_value = "/etc/triage/triage.yaml", global = true)]
        config: PathBuf,
        #[command(flatten)]
        args: AuditArgs,
        #[command(subcommand)]
        view: Option<AuditView>,
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
        format: Format,
    },
    /// The circuit breaker on automatic answers: show it, or close it after a look at why
    /// it opened (`triage audit`, the logs).
    Breaker {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        #[arg(value_enum, default_value = "status")]
        action: BreakerAction,
    },
    /// OAuth2: get the first refresh token (the operator signs in once, in a browser),
    /// save it where the config says, and test signing in to IMAP and SMTP.
    Auth {
        #[arg(long, default_value = "/etc/triage/triage.yaml")]
        config: PathBuf,
        /// Whose OAuth2 settings: imap, or smtp when it has settings of its own.
        #[arg(long, value_enum, default_value = "imap")]
        account: Account,
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
    /// Internal: reads one document (bytes on stdin) as text, under the limits the
    /// service sets for it. Exit 3 with the reason on stderr when it cannot.
    #[command(hide = true)]
    ReadDocument { kind: String },
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
        Command::Check {
            config,
            directory,
            connect,
        } => check(&config, directory.as_deref(), connect),
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
            log_format,
        } => run(&config, once, shadow, log_format),
        Command::Breaker { config, action } => breaker(&config, action),
        Command::ReadDocument { kind } => read_document(&kind),
        Command::Auth {
            config,
            account,
            device,
            redirect_uri,
            check,
        } => auth(&config, account, device, &redirect_uri, check),
        Command::Audit { config, args, view } => audit(&config, &args, view),
        Command::Replay {
            config,
            since,
            rules,
            format,
        } => replay(&config, &since, rules.as_deref(), format),
        Command::Test {
            config,
            directory,
            verbose,
            folders,
        } => test(&config, directory.as_deref(), verbose, &folders),
    }
}

fn auth(
    config: &Path,
    account: Account,
    device: bool,
    redirect_uri: &str,
    check: bool,
) -> ExitCode {
    use triage::config::Grant;
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    if !check {
        let settings = match account {
            Account::Imap => config.imap.as_ref().and_then(|i| i.oauth2.as_ref()),
            Account::Smtp => config.smtp.as_ref().and_then(|s| s.oauth2.as_ref()),
        };
        let Some(oauth) = settings else {
            eprintln!("triage auth: this account has no `oauth2` settings");
            return ExitCode::from(2);
        };
        if oauth.grant != Grant::RefreshToken {
            eprintln!(
                "triage auth: the {:?} grant needs no sign-in by a person; `triage auth --check` tests it",
                oauth.grant
            );
            return ExitCode::from(2);
        }
        let file = match triage::consent::token_file(oauth) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("triage auth: {e}");
                return ExitCode::from(2);
            }
        };
        let mut say = std::io::stdout();
        let granted = if device {
            triage::consent::device_flow(oauth, &mut say)
        } else {
            triage::consent::code_flow(oauth, redirect_uri, &mut std::io::stdin().lock(), &mut say)
        };
        let refresh = match granted {
            Ok(g) => match g.refresh_token {
                Some(r) => r,
                None => {
                    eprintln!("triage auth: signed in, but the endpoint gave no refresh token (Microsoft: add the offline_access scope; Google: consent again)");
                    return ExitCode::from(1);
                }
            },
            Err(e) => {
                eprintln!("triage auth: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = triage::oauth::write_secret_file(&file, &refresh) {
            eprintln!("triage auth: {e}");
            return ExitCode::from(1);
        }
        println!("Refresh token saved to {} (mode 0600).", file.display());
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let ok = rt.block_on(async {
        let (imap_in, smtp_in) = match triage::oauth::sign_ins(&config, None) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("triage auth: {e}");
                return false;
            }
        };
        let mut ok = true;
        if let (Some(cfg), Some(sign_in)) = (&config.imap, &imap_in) {
            match triage::mailbox::connect(cfg, sign_in).await {
                Ok(mut session) => {
                    println!(
                        "IMAP {}:{}: signed in as {}",
                        cfg.host, cfg.port, cfg.username
                    );
                    let _ = session.logout().await;
                }
                Err(e) => {
                    println!("IMAP {}:{}: FAILED: {e}", cfg.host, cfg.port);
                    ok = false;
                }
            }
        }
        if let Some(cfg) = &config.smtp {
            let who = cfg.username.as_deref().unwrap_or("(no sign-in)");
            let result = match triage::outbox::Submission::new(cfg, smtp_in) {
                Ok(smtp) => {
                    let r = smtp.check().await;
                    smtp.quit().await;
                    r
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => println!("SMTP {}:{}: signed in as {who}", cfg.host, cfg.port),
                Err(e) => {
                    println!("SMTP {}:{}: FAILED: {e}", cfg.host, cfg.port);
                    ok = false;
                }
            }
        }
        ok
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One thread: the service waits on the network, and documents are read in children.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("triage: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

fn read_document(kind: &str) -> ExitCode {
    use std::io::{Read, Write};
    let Some(kind) = triage::documents::Kind::parse(kind) else {
        eprintln!("unknown document kind {kind:?}");
        return ExitCode::from(2);
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the document: {e}");
        return ExitCode::from(3);
    }
    match triage::documents::text_of(kind, &bytes) {
        Ok(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(3)
        }
    }
}

/// The playbook as the service uses it: documents read in a child process under limits.
fn load(config: &Path, directory: Option<&Path>) -> Result<Playbook, ExitCode> {
    let loaded = Config::load(config)
        .and_then(|c| Playbook::load(c, directory))
        .map(|mut b| {
            b.documents = triage::documents::Reader::child(b.config.limits.documents());
            b
        });
    loaded.map_err(|problems| {
        eprintln!("{problems}");
        eprintln!("triage: the configuration is not valid ({} problem(s)); run `triage check` after fixing", problems.0.len());
        ExitCode::from(2)
    })
}

fn audit(config: &Path, args: &AuditArgs, view: Option<AuditView>) -> ExitCode {
    use triage::audit as view_of;
    use triage::journal::{AuditFilter, Journal};
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    if !config.service.state.exists() {
        eprintln!(
            "triage: no journal at {} (has the service run?)",
            config.service.state.display()
        );
        return ExitCode::from(1);
    }
    let journal = match Journal::open(&config.service.state) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("triage: journal {}: {e}", config.service.state.display());
            return ExitCode::from(1);
        }
    };
    let time = |flag: &str, v: &Option<String>| -> Result<Option<String>, ExitCode> {
        let Some(v) = v else { return Ok(None) };
        match journal.audit_time(v) {
            Ok(Some(t)) => Ok(Some(t)),
            _ => {
                eprintln!("triage: {flag} {v:?}: expected a date (2026-11-20), a date and time (2026-11-20T10:00) or an age (24h, 7d, 30m)");
                Err(ExitCode::from(2))
            }
        }
    };
    let summary = matches!(view, Some(AuditView::Summary));
    let since = if summary && args.since.is_none() {
        Some("7d".to_string())
    } else {
        args.since.clone()
    };
    let mut filter = AuditFilter {
        since: match time("--since", &since) {
            Ok(t) => t,
            Err(c) => return c,
        },
        until: match time("--until", &args.until) {
            Ok(t) => t,
            Err(c) => return c,
        },
        category: args.category.clone(),
        outcome: args.outcome.clone(),
        sender: args.sender.clone(),
        rule: args.rule.clone(),
        message_id: args.message_id.clone(),
        id: None,
        after_id: 0,
    };
    if let Some(AuditView::Show { id }) = view {
        filter = AuditFilter {
            id: Some(id),
            ..AuditFilter::default()
        };
    }
    let rows = match journal.audit_rows(&filter) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("triage: journal: {e}");
            return ExitCode::from(1);
        }
    };
    match view {
        Some(AuditView::Show { id }) => {
            return match rows.first() {
                Some(r) if args.format == AuditFormat::Json => {
                    println!("{}", view_of::json_line(r));
                    ExitCode::SUCCESS
                }
                Some(r) => {
                    print!("{}", view_of::show(r));
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("triage: no audit record {id}");
                    ExitCode::from(1)
                }
            };
        }
        Some(AuditView::Summary) => {
            let period = format!(
                "from {} to {}",
                filter.since.as_deref().unwrap_or("the start"),
                filter.until.as_deref().unwrap_or("now")
            );
            print!("{}", view_of::summary(&rows, &period));
            return ExitCode::SUCCESS;
        }
        None => {}
    }
    let mut csv = csv::Writer::from_writer(std::io::stdout());
    let mut print = |rows: &[triage::journal::AuditRow], header: bool| match args.format {
        AuditFormat::Table => {
            if header {
                println!("{}", view_of::TABLE_HEADER);
            }
            for r in rows {
                println!("{}", view_of::table_row(r));
            }
        }
        AuditFormat::Json => {
            for r in rows {
                println!("{}", view_of::json_line(r));
            }
        }
        AuditFormat::Csv => {
            if header {
                let _ = csv.write_record(view_of::CSV_HEADER);
            }
            for r in rows {
                let _ = csv.write_record(view_of::csv_record(r));
            }
            let _ = csv.flush();
        }
    };
    print(&rows, true);
    if args.follow {
        let mut last = rows.last().map(|r| r.id).unwrap_or(0);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            filter.after_id = last;
            match journal.audit_rows(&filter) {
                Ok(new) if !new.is_empty() => {
                    last = new.last().map(|r| r.id).unwrap_or(last);
                    print(&new, false);
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("triage: journal: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn replay(config: &Path, since: &str, rules: Option<&Path>, format: Format) -> ExitCode {
    let mut cfg = match Config::load(config) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(2);
        }
    };
    if let Some(r) = rules {
        cfg.rules = r.to_path_buf();
    }
    let journal_path = cfg.service.state.clone();
    let book = match Playbook::load(cfg, None) {
        Ok(mut b) => {
            b.documents = triage::documents::Reader::child(b.config.limits.documents());
            b
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("triage: the rules to replay are not valid; nothing compared");
            return ExitCode::from(2);
        }
    };
    let journal = match triage::journal::Journal::open(&journal_path) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("triage: journal {}: {e}", journal_path.display());
            return ExitCode::from(1);
        }
    };
    let Ok(Some(from)) = journal.audit_time(since) else {
        eprintln!("triage: --since {since:?}: expected a date (2026-11-20), a date and time (2026-11-20T10:00) or an age (24h, 7d, 30m)");
        return ExitCode::from(2);
    };
    let messages = match journal.replayable(&from) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("triage: journal: {e}");
            return ExitCode::from(1);
        }
    };
    let mut differ = 0;
    for (time, message_id, then, raw) in &messages {
        let Some(then) = then else { continue };
        let now = book.decide(raw);
        let diffs = triage::replay::differences(then, &now);
        if diffs.is_empty() {
            continue;
        }
        differ += 1;
        let id = message_id.as_deref().unwrap_or("(no Message-ID)");
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"time": time, "message_id": id, "subject": now.subject,
                    "differences": diffs, "then": then, "now": now})
            ),
            Format::Text => {
                println!("{time}  {id}  {:?}", now.subject);
                for d in &diffs {
                    println!("    {d}");
                }
            }
        }
    }
    eprintln!(
        "replayed {} messages decided since {from}: {differ} would be decided differently",
        messages.len()
    );
    ExitCode::SUCCESS
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

fn check(config: &Path, directory: Option<&Path>, connect: bool) -> ExitCode {
    match plan::check(config, directory) {
        Ok((book, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!("ok: {}", book.summary());
            if connect {
                return check_connect(&book.config);
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.0.len());
            ExitCode::from(1)
        }
    }
}

/// Signs in, discovers the folders as the service would at start, and says what it found.
fn check_connect(config: &Config) -> ExitCode {
    let Some(imap) = config.imap.clone() else {
        eprintln!("the config has no `imap` section");
        return ExitCode::from(1);
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result: Result<(), String> = rt.block_on(async {
        let (sign_in, _) = triage::oauth::sign_ins(config, None)?;
        let sign_in = sign_in.ok_or("the config has no `imap` section")?;
        let mut session = triage::mailbox::connect(&imap, &sign_in).await?;
        let t = imap.timeout_seconds;
        let caps = triage::mailbox::within(t, "CAPABILITY", session.capabilities()).await?;
        let used: Vec<&str> = ["IDLE", "MOVE", "UIDPLUS", "SPECIAL-USE", "NAMESPACE", "X-GM-EXT-1"]
            .into_iter()
            .filter(|c| caps.has_str(c))
            .collect();
        let gmail = caps.has_str("X-GM-EXT-1");
        let places = triage::folders::discover(&mut session, config, gmail, t)
            .await
            .map_err(String::from)?;
        println!("imap {}:{}: signed in as {}", imap.host, imap.port, imap.username);
        println!("  capabilities used: {}", used.join(" "));
        println!("  personal namespace: {:?}, separator {:?}", places.prefix, places.delimiter);
        println!("  sent: {} ({}){}", places.sent_lookup, places.sent_found_by,
            if places.sent.is_none() { "; the server keeps its own copies, no APPEND" } else { "" });
        if !caps.has_str("MOVE") {
            println!("  no MOVE: filing is COPY, \\Deleted and {}", if caps.has_str("UIDPLUS") {
                "UID EXPUNGE of just those messages"
            } else {
                "no expunge (no UIDPLUS): originals stay marked \\Deleted until the server or a person expunges"
            });
        }
        let mut by_role: Vec<(String, String)> = config
            .folders
            .by_category
            .iter()
            .map(|(c, f)| (c.clone(), places.resolve(f)))
            .collect();
        if let Some(h) = &config.folders.human {
            by_role.push(("left for a human".into(), places.resolve(h)));
        }
        for (role, folder) in by_role {
            println!("  {role}: {folder} (exists, selectable)");
        }
        let _ = session.logout().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triage check --connect: {e}");
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
            Format::Text => print!("{}", plan::explain(&file.display().to_string(), &plan)),
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

fn run(config: &Path, once: bool, shadow: bool, log_format: Format) -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIAGE_LOG")
                .unwrap_or_else(|_| "info".into())
                // The IMAP and HTTP libraries trace raw protocol lines, which carry
                // passwords and tokens: kept at info even under TRIAGE_LOG=trace.
                .add_directive("async_imap=info".parse().expect("directive"))
                .add_directive("ureq=info".parse().expect("directive"))
                .add_directive("ureq_proto=info".parse().expect("directive")),
        )
        .with_writer(std::io::stderr);
    match log_format {
        Format::Json => logs.json().init(),
        Format::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let book = match load(config, None) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let health = std::sync::Arc::new(triage::health::Health::new(std::time::Duration::from_secs(
        book.config.service.stale_after_seconds,
    )));
    let http = book
        .config
        .service
        .http
        .as_ref()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    let (rules, playbook) = tokio::sync::watch::channel(std::sync::Arc::new(book));
    let result = rt.block_on(async {
        if !once {
            tokio::spawn(triage::reload::watch(
                config.to_path_buf(),
                rules,
                health.clone(),
            ));
            tokio::spawn(triage::health::watch(health.clone()));
            if let Some(addr) = http {
                tokio::spawn(triage::health::serve_http(addr, health.clone()));
            }
        }
        let service = triage::service::run(triage::service::Options {
            once,
            shadow,
            stop: stopping,
            playbook,
            health: health.clone(),
        });
        tokio::pin!(service);
        tokio::select! {
            r = &mut service => r,
            _ = shutdown() => {
                // Every step is under a timeout, so finishing the message in hand is bounded.
                tracing::info!("stopping on signal: finishing the message in hand");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
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
                    print!(
                        "ok   {}",
                        plan::explain(&eml.display().to_string(), &result.plan)
                    );
                }
            } else {
                failed += 1;
                println!("FAIL {}", eml.display());
                for f in &result.failures {
                    println!("     {f}");
                }
                if verbose {
                    print!("{}", plan::explain("     decision:", &result.plan));
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
