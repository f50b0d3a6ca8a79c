//! The overview (`/`), the live summary the script polls (`/api/summary`)
//! and the rates chart (`/charts/rates.svg`).
//!
//! Redis cost of one `/api/summary` (the live refresh, every 5 s per open
//! page): `SMEMBERS` of the registry, then per queue `ZRANGE pending`, one
//! `LLEN` per priority level with jobs, 2 `ZCARD` (parked), `ZCARD`
//! scheduled, `ZCOUNT` active, `ZCARD` dead, `ZCARD` done, `LLEN` inbox and
//! rejected, `HEXISTS` paused, and 2 `HMGET` of rate buckets, plus one
//! `TIME`: O(queues), in 4 round trips. Job lists are never read by it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::html::{self, esc, url};
use super::{chart, fail, html_response, query, App};
use crate::error::Result;
use crate::inspect::QueueStats;
use crate::keys::QueueKeys;

/// Minutes the rates chart covers.
pub const CHART_MINUTES: i64 = 60;

/// Registered and configured queues, sorted, without duplicates.
pub(crate) async fn all_queues(app: &App) -> Result<Vec<String>> {
    let mut all = app.client.queues().await?;
    all.extend(app.opts.configured_queues.iter().cloned());
    all.retain(|q| crate::keys::is_valid_name(q));
    all.sort();
    all.dedup();
    Ok(all)
}

pub(crate) fn keys(app: &App, queues: &[String]) -> Result<Vec<QueueKeys>> {
    queues.iter().map(|q| app.client.store().queue(q)).collect()
}

/// A queue's limits from its `meta` hash, in words.
pub(crate) fn limits(meta: &BTreeMap<String, String>) -> String {
    let per = |ms: Option<&String>| {
        let ms: i64 = ms.and_then(|m| m.parse().ok()).unwrap_or(0);
        html::ago(ms)
    };
    let mut out = Vec::new();
    if let Some(jobs) = meta.get("rate_jobs") {
        out.push(format!(
            "{} jobs per {}",
            jobs,
            per(meta.get("rate_per_ms"))
        ));
    }
    if let Some(n) = meta.get("group_limit") {
        out.push(format!("{n} active per group"));
    }
    if let Some(t) = meta.get("tenant_rate") {
        let mut parts = t.split(',');
        let (jobs, ms) = (parts.next().unwrap_or("0"), parts.next().map(str::to_owned));
        if jobs != "0" {
            out.push(format!("{jobs} jobs per {} per tenant", per(ms.as_ref())));
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join("; ")
    }
}

/// The cells of a queue's depths and rates, each marked for live refresh.
pub(crate) fn depth_cells(s: &QueueStats) -> String {
    let q = esc(&s.queue);
    let mut out = String::new();
    let counts = [
        ("pending", s.pending),
        ("scheduled", s.scheduled),
        ("active", s.active),
        ("dead", s.dead),
        ("succeeded", s.succeeded),
        ("inbox", s.inbox),
        ("rejected", s.rejected),
    ];
    for (field, n) in counts {
        let _ = write!(out, "<td class=\"n\" data-live=\"{q}.{field}\">{n}</td>");
    }
    let r = s.last_minute.unwrap_or_default();
    let _ = write!(
        out,
        "<td class=\"n\" data-live=\"{q}.ok\">{:.2}</td><td class=\"n\" data-live=\"{q}.failed\">{:.2}</td>\
         <td class=\"n\" data-live=\"{q}.wp50\">{}</td><td class=\"n\" data-live=\"{q}.wp99\">{}</td>\
         <td class=\"n\" data-live=\"{q}.p50\">{}</td><td class=\"n\" data-live=\"{q}.p99\">{}</td>\
         <td data-live=\"{q}.paused\">{}</td>",
        r.succeeded_per_sec,
        r.failed_per_sec,
        html::percentile(r.wait_p50_ms),
        html::percentile(r.wait_p99_ms),
        html::percentile(r.run_p50_ms),
        html::percentile(r.run_p99_ms),
        if s.paused { "paused" } else { "running" }
    );
    out
}

pub(crate) const DEPTH_HEAD: &str =
    "<th>pending</th><th>scheduled</th><th>active</th><th>dead</th>\
     <th>succeeded</th><th>inbox</th><th>rejected</th><th>ok/s</th><th>failed/s</th>\
     <th>wait p50</th><th>wait p99</th><th>run p50</th><th>run p99</th><th>state</th>";

pub async fn overview(State(app): State<Arc<App>>) -> Response {
    match render_overview(&app).await {
        Ok(body) => html_response(&html::page("Overview", &body)),
        Err(e) => fail(e),
    }
}

async fn render_overview(app: &App) -> Result<String> {
    let queues = all_queues(app).await?;
    let keys = keys(app, &queues)?;
    let stats = app.client.stats(&queues).await?;
    let metas = app.client.store().queue_meta(&keys).await?;
    let history = app
        .client
        .store()
        .rate_history(&keys, CHART_MINUTES)
        .await?;
    let mut body = String::new();
    body.push_str("<section><h2>Jobs finished per minute, last hour (all queues)</h2>");
    let _ = write!(
        body,
        "<div data-chart=\"/charts/rates.svg\">{}</div></section>",
        chart::rates("jobs per minute, all queues", &history)
    );
    if queues.is_empty() {
        body.push_str(
            "<p>No queues yet: none registered in Redis and none in the config file.</p>",
        );
        return Ok(body);
    }
    let _ = write!(
        body,
        "<section><h2>Queues</h2><p class=\"hint\">Depths now; rates, queue-wait \
         (enqueue or due time to start) and run-time percentiles over the last minute \
         (histogram bucket bounds). Numbers refresh every 5 s \
         with JavaScript.</p><table><thead><tr><th>queue</th>{DEPTH_HEAD}<th>limits</th></tr></thead><tbody>"
    );
    for (s, meta) in stats.iter().zip(&metas) {
        let _ = write!(
            body,
            "<tr><td><a href=\"/queues/{}\">{}</a></td>{}<td>{}</td></tr>",
            url(&s.queue),
            esc(&s.queue),
            depth_cells(s),
            esc(&limits(meta))
        );
    }
    body.push_str("</tbody></table></section>");
    Ok(body)
}

/// What `/api/summary` answers: each queue's depths and last-minute rates.
#[derive(serde::Serialize)]
struct Summary {
    queues: Vec<QueueStats>,
}

pub async fn summary(State(app): State<Arc<App>>) -> Response {
    let read = async {
        let queues = all_queues(&app).await?;
        app.client.stats(&queues).await
    };
    match read.await {
        Ok(queues) => axum::Json(Summary { queues }).into_response(),
        Err(e) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// The rates chart of `?queue=` (all queues without it).
pub async fn rates_svg(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let params = query::of(raw.as_deref());
    let read = async {
        let queues = match query::get(&params, "queue") {
            Some(q) => vec![q.to_owned()],
            None => all_queues(&app).await?,
        };
        let keys = keys(&app, &queues)?;
        app.client.store().rate_history(&keys, CHART_MINUTES).await
    };
    match read.await {
        Ok(h) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            chart::rates("jobs per minute", &h),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}
