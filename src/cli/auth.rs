//! `triage auth`: the first OAuth2 refresh token (the operator signs in once, in a
//! browser or with a device code), saved where the config says; then a test sign-in to
//! IMAP and SMTP with what is configured.

use std::path::Path;

use triage::core::config::{Config, Grant, OAuth2Config as OAuth2};
use triage::shell::{consent, mailbox, oauth, outbox};

use super::Failure;

/// Whose OAuth2 settings `triage auth` works with.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Account {
    Imap,
    Smtp,
}

pub struct Options<'a> {
    pub account: Account,
    pub device: bool,
    pub redirect_uri: &'a str,
    /// Only test signing in with what is configured now.
    pub check: bool,
}

pub fn execute(config: &Path, options: Options) -> Result<(), Failure> {
    let config = super::config(config)?;
    if !options.check {
        sign_in_once(&config, &options)?;
    }
    let rt = super::runtime()?;
    if rt.block_on(test_sign_ins(&config)) {
        Ok(())
    } else {
        Err(Failure::Said(1))
    }
}

/// The person signs in; the refresh token is saved (mode 0600) where the config says.
fn sign_in_once(config: &Config, options: &Options) -> Result<(), Failure> {
    let settings = match options.account {
        Account::Imap => config.imap.as_ref().and_then(|i| i.oauth2.as_ref()),
        Account::Smtp => config.smtp.as_ref().and_then(|s| s.oauth2.as_ref()),
    };
    let oauth = settings.ok_or_else(|| {
        Failure::Invalid("triage auth: this account has no `oauth2` settings".into())
    })?;
    if oauth.grant != Grant::RefreshToken {
        return Err(Failure::Invalid(format!(
            "triage auth: the {:?} grant needs no sign-in by a person; `triage auth --check` tests it",
            oauth.grant
        )));
    }
    let file =
        consent::token_file(oauth).map_err(|e| Failure::Invalid(format!("triage auth: {e}")))?;
    let refresh = refresh_token(oauth, options)?;
    oauth::write_secret_file(&file, &refresh)
        .map_err(|e| Failure::Failed(format!("triage auth: {e}")))?;
    println!("Refresh token saved to {} (mode 0600).", file.display());
    Ok(())
}

fn refresh_token(oauth: &OAuth2, options: &Options) -> Result<String, Failure> {
    let mut say = std::io::stdout();
    let granted = if options.device {
        consent::device_flow(oauth, &mut say)
    } else {
        consent::code_flow(
            oauth,
            options.redirect_uri,
            &mut std::io::stdin().lock(),
            &mut say,
        )
    };
    let granted = granted.map_err(|e| Failure::Failed(format!("triage auth: {e}")))?;
    granted.refresh_token.ok_or_else(|| {
        Failure::Failed("triage auth: signed in, but the endpoint gave no refresh token (Microsoft: add the offline_access scope; Google: consent again)".into())
    })
}

/// Signs in to each configured server and says how it went; true when all did.
async fn test_sign_ins(config: &Config) -> bool {
    let (imap_in, smtp_in) = match oauth::sign_ins(config, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("triage auth: {e}");
            return false;
        }
    };
    let mut ok = true;
    if let (Some(cfg), Some(sign_in)) = (&config.imap, &imap_in) {
        match mailbox::connect(cfg, sign_in).await {
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
        let result = match outbox::Submission::new(cfg, smtp_in) {
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
}
