//! The documentation says what the code does. Needs no Redis.
//!
//! - The table of a queue's key parts in `docs/internals.md` lists exactly
//!   the parts [`redq::keys::PARTS`] builds, in its order, each with the type
//!   the comment beside it in `src/keys.rs` gives.
//! - Every relative link between the Markdown files (README.md, docs/,
//!   benches/) leads to a file that exists, and to a heading in it when the
//!   link names one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redq::keys::PARTS;

const INTERNALS: &str = include_str!("../docs/internals.md");
const KEYS_RS: &str = include_str!("../src/keys.rs");

/// The header row of the parts table in docs/internals.md.
const PARTS_HEADER: &str = "| part | type | holds |";

/// One row of the parts table: the part names of its first cell (`errors`
/// / `results` names two) and its type cell.
struct Row {
    names: Vec<String>,
    kind: String,
}

/// The rows of the table under [`PARTS_HEADER`].
fn parts_table(doc: &str) -> Vec<Row> {
    let mut lines = doc.lines().map(str::trim);
    let found = lines.by_ref().find(|l| *l == PARTS_HEADER);
    assert!(
        found.is_some(),
        "docs/internals.md has no table headed {PARTS_HEADER:?}"
    );
    let separator = lines.next().unwrap_or_default();
    assert!(
        separator.starts_with("|---"),
        "docs/internals.md: the parts table's header is not followed by |---|: {separator:?}"
    );
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert!(cells.len() >= 4, "a row with too few cells: {line:?}");
            Row {
                names: code_spans(cells[1]),
                kind: cells[2].to_owned(),
            }
        })
        .collect()
}

/// The texts between backticks.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Each entry of `PARTS` in src/keys.rs with the type its comment names
/// (`"jobs", // HASH ...`), in order.
fn part_types_in_source() -> Vec<(String, String)> {
    let start = KEYS_RS
        .find("pub const PARTS")
        .expect("src/keys.rs defines PARTS");
    let body = &KEYS_RS[start..];
    let end = body.find("];").expect("PARTS ends with ];");
    body[..end]
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (code, comment) = line.split_once("//")?;
            let name = code.trim().strip_prefix('"')?.strip_suffix("\",")?;
            let kind = match comment.split_whitespace().next()? {
                "HASH" => "hash",
                "ZSET" => "sorted set",
                "LIST" => "list",
                "SET" => "set",
                "STREAM" => "stream",
                other => other,
            };
            Some((name.to_owned(), kind.to_owned()))
        })
        .collect()
}

#[test]
fn the_key_table_lists_every_part_the_key_builder_builds() {
    let rows = parts_table(INTERNALS);
    let documented: Vec<&str> = rows
        .iter()
        .flat_map(|r| r.names.iter().map(String::as_str))
        .collect();
    let expected: Vec<&str> = PARTS.to_vec();

    let doc_set: BTreeSet<&str> = documented.iter().copied().collect();
    let code_set: BTreeSet<&str> = expected.iter().copied().collect();
    let missing: Vec<&str> = code_set.difference(&doc_set).copied().collect();
    let extra: Vec<&str> = doc_set.difference(&code_set).copied().collect();
    let twice: BTreeSet<&str> = documented
        .iter()
        .enumerate()
        .filter(|(i, n)| documented[..*i].contains(n))
        .map(|(_, n)| *n)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && twice.is_empty(),
        "docs/internals.md's key table and redq::keys::PARTS disagree:\n  \
         missing from the table (in PARTS): {missing:?}\n  \
         in the table but not in PARTS: {extra:?}\n  \
         listed twice: {twice:?}"
    );
    assert_eq!(
        documented, expected,
        "docs/internals.md's key table lists the parts in another order than redq::keys::PARTS"
    );
}

#[test]
fn the_key_table_gives_each_part_the_type_of_the_key_builder() {
    let source = part_types_in_source();
    let names: Vec<&str> = source.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        PARTS.to_vec(),
        "every entry of PARTS in src/keys.rs should read `\"<part>\", // <TYPE> ...`"
    );
    let mut wrong = Vec::new();
    for row in parts_table(INTERNALS) {
        for name in &row.names {
            if let Some((_, kind)) = source.iter().find(|(n, _)| n == name) {
                if *kind != row.kind {
                    wrong.push(format!(
                        "`{name}`: the table says {:?}, src/keys.rs says {kind:?}",
                        row.kind
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/internals.md's key table has wrong types:\n  {}",
        wrong.join("\n  ")
    );
}

/// The Markdown files that link to one another.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("benches/README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ is readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The targets of the inline links `[text](target)` of `text`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop inline code, where `](` is not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's anchors for the headings of `text` (lower case, punctuation
/// dropped, spaces to hyphens, `-1`, `-2`… for repeats).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let title = heading.trim_start_matches('#').trim();
        let base: String = title
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

#[test]
fn links_between_the_markdown_files_lead_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for file in markdown_files(root) {
        let text = std::fs::read_to_string(&file).expect("readable");
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(root).join(path)
            };
            if !dest.exists() {
                broken.push(format!("{shown}: ({target}): no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(anchor) {
                    broken.push(format!("{shown}: ({target}): no such heading"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn anchors_follow_githubs_rules() {
    let a = anchors("# How redq works\n## `redq health`: is it up?\n## Usage\n## Usage\n");
    let want: BTreeSet<String> = ["how-redq-works", "redq-health-is-it-up", "usage", "usage-1"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(a, want);
    assert_eq!(
        link_targets("see [a](b.md#c) and `[x](y)`\n```\n[p](q)\n```\n"),
        vec!["b.md#c".to_owned()]
    );
}
