//! A real Cyrus IMAP 3.6 for the live tests (tools/mailstack/cyrus.sh).

use std::time::Duration;

use super::*;

/// A real Cyrus IMAP 3.6 (Debian's package, unpacked into a private root by
/// tools/mailstack/cyrus.sh) holding the desk's mailbox; Postfix of the stack delivers the
/// desk's mail to it over LMTP and sends the answers to the Dovecot mailboxes of the
/// partner and the internal people.
pub struct Cyrus {
    state: std::path::PathBuf,
    imap: u16,
}

impl Cyrus {
    pub fn start(stack: &Stack) -> Cyrus {
        Cyrus::start_suppressing(stack, "")
    }

    /// With capabilities withheld (`"MOVE"`), as older or differently configured servers.
    pub fn start_suppressing(stack: &Stack, suppress: &str) -> Cyrus {
        let state = stack.dir.join("cyrus");
        let (imap, lmtp) = (free_port(), free_port());
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mailstack/cyrus.sh");
        let ok = std::process::Command::new("bash")
            .arg(&script)
            .args([
                "start",
                &state.display().to_string(),
                &imap.to_string(),
                &lmtp.to_string(),
            ])
            .env("CYRUS_SUPPRESS", suppress)
            .status()
            .unwrap();
        assert!(ok.success(), "Cyrus did not start");
        let map = stack.dir.join("stack/postfix/etc/transport_cyrus");
        std::fs::write(&map, format!("{DESK} lmtp:inet:127.0.0.1:{lmtp}\n")).unwrap();
        stack.postconf(&format!("transport_maps = texthash:{}", map.display()));
        Cyrus { state, imap }
    }

    pub fn wiring(&self, stack: &Stack) -> Wiring {
        Wiring {
            imap: format!(
                "{{host: 127.0.0.1, port: {}, tls: plain, username: {DESK}, password: {{env: LIVE_PASSWORD}}, poll_seconds: 1, timeout_seconds: 10}}",
                self.imap
            ),
            ..Wiring::plain(stack)
        }
    }

    /// The desk's folder on Cyrus, with flags.
    pub fn folder(&self, name: &str) -> Vec<Held> {
        block_on(async move {
            let mut s = self.login().await;
            let out = read_folder(&mut s, name).await;
            drop(s.logout().await);
            out
        })
    }

    pub fn wait_for(&self, name: &str, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.folder(name).len() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} on Cyrus never held {n}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/mailstack/cyrus.sh");
        let _ = std::process::Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(&self.state)
            .status();
    }
}

impl Cyrus {
    /// The desk signed in on Cyrus (any password passes there).
    async fn login(&self) -> ImapSession {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.imap))
            .await
            .unwrap();
        // APPEND sends its literal in pieces: without this, each waits for a delayed ACK.
        tcp.set_nodelay(true).unwrap();
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.unwrap();
        client.login(DESK, "any").await.map_err(|e| e.0).unwrap()
    }

    /// Puts messages straight into the desk's folder on Cyrus (a backlog).
    pub fn append_all(&self, name: &str, raws: &[Vec<u8>]) {
        block_on(async move {
            let mut s = self.login().await;
            for raw in raws {
                s.append(name, None, None, raw).await.unwrap();
            }
            drop(s.logout().await);
        })
    }
}
