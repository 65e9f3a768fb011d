//! The deployment files say what they mean: systemd accepts the unit, and the config in
//! the Kubernetes manifest passes `triage check` with the shipped rules beside it.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::repo;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("triage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn systemd_accepts_the_unit() {
    let dir = scratch("unit");
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/triage.service"))
        .unwrap()
        .replace("/usr/local/bin/triage", env!("CARGO_BIN_EXE_triage"));
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let path = dir.join("triage.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (tools/mailstack/install.sh installs systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kubernetes_config_passes_triage_check() {
    use serde::Deserialize;
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/triage.yaml")).unwrap();
    let mut kinds = Vec::new();
    let mut config = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = serde_yaml::Value::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap().to_string();
        if kind == "ConfigMap" {
            config = v["data"]["triage.yaml"].as_str().map(str::to_string);
        }
        if kind == "Deployment" {
            assert_eq!(
                v["spec"]["replicas"].as_u64(),
                Some(1),
                "one replica per mailbox"
            );
            assert_eq!(v["spec"]["strategy"]["type"].as_str(), Some("Recreate"));
            let c = &v["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(
                c["readinessProbe"]["httpGet"]["path"].as_str(),
                Some("/readyz")
            );
            assert_eq!(
                c["livenessProbe"]["httpGet"]["path"].as_str(),
                Some("/healthz")
            );
        }
        kinds.push(kind);
    }
    assert_eq!(kinds, ["ConfigMap", "PersistentVolumeClaim", "Deployment"]);

    // Laid out as the pod sees /etc/triage.
    let dir = scratch("k8s");
    let config = config.expect("triage.yaml in the ConfigMap");
    std::fs::write(dir.join("triage.yaml"), config).unwrap();
    for (from, to) in [
        ("rules", "rules"),
        ("response-templates", "response-templates"),
        ("deploy/directory", "directory"),
    ] {
        std::fs::create_dir_all(dir.join(to)).unwrap();
        for e in std::fs::read_dir(repo().join(from)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(to).join(p.file_name().unwrap())).unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["check", "--config"])
        .arg(dir.join("triage.yaml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // The secrets are files the pod has and this machine has not: named, never printed.
    assert!(said.contains("/run/secrets/triage/imap-password"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// deploy/triage.yaml with its imap: and smtp: sections replaced by `sections`, laid out
/// beside the shipped rules; what `triage check` says of it.
fn check_with(name: &str, sections: &str) -> (bool, String) {
    let dir = scratch(name);
    let base = std::fs::read_to_string(repo().join("deploy/triage.yaml")).unwrap();
    let (head, tail) = base.split_once("\nimap:").unwrap();
    let service = &tail[tail.find("\nservice:").unwrap()..];
    let text = support::repo_paths(&format!("{head}\n{sections}{service}"));
    std::fs::write(dir.join("triage.yaml"), text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["check", "--config"])
        .arg(dir.join("triage.yaml"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_oauth2_examples_pass_triage_check_and_a_missing_token_is_named() {
    for example in ["microsoft365", "google"] {
        let sections =
            std::fs::read_to_string(repo().join(format!("deploy/oauth2/{example}.yaml"))).unwrap();
        let (ok, said) = check_with(example, &sections);
        assert!(ok, "{example}: {said}");
        // The refresh token is a file the service host has: named as needed, not read here.
        assert!(said.contains("oauth2.refresh_token"), "{said}");
        // Without a refresh token the refresh_token grant cannot work: said at load, with
        // the place in the file.
        let broken: String = sections
            .lines()
            .filter(|l| !l.trim_start().starts_with("refresh_token:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (ok, said) = check_with(&format!("{example}-broken"), &broken);
        assert!(!ok, "{example} without a refresh token passed");
        let line = said
            .lines()
            .find(|l| l.contains("imap.oauth2: `refresh_token` is needed"))
            .unwrap_or_else(|| panic!("{said}"));
        assert!(
            line.split(':')
                .nth(1)
                .is_some_and(|n| n.parse::<u32>().is_ok()),
            "file:line:col in {line}"
        );
    }
}
