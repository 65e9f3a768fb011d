//! The desk's common response templates (`response-templates/*.txt`), rendered with
//! minijinja in strict mode: a variable that does not exist is an error, not an empty
//! string in a partner's inbox.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

use crate::core::problems::{Problem, Problems};

pub struct Templates {
    env: Environment<'static>,
    pub names: BTreeSet<String>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.names)
            .finish()
    }
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Templates, Problems> {
        let mut problems = Problems::default();
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates are plain text mail: no HTML escaping, keep the final newline.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        let mut names = BTreeSet::new();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Problems::one(Problem::file(
                dir,
                format!("cannot read templates folder: {e}"),
            ))
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(Problem::file(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            if let Err(e) = env.add_template_owned(name.clone(), text) {
                problems.push(template_problem(&path, &e));
                continue;
            }
            names.insert(name);
        }
        problems.into_result(Templates {
            env,
            names,
            dir: dir.to_path_buf(),
        })
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.txt"))
    }

    pub fn render(&self, name: &str, context: &serde_json::Value) -> Result<String, Problem> {
        let tmpl = self.env.get_template(name).map_err(|_| {
            Problem::file(
                &self.path_of(name),
                format!("template {name:?} does not exist"),
            )
        })?;
        let body = tmpl
            .render(context)
            .map_err(|e| template_problem(&self.path_of(name), &e))?;
        Ok(tidy(&body))
    }
}

/// Templates open with a `{# … #}` block documenting their variables; that leaves
/// leading blank lines we do not want in a reply.
fn tidy(body: &str) -> String {
    let mut s = body.trim_start_matches(['\n', '\r']).to_string();
    while s.ends_with("\n\n") {
        s.pop();
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn template_problem(path: &Path, e: &minijinja::Error) -> Problem {
    let mut message = match e.kind() {
        minijinja::ErrorKind::UndefinedError => "undefined variable".to_string(),
        _ => e.kind().to_string(),
    };
    if let Some(detail) = e.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let source = std::fs::read_to_string(path).unwrap_or_default();
    if let Some(snippet) = e.range().and_then(|r| source.get(r)) {
        message.push_str(&format!(" in `{}`", snippet.trim()));
    }
    match e.line() {
        Some(line) => {
            // minijinja gives a byte range in the source; turn it into a column.
            let column = e
                .range()
                .map(|r| crate::core::problems::line_column(&source, r.start).1)
                .unwrap_or(1);
            Problem::at(path, line, column, message)
        }
        None => Problem::file(path, message),
    }
}
