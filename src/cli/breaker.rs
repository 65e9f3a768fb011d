//! `triage breaker [status|reset]`: the circuit breaker on automatic answers, shown or
//! closed by a person after a look at why it opened.

use std::path::Path;

use super::Failure;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Action {
    Status,
    Reset,
}

pub fn execute(config: &Path, action: Action) -> Result<(), Failure> {
    let config = super::config(config)?;
    let journal = super::journal(&config)?;
    let setting = config.limits.circuit_breaker.setting();
    let result = match action {
        Action::Status => journal.breaker_open(&setting).map(|open| match open {
            Some(why) => println!("open {why}"),
            None => println!("closed (limit {setting})"),
        }),
        Action::Reset => {
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
    result.map_err(|e| Failure::Failed(format!("triage: {e}")))
}
