//! A job's page (`/queues/<queue>/jobs/<id>`): state, attempts, the
//! timeline, the payload pretty-printed (capped at [`PAYLOAD_CAP`], hidden
//! with `--redact-payloads`), the latest run's resource use, the failed
//! attempts before it (the job's history: at most the last 5, each with its
//! error and resource use), the last error and the result.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::html::{self, esc, url};
use super::{error_page, fail, html_response, App, PAYLOAD_CAP};
use crate::inspect::JobInfo;

pub async fn page(
    State(app): State<Arc<App>>,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    match app.client.job(&queue, &id).await {
        Ok(Some(job)) => {
            let body = render(&job, app.opts.redact_payloads, &app.csrf);
            html_response(&html::page(&format!("Job {id}"), &body))
        }
        Ok(None) => error_page(
            StatusCode::NOT_FOUND,
            &format!(
                "Job {id} is not in queue {queue}: never enqueued there, or finished and removed by retention."
            ),
        ),
        Err(e) => fail(e),
    }
}

/// Text capped at [`PAYLOAD_CAP`] bytes (on a character boundary), escaped,
/// with a note of what was cut.
fn capped(text: &str) -> String {
    if text.len() <= PAYLOAD_CAP {
        return esc(text);
    }
    let mut end = PAYLOAD_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n… ({} more bytes not shown)",
        esc(&text[..end]),
        text.len() - end
    )
}

fn render(j: &JobInfo, redact: bool, csrf: &str) -> String {
    let state = serde_json::to_value(j.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut b = format!(
        "<p><a href=\"/queues/{}\">← queue {}</a></p><section><table class=\"kv\"><tbody>",
        url(&j.queue),
        esc(&j.queue)
    );
    let max = j
        .max_attempts
        .map_or("queue default".to_owned(), |m| m.to_string());
    let rows: Vec<(&str, String)> = vec![
        (
            "state",
            format!("<strong class=\"state-{0}\">{0}</strong>", esc(&state)),
        ),
        ("priority", j.priority.to_string()),
        ("attempts", format!("{} (max {})", j.attempts, esc(&max))),
        ("tenant", esc(j.tenant.as_deref().unwrap_or("-"))),
        ("group", esc(j.group.as_deref().unwrap_or("-"))),
        ("unique key", esc(j.unique_key.as_deref().unwrap_or("-"))),
        (
            "timeout",
            j.timeout_ms
                .map_or("queue default".into(), |t| html::ago(t as i64)),
        ),
    ];
    for (k, v) in rows {
        let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let _ = write!(
        b,
        "</tbody></table><p class=\"actions\">{}</p></section>\
         <section><h2>Timeline</h2><table class=\"kv\"><tbody>",
        html::job_actions(j, csrf)
    );
    for (k, t) in [
        ("enqueued", Some(j.enqueued_at_ms)),
        ("due (scheduled / retry)", j.run_at_ms),
        ("latest attempt started", j.started_at_ms),
        ("lease until", j.lease_deadline_ms),
        ("finished or died", j.finished_at_ms),
    ] {
        if t.is_some() {
            let _ = write!(b, "<tr><th>{k}</th><td>{}</td></tr>", html::time(t));
        }
    }
    b.push_str("</tbody></table></section>");
    if let Some(r) = &j.resources {
        let ended = match (r.exit_code, r.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "not started".into(),
        };
        let _ = write!(
            b,
            "<section><h2>Latest run</h2><table class=\"kv\"><tbody>\
             <tr><th>ended</th><td>{ended}</td></tr><tr><th>wall</th><td>{:.3} s</td></tr>\
             <tr><th>cpu</th><td>{:.3} s user + {:.3} s sys</td></tr>\
             <tr><th>max rss</th><td>{} KiB</td></tr><tr><th>output</th><td>{} B out, {} B err</td></tr>\
             </tbody></table></section>",
            r.wall_seconds,
            r.user_cpu_seconds,
            r.sys_cpu_seconds,
            r.max_rss_kib,
            r.stdout_bytes,
            r.stderr_bytes
        );
    }
    if !j.history.is_empty() {
        b.push_str(
            "<section><h2>Failed attempts</h2><table id=\"attempts\"><thead><tr><th>attempt</th>\
             <th>started</th><th>ended</th><th>used</th><th>error</th></tr></thead><tbody>",
        );
        for a in &j.history {
            let used = a.resources.as_ref().map_or("-".to_owned(), |r| {
                format!(
                    "wall {:.3} s, cpu {:.3} s, rss {} KiB",
                    r.wall_seconds,
                    r.user_cpu_seconds + r.sys_cpu_seconds,
                    r.max_rss_kib
                )
            });
            let _ = write!(
                b,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{used}</td>\
                 <td><pre class=\"err\">{}</pre></td></tr>",
                a.attempt,
                html::time(Some(a.started_ms)),
                html::time(Some(a.ended_ms)),
                capped(&a.error)
            );
        }
        b.push_str("</tbody></table></section>");
    }
    if let Some(e) = &j.last_error {
        let _ = write!(
            b,
            "<section><h2>Last error</h2><pre class=\"err\">{}</pre></section>",
            capped(e)
        );
    }
    b.push_str("<section><h2>Payload</h2>");
    if redact {
        b.push_str("<p class=\"hint\">Hidden (--redact-payloads).</p>");
    } else {
        let pretty = serde_json::from_str::<serde_json::Value>(j.payload.get())
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| j.payload.get().to_owned());
        let _ = write!(b, "<pre id=\"payload\">{}</pre>", capped(&pretty));
    }
    b.push_str("</section>");
    if let Some(r) = &j.result {
        b.push_str("<section><h2>Result</h2>");
        if redact {
            b.push_str("<p class=\"hint\">Hidden (--redact-payloads).</p>");
        } else {
            let _ = write!(b, "<pre id=\"result\">{}</pre>", capped(r));
        }
        b.push_str("</section>");
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_on_a_character_boundary() {
        let text = "é".repeat(PAYLOAD_CAP);
        let shown = capped(&text);
        assert!(shown.len() < text.len());
        assert!(shown.contains("more bytes not shown"));
        assert_eq!(capped("<b>"), "&lt;b&gt;");
    }
}
