//! Reading the layers into a [`Config`] and reporting every problem at once.
//!
//! serde stops at the first unknown key or ill-typed value. To report them
//! all in one run, the merged layers are deserialized again and again: each
//! time, the refused key is recorded and taken out of the merged value (its
//! default then applies), until the rest reads. At most [`MAX_PROBLEMS`].
//!
//! Every problem then gets its origin: the file and the line of its key
//! (found in the TOML text with `toml_edit`'s spans), the `REDQ_…`
//! variable, or the command-line flag.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::Value;
use figment::{Figment, Source};

use super::error::{ConfigError, Problem};
use super::{env_provider, Config, Overrides, OVERRIDE_SOURCE};

/// Past this many problems the rest are not looked for.
const MAX_PROBLEMS: usize = 50;

/// The layers: defaults, the file (if any), the environment, the flags.
pub(super) fn figment(file: Option<&Path>, overrides: &Overrides) -> Figment {
    let mut figment = Figment::new();
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(env_provider()).merge(overrides.clone())
}

/// What reading found: the configuration (defaults in place of refused
/// values), the problems, and the key paths taken out.
pub(super) struct Reading {
    pub config: Config,
    pub problems: Vec<Problem>,
    pub dropped: Vec<Vec<String>>,
}

/// Reads `figment` into a [`Config`], collecting every unknown key and
/// ill-typed value. Fails only when a layer cannot be read at all (TOML
/// syntax, an unreadable file).
pub(super) fn read_all(figment: &Figment) -> Result<Reading, ConfigError> {
    let root = figment.find_value("").map_err(ConfigError::from)?;
    let mut value = root.clone();
    let mut problems = Vec::new();
    let mut dropped: Vec<Vec<String>> = Vec::new();
    loop {
        let e = match value.deserialize::<Config>() {
            Ok(config) => {
                return Ok(Reading {
                    config,
                    problems,
                    dropped,
                })
            }
            Err(e) => e,
        };
        let e = e.into_iter().next().expect("an error holds at least one");
        let problem = super::error::problem_from_figment(&e);
        // The key to take out: the unknown key itself; the table missing a
        // key; else the ill-typed key.
        let remove = match &e.kind {
            figment::error::Kind::UnknownField(f, _) => {
                let mut p = e.path.clone();
                if p.last() != Some(f) {
                    p.push(f.clone());
                }
                p
            }
            _ => e.path.clone(),
        };
        let stuck = remove.is_empty() || !take_out(&mut value, &remove);
        problems.push(problem);
        if stuck || problems.len() >= MAX_PROBLEMS {
            locate(&mut problems, figment);
            return Err(ConfigError::from_problems(problems));
        }
        dropped.push(remove);
    }
}

/// Removes the value at `path` (dictionary keys and array indexes); false
/// when there is none.
fn take_out(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for seg in parents {
        at = match at {
            Value::Dict(_, d) => match d.get_mut(seg.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Value::Array(_, a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Dict(_, d) => d.remove(last.as_str()).is_some(),
        Value::Array(_, a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// The value at `path` in `root`, if any.
fn find<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut at = root;
    for seg in path {
        at = match at {
            Value::Dict(_, d) => d.get(seg.as_str())?,
            Value::Array(_, a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Gives each problem without an origin the origin of its key: the value
/// at its path, else the nearest enclosing one.
pub(super) fn locate(problems: &mut [Problem], figment: &Figment) {
    let Ok(root) = figment.find_value("") else {
        return;
    };
    for p in problems.iter_mut().filter(|p| p.origin.is_none()) {
        p.origin = origin(&p.segments, figment, &root);
    }
}

/// Where the key at `segments` was set: "in workers.toml, line 12",
/// "from environment variable REDQ_A__B", "from command-line flag".
fn origin(segments: &[String], figment: &Figment, root: &Value) -> Option<String> {
    let found = (0..=segments.len())
        .rev()
        .find_map(|n| find(root, &segments[..n]).map(|v| (n, v)))?;
    let (n, value) = found;
    if n == 0 {
        return None;
    }
    let md = figment.get_metadata(value.tag())?;
    if let Some(Source::File(file)) = &md.source {
        return Some(match line_of(file, &segments[..n]) {
            Some(line) => format!("in {}, line {line}", file.display()),
            None => format!("in {}", file.display()),
        });
    }
    if md.name.contains("environment variable") {
        let var: Vec<String> = segments[..n]
            .iter()
            .map(|k| k.to_ascii_uppercase())
            .collect();
        let var = format!("{}{}", super::ENV_PREFIX, var.join(super::ENV_SEPARATOR));
        return Some(format!("from environment variable {var}"));
    }
    (md.name == OVERRIDE_SOURCE).then(|| format!("from {OVERRIDE_SOURCE}"))
}

/// The line (1-based) of the key at `path` in the TOML file, or of the
/// nearest enclosing key written there.
fn line_of(file: &Path, path: &[String]) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    let doc = toml_edit::ImDocument::parse(text.as_str()).ok()?;
    let mut best = None;
    let mut item: &toml_edit::Item = doc.as_item();
    for seg in path {
        let (next, span) = step(item, seg)?;
        if span.is_some() {
            best = span;
        }
        item = next;
    }
    let offset = best?;
    Some(text[..offset.min(text.len())].matches('\n').count() + 1)
}

/// One step down from `item` by key or index, with where that key (or
/// element) starts in the text.
fn step<'d>(item: &'d toml_edit::Item, seg: &str) -> Option<(&'d toml_edit::Item, Option<usize>)> {
    use toml_edit::TableLike;
    if let Ok(i) = seg.parse::<usize>() {
        if let Some(aot) = item.as_array_of_tables() {
            let start = aot.get(i)?.span().map(|s| s.start);
            return item.get(i).map(|next| (next, start));
        }
        if let Some(array) = item.as_array() {
            let start = array.get(i)?.span().map(|s| s.start);
            return item.get(i).map(|next| (next, start));
        }
    }
    let table = item.as_table_like()?;
    let start = TableLike::key(table, seg)
        .and_then(|k| k.span())
        .map(|s| s.start);
    table.get(seg).map(|next| (next, start))
}
