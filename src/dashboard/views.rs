//! The pages beside the queues: daemons (their heartbeats), cron (the
//! config's `[[cron]]` entries and their last ticks in Redis), and usage
//! per tenant and day.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::chart::{self, Bar};
use super::html::{self, esc, url};
use super::pages::all_queues;
use super::{fail, html_response, query, App};
use crate::error::Result;
use crate::usage::{Day, JOBS, RUN_SECONDS};

/// Daemons whose last beat is older than this are listed as stale.
const FRESH: Duration = Duration::from_secs(15);
/// Daemons listed at all: beats within this (entries expire by themselves).
const KEEP: Duration = Duration::from_secs(3600);
/// Usage page: days shown by default and at most.
const DEFAULT_DAYS: i64 = 14;
const MAX_DAYS: i64 = 90;
/// Tenants drawn separately in the usage chart; the rest are summed as "other".
const CHART_TENANTS: usize = 7;

pub async fn daemons(State(app): State<Arc<App>>) -> Response {
    match app.client.store().daemons(KEEP).await {
        Ok(list) => {
            let mut b = String::new();
            if list.is_empty() {
                b.push_str("<p>No daemon has sent a heartbeat in the last hour.</p>");
            } else {
                b.push_str(
                    "<table><thead><tr><th>daemon</th><th>status</th><th>last seen</th><th>host</th>\
                     <th>pid</th><th>version</th><th>started</th><th>running jobs</th><th>queues</th>\
                     </tr></thead><tbody>",
                );
                for d in &list {
                    let fresh = d.age_ms <= FRESH.as_millis() as i64;
                    let queues: Vec<String> = d
                        .queues
                        .iter()
                        .map(|q| format!("<a href=\"/queues/{}\">{}</a>", url(q), esc(q)))
                        .collect();
                    let _ = write!(
                        b,
                        "<tr><td>{}</td><td class=\"{}\">{}</td><td>{} ago</td><td>{}</td><td>{}</td>\
                         <td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                        esc(&d.id),
                        if fresh { "ok" } else { "stale" },
                        if fresh { "alive" } else { "stale" },
                        html::ago(d.age_ms),
                        esc(d.hostname.as_deref().unwrap_or("-")),
                        d.pid.map_or("-".into(), |p| p.to_string()),
                        esc(d.version.as_deref().unwrap_or("-")),
                        html::time(d.started_at_ms),
                        d.running.map_or("-".into(), |r| r.to_string()),
                        queues.join(", ")
                    );
                }
                b.push_str("</tbody></table>");
            }
            b.push_str(
                "<p class=\"hint\">From each daemon's heartbeat: a daemon is stale when its last \
                 beat is more than 15 s old; entries expire by themselves.</p>",
            );
            html_response(&html::page("Daemons", &b))
        }
        Err(e) => fail(e),
    }
}

pub async fn cron(State(app): State<Arc<App>>) -> Response {
    match render_cron(&app).await {
        Ok(b) => html_response(&html::page("Cron", &b)),
        Err(e) => fail(e),
    }
}

async fn render_cron(app: &App) -> Result<String> {
    let entries = match &app.opts.cron {
        Ok(e) => e,
        Err(why) => {
            return Ok(format!(
                "<p class=\"error\">The config file's [[cron]] entries could not be read: {}</p>",
                esc(why)
            ))
        }
    };
    if entries.is_empty() {
        return Ok(
            "<p>No [[cron]] entries in the config file the dashboard was started with \
                   (--config, or workers.toml).</p>"
                .into(),
        );
    }
    let store = app.client.store();
    let now = store.time_ms().await?;
    let mut b = String::from(
        "<table><thead><tr><th>entry</th><th>queue</th><th>schedule</th><th>time zone</th>\
         <th>last tick handled</th><th>next tick</th><th>payload</th></tr></thead><tbody>",
    );
    for c in entries {
        let key = c.key();
        let (last, next) = match store.queue(&c.queue) {
            Ok(q) => {
                let last = store.last_cron_tick(&q, &key).await?;
                (last, next_tick(c, now))
            }
            Err(_) => (None, None),
        };
        let payload: String = c.payload.to_string().chars().take(200).collect();
        let _ = write!(
            b,
            "<tr><td>{}</td><td><a href=\"/queues/{}\">{}</a></td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&key),
            url(&c.queue),
            esc(&c.queue),
            esc(&c.schedule),
            esc(c.timezone.as_deref().unwrap_or("UTC")),
            html::time(last),
            html::time(next),
            esc(&payload)
        );
    }
    b.push_str(
        "</tbody></table><p class=\"hint\">Entries come from the config file; the last tick \
         handled is read from Redis (written by the cron leader). Which daemon leads is not \
         recorded in Redis: the leader lease holds only a random token (see the daemons' logs).</p>",
    );
    Ok(b)
}

fn next_tick(c: &crate::config::CronConfig, now_ms: i64) -> Option<i64> {
    use chrono::TimeZone;
    let cron = c.parse_schedule().ok()?;
    let tz = c.parse_timezone().ok()?;
    let now = chrono::Utc
        .timestamp_opt(now_ms.div_euclid(1000), 0)
        .single()?
        .with_timezone(&tz);
    Some(
        cron.find_next_occurrence(&now, false)
            .ok()?
            .timestamp_millis(),
    )
}

pub async fn usage(State(app): State<Arc<App>>, RawQuery(raw): RawQuery) -> Response {
    let params = query::of(raw.as_deref());
    let days = query::get(&params, "days")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(DEFAULT_DAYS)
        .clamp(1, MAX_DAYS);
    match render_usage(&app, days).await {
        Ok(b) => html_response(&html::page("Usage", &b)),
        Err(e) => fail(e),
    }
}

async fn render_usage(app: &App, days: i64) -> Result<String> {
    let queues = all_queues(app).await?;
    let until = Day::today();
    let since = until.plus(1 - days);
    // (day, tenant) -> name -> total, over every queue.
    let mut cells: BTreeMap<(Day, String), BTreeMap<String, f64>> = BTreeMap::new();
    let mut tenant_jobs: BTreeMap<String, f64> = BTreeMap::new();
    for d in since.0..=until.0 {
        let day = Day(d);
        for t in crate::inspect::totals(app.client.store(), &queues, None, day, day).await? {
            *tenant_jobs.entry(t.tenant.clone()).or_default() +=
                t.usage.get(JOBS).copied().unwrap_or(0.0);
            let cell = cells.entry((day, t.tenant)).or_default();
            for (name, v) in t.usage {
                *cell.entry(name).or_default() += v;
            }
        }
    }
    let mut b = format!(
        "<p>Usage reported by handlers, plus jobs and run time, per tenant and UTC day, \
         {since} to {until}, over every queue. Show <a href=\"/usage?days=7\">7</a> · \
         <a href=\"/usage?days=30\">30</a> · <a href=\"/usage?days=90\">90</a> days.</p>"
    );
    let mut top: Vec<(&String, &f64)> = tenant_jobs.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1));
    let shown: Vec<&str> = top
        .iter()
        .take(CHART_TENANTS)
        .map(|(t, _)| t.as_str())
        .collect();
    let mut names: Vec<&str> = shown.clone();
    if top.len() > CHART_TENANTS {
        names.push("other");
    }
    let bars: Vec<Bar> = (since.0..=until.0)
        .map(|d| {
            let mut values = vec![0.0; names.len()];
            for ((day, tenant), usage) in cells.range((Day(d), String::new())..) {
                if day.0 != d {
                    break;
                }
                let jobs = usage.get(JOBS).copied().unwrap_or(0.0);
                let i = shown
                    .iter()
                    .position(|t| *t == tenant)
                    .unwrap_or(names.len().saturating_sub(1));
                if let Some(v) = values.get_mut(i) {
                    *v += jobs;
                }
            }
            let (_, m, day) = Day(d).ymd();
            Bar {
                label: format!("{m:02}-{day:02}"),
                values,
            }
        })
        .collect();
    let _ = write!(
        b,
        "<section><h2>Jobs per day by tenant</h2>{}</section>",
        chart::stacked(
            "jobs per day by tenant",
            &names,
            &chart::colours(names.len()),
            &bars
        )
    );
    if cells.is_empty() {
        b.push_str("<p>No usage recorded in these days.</p>");
        return Ok(b);
    }
    b.push_str(
        "<section><h2>Per tenant and day</h2><table><thead><tr><th>day</th><th>tenant</th>\
         <th>jobs</th><th>run seconds</th><th>reported</th></tr></thead><tbody>",
    );
    for ((day, tenant), usage) in cells.iter().rev() {
        let reported: Vec<String> = usage
            .iter()
            .filter(|(n, _)| n.as_str() != JOBS && n.as_str() != RUN_SECONDS)
            .map(|(n, v)| format!("{} {}", esc(n), html::num(*v)))
            .collect();
        let _ = write!(
            b,
            "<tr><td>{day}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(tenant),
            html::num(usage.get(JOBS).copied().unwrap_or(0.0)),
            html::num(usage.get(RUN_SECONDS).copied().unwrap_or(0.0)),
            reported.join(", ")
        );
    }
    b.push_str("</tbody></table></section>");
    Ok(b)
}
