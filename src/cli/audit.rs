//! `triage audit [show ID | summary]`: the audit log, filtered, as a table, JSON lines or
//! CSV; `--follow` keeps printing new records as they are written.

use std::path::Path;

use triage::review::audit as view_of;
use triage::shell::journal::{AuditFilter, AuditRow, Journal};

use super::Failure;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
    Csv,
}

#[derive(clap::Subcommand)]
pub enum View {
    /// One record in full, with the decision explained as `classify` explains it.
    Show {
        id: i64,
        /// Preview a template against this decision: the reply the message would get
        /// with TEMPLATE in place of its rule's (needs the message's kept bytes).
        #[arg(long, value_name = "TEMPLATE")]
        render: Option<String>,
    },
    /// Counts by category and outcome over the period (default: the last 7 days).
    Summary,
    /// Per rule over the period (default 7 days): messages decided, answered, drafted,
    /// filed, left for a person and the top reasons why; rules that never fired.
    Coverage,
}

/// Filters for `triage audit`; they also apply after `summary`.
#[derive(clap::Args)]
pub struct Filters {
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

pub fn execute(config_path: &Path, args: &Filters, view: Option<View>) -> Result<(), Failure> {
    let config = super::config(config_path)?;
    if !config.service.state.exists() {
        return Err(Failure::Failed(format!(
            "triage: no journal at {} (has the service run?)",
            config.service.state.display()
        )));
    }
    let journal = super::journal(&config)?;
    let mut filter = filter(&journal, args, view.as_ref())?;
    let rows = journal.audit_rows(&filter).map_err(failed)?;
    match view {
        Some(View::Show { id, render: None }) => return show(id, rows.first(), args.format),
        Some(View::Show {
            id,
            render: Some(template),
        }) => return render(config_path, &journal, id, rows.first(), &template),
        Some(View::Coverage) => return coverage(&config, &rows, &filter, args.format),
        Some(View::Summary) => {
            let period = format!(
                "from {} to {}",
                filter.since.as_deref().unwrap_or("the start"),
                filter.until.as_deref().unwrap_or("now")
            );
            print!("{}", view_of::summary(&rows, &period));
            return Ok(());
        }
        None => {}
    }
    let mut printer = Printer::new(args.format);
    printer.print(&rows, true);
    if !args.follow {
        return Ok(());
    }
    let mut last = rows.last().map(|r| r.id).unwrap_or(0);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        filter.after_id = last;
        let new = journal.audit_rows(&filter).map_err(failed)?;
        if let Some(r) = new.last() {
            last = r.id;
            printer.print(&new, false);
        }
    }
}

fn failed(e: triage::shell::journal::Error) -> Failure {
    Failure::Failed(format!("triage: {e}"))
}

/// The command line's filters as the journal reads them; `summary` defaults to 7 days.
fn filter(journal: &Journal, args: &Filters, view: Option<&View>) -> Result<AuditFilter, Failure> {
    if let Some(View::Show { id, .. }) = view {
        return Ok(AuditFilter {
            id: Some(*id),
            ..AuditFilter::default()
        });
    }
    let time = |flag: &str, v: Option<&str>| -> Result<Option<String>, Failure> {
        let Some(v) = v else { return Ok(None) };
        match journal.audit_time(v) {
            Ok(Some(t)) => Ok(Some(t)),
            _ => Err(super::bad_time(flag, v)),
        }
    };
    let since = match (view, &args.since) {
        (Some(View::Summary | View::Coverage), None) => Some("7d"),
        (_, since) => since.as_deref(),
    };
    Ok(AuditFilter {
        since: time("--since", since)?,
        until: time("--until", args.until.as_deref())?,
        category: args.category.clone(),
        outcome: args.outcome.clone(),
        sender: args.sender.clone(),
        rule: args.rule.clone(),
        message_id: args.message_id.clone(),
        ..AuditFilter::default()
    })
}

/// Rule coverage against today's rules, as a table or JSON.
fn coverage(
    config: &triage::core::config::Config,
    rows: &[AuditRow],
    filter: &AuditFilter,
    format: AuditFormat,
) -> Result<(), Failure> {
    let rules = triage::core::rules::Rulebook::load(&config.rules)
        .map_err(|p| Failure::Invalid(p.to_string()))?;
    let names: Vec<String> = rules.rules.iter().map(|r| r.name.clone()).collect();
    let table = view_of::coverage(rows, &names);
    if format == AuditFormat::Json {
        for c in &table {
            println!("{}", serde_json::to_string(c).unwrap_or_default());
        }
        return Ok(());
    }
    let period = format!(
        "from {} to {}",
        filter.since.as_deref().unwrap_or("the start"),
        filter.until.as_deref().unwrap_or("now")
    );
    print!("{}", view_of::coverage_table(&table, &period));
    Ok(())
}

/// The template preview against a recorded decision, from the message's kept bytes.
fn render(
    config_path: &Path,
    journal: &Journal,
    id: i64,
    row: Option<&AuditRow>,
    template: &str,
) -> Result<(), Failure> {
    let row = row.ok_or_else(|| Failure::Failed(format!("triage: no audit record {id}")))?;
    let key = row.message_id.as_deref().unwrap_or("");
    let raw = journal.raw_of(key).map_err(failed)?.ok_or_else(|| {
        Failure::Failed(format!(
            "triage: the bytes of {key:?} are no longer kept (service.keep_messages_days); preview a saved copy with `triage classify FILE --render {template}`"
        ))
    })?;
    let mut book = super::playbook(config_path, None)?;
    let mail = book.preview(&raw, template).map_err(Failure::Invalid)?;
    super::print_lines(&mail);
    Ok(())
}

fn show(id: i64, row: Option<&AuditRow>, format: AuditFormat) -> Result<(), Failure> {
    let row = row.ok_or_else(|| Failure::Failed(format!("triage: no audit record {id}")))?;
    if format == AuditFormat::Json {
        println!("{}", view_of::json_line(row));
    } else {
        print!("{}", view_of::show(row));
    }
    Ok(())
}

/// Prints records in the chosen format; the header only once, also under `--follow`.
struct Printer {
    format: AuditFormat,
    csv: csv::Writer<std::io::Stdout>,
}

impl Printer {
    fn new(format: AuditFormat) -> Printer {
        Printer {
            format,
            csv: csv::Writer::from_writer(std::io::stdout()),
        }
    }

    fn print(&mut self, rows: &[AuditRow], header: bool) {
        match self.format {
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
                    let _ = self.csv.write_record(view_of::CSV_HEADER);
                }
                for r in rows {
                    let _ = self.csv.write_record(view_of::csv_record(r));
                }
                let _ = self.csv.flush();
            }
        }
    }
}
