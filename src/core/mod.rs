//! The decision core: bytes + playbook → [`plan::Plan`], with no network, no journal, no
//! clock of its own. The one process it may start is the sandboxed document reader
//! ([`documents::Reader`]), handed in by the caller.

pub mod config;
pub mod crm;
pub mod dates;
pub mod directory;
pub mod document_server;
pub mod documents;
pub mod escape;
pub mod guard;
pub mod message;
pub mod plan;
pub mod problems;
pub mod restraint;
pub mod rules;
pub mod templates;
pub mod threading;
pub mod tnef;

#[cfg(test)]
mod tests {
    /// The line between core and shell, kept by a test since it is one crate: nothing
    /// in `src/core` reaches the network, the journal or the shell.
    #[test]
    fn the_core_imports_no_io() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
        let forbidden = [
            "crate::shell",
            "crate::review",
            "tokio",
            "rusqlite",
            "lettre",
            "async_imap",
            // Parsing an address is not I/O; sockets are.
            "TcpStream",
            "TcpListener",
            "UdpSocket",
        ];
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.ends_with("mod.rs") {
                continue; // this test names the words it looks for
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for word in forbidden {
                assert!(!text.contains(word), "{} uses {word}", path.display());
            }
            checked += 1;
        }
        assert!(checked >= 12, "only {checked} files in src/core");
    }
}
