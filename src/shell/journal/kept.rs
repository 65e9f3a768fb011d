//! Each message's bytes as received, kept for `triage replay` and the review pages
//! (`service.keep_messages_days`): appended to one file a day beside the journal
//! (`triage.messages/2026-12-03`) and referenced from the message's row as
//! `day:offset:length`. In SQLite they were written twice (WAL, then checkpoint) and
//! cost about a quarter of a backlog's time; here once, and a day expires by deleting
//! one file. Not synced: a power cut may lose the last bytes, never a decision.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::core::dates::day_of;
use crate::shell::clock;

pub struct Kept {
    dir: PathBuf,
    /// Today's file, open for appending, and its length. Shared with the deciders,
    /// which keep each message's bytes as they decide it.
    today: Mutex<Option<(String, File, u64)>>,
}

impl Kept {
    /// Beside the journal: `triage.sqlite` keeps its messages in `triage.messages/`.
    pub fn beside(journal: &Path) -> Kept {
        Kept {
            dir: journal.with_extension("messages"),
            today: Mutex::new(None),
        }
    }

    /// Today's file; after a panic while it was held, opened again (its length read anew).
    fn today(&self) -> std::sync::MutexGuard<'_, Option<(String, File, u64)>> {
        self.today.lock().unwrap_or_else(|poisoned| {
            let mut today = poisoned.into_inner();
            *today = None;
            today
        })
    }

    /// Appends the bytes; the reference to store with the message.
    pub fn write(&self, raw: &[u8]) -> std::io::Result<String> {
        let day = day_of(clock::now());
        let mut today = self.today();
        if today.as_ref().is_none_or(|(d, ..)| *d != day) {
            std::fs::create_dir_all(&self.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(&day))?;
            let len = file.metadata()?.len();
            *today = Some((day, file, len));
        }
        let (day, file, len) = today.as_mut().expect("opened above");
        if let Err(e) = file.write_all(raw) {
            // Part of it may be in the file: the length is read from the file again.
            *today = None;
            return Err(e);
        }
        let reference = format!("{day}:{len}:{}", raw.len());
        *len += raw.len() as u64;
        Ok(reference)
    }

    /// Appends the bytes, or says why not (a disk that refuses them costs the replay of
    /// this message, not its handling): the reference to store with the message.
    pub fn keep(&self, uid: u32, raw: &[u8]) -> Option<String> {
        self.write(raw)
            .inspect_err(|e| {
                tracing::warn!(uid, "the message's bytes are not kept for replay: {e}")
            })
            .ok()
    }

    /// The bytes a reference names; None when its day has expired or it cannot be read.
    pub fn read(&self, reference: &str) -> Option<Vec<u8>> {
        let mut parts = reference.split(':');
        let day = parts.next()?;
        let offset: u64 = parts.next()?.parse().ok()?;
        let len: usize = parts.next()?.parse().ok()?;
        // A reference is ours, but a day name is a file name: nothing else.
        if day.is_empty() || !day.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return None;
        }
        let mut file = File::open(self.dir.join(day)).ok()?;
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut out = vec![0; len];
        file.read_exact(&mut out).ok()?;
        Some(out)
    }

    /// Deletes the days older than `days`; how many files went.
    pub fn expire(&self, days: u32) -> usize {
        let oldest = day_of(clock::now() - f64::from(days) * 86_400.0);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut gone = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Day names sort as dates.
            if name.len() == 10 && name < oldest && std::fs::remove_file(entry.path()).is_ok() {
                gone += 1;
            }
        }
        if gone > 0 {
            *self.today() = None;
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_back_by_reference_and_expire_by_day() {
        let dir = std::env::temp_dir().join(format!("triage-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kept = Kept::beside(&dir.join("triage.sqlite"));
        let a = kept.write(b"first message").unwrap();
        let b = kept.write(b"second").unwrap();
        assert_eq!(kept.read(&a).unwrap(), b"first message");
        assert_eq!(kept.read(&b).unwrap(), b"second");
        // Only our own references are read: no paths, no lengths past the end.
        assert!(kept.read("../../etc/passwd:0:10").is_none());
        let day = a.split(':').next().unwrap();
        assert!(kept.read(&format!("{day}:0:999999")).is_none());
        // An old day goes; today stays.
        std::fs::write(dir.join("triage.messages/2000-01-01"), b"old").unwrap();
        assert_eq!(kept.expire(30), 1);
        assert_eq!(kept.read(&b).unwrap(), b"second");
        let c = kept.write(b"third").unwrap();
        assert_eq!(kept.read(&c).unwrap(), b"third");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
