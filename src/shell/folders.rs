//! The mailbox's folders as the server names them. The config writes folders as paths
//! under the personal namespace with `/` between levels (`Triage/Orders`); servers differ:
//! Dovecot `Triage/Orders`, Cyrus and Courier `INBOX.Triage.Orders`, Gmail `[Gmail]/Sent
//! Mail`, Exchange `Sent Items`. Roles (sent, category folder, human folder) are resolved
//! here, when a plan is executed, so a config fix also applies to plans already made.

use tracing::info;

use crate::core::config::{Config, Folders};
use crate::shell::mailbox::{self, checked, Imap, Trouble};

/// The server's layout, discovered once per start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// Personal namespace prefix, with its separator (`INBOX.`), or empty.
    pub prefix: String,
    pub delimiter: char,
    /// Where copies of our answers go; None when the server files them itself (Gmail
    /// keeps what is sent through its SMTP: an APPEND would make a second copy).
    pub sent: Option<String>,
    /// The Sent folder to look in for a copy after a crash (Gmail's own).
    pub sent_lookup: String,
    /// How the Sent folder was found, for the log and `triage check --connect`.
    pub sent_found_by: String,
    /// Where drafts for a person go, when the playbook prepares any.
    pub drafts: Option<String>,
}

impl Places {
    /// The server's name for a folder written in the config.
    pub fn resolve(&self, logical: &str) -> String {
        server_name(logical, &self.prefix, self.delimiter)
    }
}

/// `Triage/Orders` under prefix `INBOX.` with `.`: `INBOX.Triage.Orders`. INBOX, and a
/// name already written under the prefix, stay as they are.
pub fn server_name(logical: &str, prefix: &str, delimiter: char) -> String {
    if logical.eq_ignore_ascii_case("INBOX") || (!prefix.is_empty() && logical.starts_with(prefix))
    {
        return logical.to_string();
    }
    let path = logical.replace('/', &delimiter.to_string());
    format!("{prefix}{path}")
}

/// One LIST line: the name, and the SPECIAL-USE role it carries (`\Sent` …), if any.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub special: Option<String>,
}

/// The folder for a role (`Sent`, `Drafts`): the config's name when it gives one; else
/// the folder the server marks with the role (`\Sent`, RFC 6154 SPECIAL-USE); else the
/// role's name under the namespace. With how it was found, for the log.
pub fn pick_role(
    configured: Option<&str>,
    role: &str,
    listed: &[Listed],
    prefix: &str,
    delimiter: char,
) -> (String, String) {
    if let Some(name) = configured {
        return (
            server_name(name, prefix, delimiter),
            "named in the config".into(),
        );
    }
    let special = format!("\\{role}");
    if let Some(l) = listed
        .iter()
        .find(|l| l.special.as_deref() == Some(&special))
    {
        return (
            l.name.clone(),
            format!("marked {special} by the server (SPECIAL-USE)"),
        );
    }
    (
        server_name(role, prefix, delimiter),
        format!("not marked by the server: {role}"),
    )
}

/// Sent, as [`pick_role`] finds it.
pub fn pick_sent(
    folders: &Folders,
    listed: &[Listed],
    prefix: &str,
    delimiter: char,
) -> (String, String) {
    pick_role(folders.sent.as_deref(), "Sent", listed, prefix, delimiter)
}

/// The personal namespace from what LIST shows: servers that keep personal folders under
/// INBOX (Cyrus, Courier) list them as `INBOX.<name>`, and nothing else at the top.
pub fn guess_prefix(listed: &[Listed], delimiter: char) -> String {
    let under_inbox = format!("INBOX{delimiter}");
    let top_level_other = listed
        .iter()
        .any(|l| !l.name.eq_ignore_ascii_case("INBOX") && !l.name.starts_with(&under_inbox));
    let any_under_inbox = listed.iter().any(|l| l.name.starts_with(&under_inbox));
    if any_under_inbox && !top_level_other && delimiter != '/' {
        under_inbox
    } else {
        String::new()
    }
}

/// Reads the server's layout, then makes sure every folder the service files into exists
/// and can be selected, before anything is sent. An error names the folder and quotes the
/// server.
pub async fn discover(
    s: &mut Imap,
    config: &Config,
    gmail: bool,
    drafts: bool,
    t: u64,
) -> Result<Places, Trouble> {
    let (delimiter, listed) = list_all(s, t).await?;
    let mut prefix = guess_prefix(&listed, delimiter);
    // A server that shows nothing yet: find out where it lets us create folders.
    if prefix.is_empty() && delimiter == '.' {
        let probe = "Triage";
        if mailbox::ensure_folder(s, probe, t).await.is_err()
            && mailbox::ensure_folder(s, &format!("INBOX.{probe}"), t)
                .await
                .is_ok()
        {
            prefix = "INBOX.".into();
        }
    }
    let (sent_name, found_by) = pick_sent(&config.folders, &listed, &prefix, delimiter);
    let appends = config.folders.append_sent.unwrap_or(!gmail);
    let places = Places {
        sent: appends.then(|| sent_name.clone()),
        sent_lookup: sent_name,
        sent_found_by: found_by,
        drafts: drafts.then(|| {
            let configured = config.folders.drafts.as_deref();
            pick_role(configured, "Drafts", &listed, &prefix, delimiter).0
        }),
        prefix,
        delimiter,
    };
    let mut needed: Vec<String> = config.folders.by_category.values().cloned().collect();
    needed.extend(config.folders.human.clone());
    needed.sort();
    needed.dedup();
    let mut names: Vec<String> = needed.iter().map(|f| places.resolve(f)).collect();
    names.extend(places.sent.clone());
    names.extend(places.drafts.clone());
    for name in &names {
        mailbox::ensure_folder(s, name, t)
            .await
            .map_err(|e| named(name, e))?;
        checked(t, &format!("EXAMINE {name}"), s.examine(name))
            .await
            .map_err(|e| named(name, e))?;
    }
    info!(
        "folders: namespace {:?}, separator {:?}, Sent {} ({}){}; filing into {}",
        places.prefix,
        places.delimiter,
        places.sent_lookup,
        places.sent_found_by,
        if places.sent.is_none() {
            ", copies kept by the server (no APPEND)"
        } else {
            ""
        },
        names.join(", ")
    );
    Ok(places)
}

fn named(folder: &str, e: Trouble) -> Trouble {
    match e {
        Trouble::Refused(w) => Trouble::Refused(format!("folder {folder:?} cannot be used: {w}")),
        broken => broken,
    }
}

async fn list_all(s: &mut Imap, t: u64) -> Result<(char, Vec<Listed>), Trouble> {
    use async_imap::types::NameAttribute;
    let root = mailbox::list(s, "", t).await?;
    let all = mailbox::list(s, "*", t).await?;
    // LIST "" "" answers with the separator; some answers do not parse, and then any
    // listed folder tells it.
    let delimiter = root
        .iter()
        .chain(all.iter())
        .find_map(|n| n.delimiter().and_then(|d| d.chars().next()))
        .unwrap_or('/');
    let listed = all
        .iter()
        .map(|n| Listed {
            name: n.name().to_string(),
            special: n.attributes().iter().find_map(|a| match a {
                NameAttribute::Sent => Some("\\Sent".to_string()),
                NameAttribute::Extension(e) if e.eq_ignore_ascii_case("\\Sent") => {
                    Some("\\Sent".to_string())
                }
                _ => None,
            }),
        })
        .collect();
    Ok((delimiter, listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(name: &str, special: Option<&str>) -> Listed {
        Listed {
            name: name.into(),
            special: special.map(str::to_string),
        }
    }

    #[test]
    fn config_paths_become_the_servers_names() {
        assert_eq!(server_name("Triage/Orders", "", '/'), "Triage/Orders");
        assert_eq!(
            server_name("Triage/Orders", "INBOX.", '.'),
            "INBOX.Triage.Orders"
        );
        assert_eq!(server_name("INBOX", "INBOX.", '.'), "INBOX");
        assert_eq!(server_name("INBOX.Sent", "INBOX.", '.'), "INBOX.Sent");
        let cyrus = [
            l("INBOX", None),
            l("INBOX.Sent", Some("\\Sent")),
            l("INBOX.Trash", None),
        ];
        assert_eq!(guess_prefix(&cyrus, '.'), "INBOX.");
        let dovecot = [
            l("INBOX", None),
            l("Sent", Some("\\Sent")),
            l("Triage/Orders", None),
        ];
        assert_eq!(guess_prefix(&dovecot, '/'), "");
        let gmail = [
            l("INBOX", None),
            l("[Gmail]/Sent Mail", Some("\\Sent")),
            l("[Gmail]/All Mail", None),
        ];
        assert_eq!(guess_prefix(&gmail, '/'), "");
        let mut folders = Folders::default();
        assert_eq!(pick_sent(&folders, &gmail, "", '/').0, "[Gmail]/Sent Mail");
        let exchange = [l("INBOX", None), l("Sent Items", Some("\\Sent"))];
        assert_eq!(pick_sent(&folders, &exchange, "", '/').0, "Sent Items");
        assert_eq!(pick_sent(&folders, &cyrus, "INBOX.", '.').0, "INBOX.Sent");
        assert_eq!(
            pick_sent(&folders, &[l("INBOX", None)], "INBOX.", '.').0,
            "INBOX.Sent"
        );
        folders.sent = Some("Gesendet".into());
        assert_eq!(pick_sent(&folders, &exchange, "", '/').0, "Gesendet");
    }
}
