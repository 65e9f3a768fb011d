//! The JSON Schemas editors complete from: the shipped files are what `triage schema`
//! generates from the loading types, every shipped YAML file passes them, and a
//! misspelt key is refused by the schema and by `triage check` alike.

mod support;

use std::path::Path;
use std::process::Command;

use support::repo;

fn generated(which: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["schema", which])
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn shipped(which: &str) -> serde_json::Value {
    let path = repo().join(format!("schemas/{which}.schema.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Validates YAML text as the YAML language server would; Err with the schema's words.
fn validate(which: &str, yaml: &str) -> Result<(), String> {
    let instance: serde_json::Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    let url = format!("file:///{which}.schema.json");
    compiler.add_resource(&url, shipped(which)).unwrap();
    let index = compiler.compile(&url, &mut schemas).unwrap();
    schemas
        .validate(&instance, index)
        .map_err(|e| format!("{e:#}"))
}

fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triage"))
        .args(["check", "--config"])
        .arg(dir.join("deploy/triage.yaml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn the_shipped_schemas_are_the_generated_ones() {
    for which in ["rules", "config"] {
        assert_eq!(
            shipped(which),
            generated(which),
            "schemas/{which}.schema.json is stale: run `triage schema {which} > schemas/{which}.schema.json`"
        );
    }
}

#[test]
fn every_shipped_yaml_file_passes_its_schema_and_names_it() {
    let mut files = 0;
    for entry in std::fs::read_dir(repo().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# yaml-language-server: $schema=../schemas/rules.schema.json"));
        validate("rules", &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
    }
    assert!(files >= 3);
    let config = std::fs::read_to_string(repo().join("deploy/triage.yaml")).unwrap();
    assert!(config.starts_with("# yaml-language-server: $schema=../schemas/config.schema.json"));
    validate("config", &config).unwrap();
}

#[test]
fn a_misspelt_key_is_refused_by_the_schema_and_by_check() {
    let procedures = std::fs::read_to_string(repo().join("rules/10-procedures.yaml")).unwrap();
    let config = std::fs::read_to_string(repo().join("deploy/triage.yaml")).unwrap();
    let typos = [
        (
            "rules",
            "rules/10-procedures.yaml",
            procedures.replacen("when: {is: asks_about_nfr}", "when: {subjekt: nfr}", 1),
            "subjekt",
            "subject",
        ),
        (
            "rules",
            "rules/10-procedures.yaml",
            procedures.replacen("then: {category: nfr,", "then: {categroy: nfr,", 1),
            "categroy",
            "category",
        ),
        (
            "config",
            "deploy/triage.yaml",
            config.replacen("  timeout_seconds: 30", "  timout_seconds: 30", 1),
            "timout_seconds",
            "timeout_seconds",
        ),
    ];
    for (which, file, text, typo, meant) in typos {
        assert!(text.contains(typo), "the typo {typo} was not made");
        let err = validate(which, &text).expect_err(typo);
        assert!(
            err.contains(typo) || err.contains("additional"),
            "{typo}: {err}"
        );

        let dir = std::env::temp_dir().join(format!("triage-schema-{typo}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "rules",
            "response-templates",
            "deploy",
            "deploy/directory",
            "schemas",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for sub in ["rules", "response-templates", "deploy/directory", "schemas"] {
            support::copy_dir(&repo().join(sub), &dir.join(sub));
        }
        std::fs::copy(
            repo().join("deploy/triage.yaml"),
            dir.join("deploy/triage.yaml"),
        )
        .unwrap();
        std::fs::write(dir.join(file), &text).unwrap();
        let (ok, said) = check(&dir);
        assert!(!ok, "triage check accepted {typo}");
        assert!(said.contains(typo), "{typo}: {said}");
        assert!(
            said.contains(&format!("did you mean `{meant}`?")),
            "{typo}: {said}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
