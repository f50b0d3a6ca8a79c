//! HTML building blocks: escaping, the page layout, and formatting of
//! times and numbers. Every value that came from Redis (names, ids,
//! payloads, errors, tenants) goes through [`esc`] before it reaches a page.

use std::fmt::Write;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes one URL path segment or query value (everything but
/// the unreserved characters).
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page: the navigation, `title` as heading, then `body` (HTML).
pub fn page(title: &str, body: &str) -> String {
    let nav = [
        ("/", "Overview"),
        ("/daemons", "Daemons"),
        ("/cron", "Cron"),
        ("/usage", "Usage"),
    ]
    .iter()
    .map(|(href, label)| format!("<a href=\"{href}\">{label}</a>"))
    .collect::<Vec<_>>()
    .join(" ");
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · redq</title><link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><header><strong>redq</strong> <nav>{nav}</nav></header>\
         <main><h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = esc(title)
    )
}

/// A notice at the top of a page (after an action), escaped.
pub fn notice(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => format!("<p class=\"notice\" role=\"status\">{}</p>", esc(t)),
        _ => String::new(),
    }
}

/// The buttons of what can be done to job `j` by hand: run it now
/// (scheduled, retrying), cancel it (live), delete it (dead, succeeded).
pub fn job_actions(j: &crate::inspect::JobInfo, csrf: &str) -> String {
    use crate::inspect::JobState;
    let at = |what: &str| format!("/queues/{}/jobs/{}/{what}", url(&j.queue), url(&j.id));
    let mut out = String::new();
    if matches!(j.state, JobState::Scheduled | JobState::Retrying) {
        out += &button_form(&at("promote"), csrf, "Run now", &[]);
    }
    if matches!(j.state, JobState::Succeeded | JobState::Dead) {
        out += &button_form(&at("delete"), csrf, "Delete", &[]);
    } else {
        out += &button_form(&at("cancel"), csrf, "Cancel", &[]);
    }
    out
}

/// A POST form with the CSRF token and one button; `fields` are extra
/// hidden fields (name, value).
pub fn button_form(action: &str, csrf: &str, label: &str, fields: &[(&str, &str)]) -> String {
    let mut hidden = String::new();
    for (name, value) in fields {
        let _ = write!(
            hidden,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{hidden}\
         <button type=\"submit\">{}</button></form>",
        esc(action),
        esc(csrf),
        esc(label)
    )
}

/// Unix ms as RFC 3339 (UTC, seconds), `-` for none.
pub fn time(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        None => "-".into(),
    }
}

/// A duration in ms as `1.5 s`, `3 m 20 s`, `2 h 5 m`.
pub fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms.max(0) as f64 / 1000.0),
        60..=3599 => format!("{} m {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} m", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A run-time percentile bucket bound as `≤N ms`, `-` when nothing ran.
pub fn percentile(ms: Option<f64>) -> String {
    match ms {
        Some(v) if v.is_finite() => format!("≤{v} ms"),
        Some(_) => "&gt;600 s".into(),
        None => "-".into(),
    }
}

/// A number without a useless fraction.
pub fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn encodes_url_segments() {
        assert_eq!(url("a b/c:d"), "a%20b%2Fc%3Ad");
    }
}
