//! A real headless Chromium driven over WebDriver (Debian's chromium and
//! chromium-driver, installed by the test command), through fantoccini.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

impl Browser {
    /// None (the test skipped, and says so) where Chromium is not installed, unless the
    /// test command said the live tests must run.
    pub async fn start(dir: &Path) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(DRIVER).exists() {
            assert!(
                std::env::var_os("TRIAGE_LIVE_REQUIRED").is_none(),
                "no {CHROMIUM} or {DRIVER}: the test command installs chromium and chromium-driver"
            );
            eprintln!("SKIPPED browser test: no chromium/chromedriver (apt-get install chromium chromium-driver)");
            return None;
        }
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("chromium-profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                // As root, in a closed network: no sandbox, nothing fetched in the
                // background, a fresh profile.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1400,1100",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session in headless Chromium");
        Some(Browser {
            client,
            driver,
            profile,
        })
    }

    /// A screenshot kept as a test artifact in target/test-artifacts/.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let dir = super::repo().join("target/test-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The page's visible text, once a page is there (a click may still be loading).
    pub async fn text(&self) -> String {
        for _ in 0..50 {
            if let Ok(body) = self.client.find(fantoccini::Locator::Css("body")).await {
                if let Ok(t) = body.text().await {
                    return t;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no page");
    }

    /// Waits until the address holds `part` (a form submitted) and its page is there.
    pub async fn wait_url(&self, part: &str) {
        for _ in 0..100 {
            if self
                .client
                .current_url()
                .await
                .is_ok_and(|u| u.as_str().contains(part))
            {
                let _ = self.text().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never reached an address with {part}");
    }

    /// Clicks a link and waits for the page it leads to.
    pub async fn follow(&self, link: &fantoccini::elements::Element) {
        let before = self.client.current_url().await.unwrap();
        link.click().await.unwrap();
        for _ in 0..100 {
            if self.client.current_url().await.is_ok_and(|u| u != before) {
                // The new document is there once its body is.
                let _ = self.text().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the link led nowhere");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
