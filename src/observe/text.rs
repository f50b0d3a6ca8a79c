//! Writers for the Prometheus text exposition format, version 0.0.4.
//!
//! Invariants: every label value goes through [`escape_label`] (`\` → `\\`,
//! `"` → `\"`, line feed → `\n`, as the format requires), and every `# HELP`
//! text through [`escape_help`], so no input can break a scrape. Writing into a
//! `String` cannot fail, so the `fmt::Result`s are discarded.
//! Called only by `metrics.rs` while rendering.

use std::fmt::{Display, Write};

/// Writes the `# HELP` and `# TYPE` lines that open a metric family.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(out, help);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// Writes one sample line: `name{l1="v1",l2="v2"} value`.
pub(crate) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends a label value with `\`, `"` and line feeds escaped.
pub(crate) fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `# HELP` text with `\` and line feeds escaped.
fn escape_help(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_escapes_label_values() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\"y\\z\nw"), ("b", "ok")], 1u64);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"ok\"} 1\n");
    }

    #[test]
    fn header_escapes_help() {
        let mut out = String::new();
        header(&mut out, "m", "gauge", "a\\b\nc");
        assert_eq!(out, "# HELP m a\\\\b\\nc\n# TYPE m gauge\n");
    }
}
