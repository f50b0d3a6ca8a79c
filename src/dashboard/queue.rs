//! A queue's page (`/queues/<queue>`): depths, pause/resume, its rates
//! chart, limits, the dead set with paging and bulk retry/purge, a job
//! look-up, and the jobs of each state listed page by page, with a cancel
//! button for live ones.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::html::{self, button_form, esc, url};
use super::pages::{depth_cells, limits, CHART_MINUTES, DEPTH_HEAD};
use super::{chart, error_page, fail, html_response, query, App, PAGE_SIZE};
use crate::error::Result;

/// Highest dead-list page offered (keeps `ZRANGE` offsets bounded).
const MAX_PAGE: usize = 10_000;

pub async fn page(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query::of(raw.as_deref());
    let page = query::get(&params, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_PAGE);
    match render(&app, &queue, page, query::get(&params, "done")).await {
        Ok(body) => html_response(&html::page(&format!("Queue {queue}"), &body)),
        Err(e) => fail(e),
    }
}

async fn render(app: &App, queue: &str, page: usize, done: Option<&str>) -> Result<String> {
    let store = app.client.store();
    let q = store.queue(queue)?;
    let stats = app.client.stats(&[queue.to_owned()]).await?;
    let meta = store.queue_meta(std::slice::from_ref(&q)).await?;
    let history = store
        .rate_history(std::slice::from_ref(&q), CHART_MINUTES)
        .await?;
    let dead = app
        .client
        .dead_list(queue, page * PAGE_SIZE, PAGE_SIZE + 1)
        .await?;
    let (qe, qu) = (esc(queue), url(queue));
    let mut b = html::notice(done);
    let s = stats.first().cloned().unwrap_or_else(|| empty_stats(queue));
    let _ = write!(
        b,
        "<section><table><thead><tr>{DEPTH_HEAD}</tr></thead><tbody><tr>{}</tr></tbody></table>",
        depth_cells(&s)
    );
    let toggle = if s.paused {
        button_form(&format!("/queues/{qu}/resume"), &app.csrf, "Resume", &[])
    } else {
        button_form(&format!("/queues/{qu}/pause"), &app.csrf, "Pause", &[])
    };
    let _ = write!(
        b,
        "<p>{} {toggle}</p><p>Limits: {}</p></section>",
        if s.paused {
            "<strong class=\"paused\">Paused</strong>: no daemon claims its jobs."
        } else {
            "Running."
        },
        esc(&limits(meta.first().unwrap_or(&Default::default())))
    );
    b.push_str(&dead_section(app, queue, page, &dead, s.dead));
    let _ = write!(
        b,
        "<section><h2>Find a job</h2><form method=\"get\" action=\"/lookup\">\
         <input type=\"hidden\" name=\"queue\" value=\"{qe}\">\
         <input name=\"id\" placeholder=\"job id\" required maxlength=\"128\"> \
         <button type=\"submit\">Show</button></form></section>"
    );
    b.push_str(&by_state_section(queue, &s));
    let _ = write!(
        b,
        "<section><h2>Jobs finished per minute, last hour</h2><div data-chart=\"/charts/rates.svg?queue={qu}\">{}</div></section>",
        chart::rates(&format!("jobs per minute, {queue}"), &history)
    );
    Ok(b)
}

fn empty_stats(queue: &str) -> crate::inspect::QueueStats {
    crate::inspect::QueueStats {
        queue: queue.to_owned(),
        pending: 0,
        scheduled: 0,
        active: 0,
        dead: 0,
        succeeded: 0,
        succeeded_total: 0,
        failed_total: 0,
        cancelled_total: 0,
        inbox: 0,
        rejected: 0,
        paused: false,
        last_minute: None,
    }
}

/// Jobs by state: the counts, each linking to [`jobs_by_state`], the
/// listing (`redq jobs --state`, [`crate::inspect::list_jobs`]).
fn by_state_section(queue: &str, s: &crate::inspect::QueueStats) -> String {
    let qu = url(queue);
    let mut b = String::from(
        "<section id=\"jobs-by-state\"><h2>Jobs by state</h2><table class=\"narrow\"><thead><tr>\
         <th>state</th><th>jobs</th></tr></thead><tbody>",
    );
    for (state, n) in [
        ("pending", s.pending),
        ("scheduled", s.scheduled),
        ("active", s.active),
        ("succeeded", s.succeeded),
        ("dead", s.dead),
    ] {
        let _ = write!(
            b,
            "<tr><td><a href=\"/queues/{qu}/jobs?state={state}\">{state}</a></td><td class=\"n\">{n}</td></tr>"
        );
    }
    b.push_str("</tbody></table></section>");
    b
}

fn dead_section(
    app: &App,
    queue: &str,
    page: usize,
    dead: &[crate::inspect::DeadJob],
    total: u64,
) -> String {
    let qu = url(queue);
    let mut b = format!(
        "<section id=\"dead\"><h2>Dead jobs ({total})</h2><p>{} {}</p>",
        button_form(
            &format!("/queues/{qu}/dead/retry"),
            &app.csrf,
            "Retry all dead",
            &[("all", "1")]
        ),
        button_form(
            &format!("/queues/{qu}/dead/purge"),
            &app.csrf,
            "Purge all dead",
            &[("all", "1")]
        ),
    );
    if dead.is_empty() {
        b.push_str(if page == 0 {
            "<p>The dead set is empty.</p>"
        } else {
            "<p>No dead jobs on this page.</p>"
        });
    } else {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/queues/{qu}/dead/retry\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <table><thead><tr><th></th><th>id</th><th>died</th><th>attempts</th><th>last error</th></tr></thead><tbody>",
            esc(&app.csrf)
        );
        for d in dead.iter().take(PAGE_SIZE) {
            let error = d.last_error.as_deref().unwrap_or("");
            let first: String = error
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            let _ = write!(
                b,
                "<tr><td><input type=\"checkbox\" name=\"id\" value=\"{ide}\" aria-label=\"select {ide}\"></td>\
                 <td><a href=\"/queues/{qu}/jobs/{}\">{ide}</a></td><td>{}</td><td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
                url(&d.id),
                html::time(Some(d.died_at_ms)),
                d.attempts,
                esc(&first),
                ide = esc(&d.id),
            );
        }
        let _ = write!(
            b,
            "</tbody></table><p><button type=\"submit\">Retry selected</button> \
             <button type=\"submit\" formaction=\"/queues/{qu}/dead/purge\">Purge selected</button></p></form>"
        );
    }
    let mut nav = Vec::new();
    if page > 0 {
        nav.push(format!(
            "<a href=\"/queues/{qu}?page={}#dead\">newer</a>",
            page - 1
        ));
    }
    if dead.len() > PAGE_SIZE && page < MAX_PAGE {
        nav.push(format!(
            "<a href=\"/queues/{qu}?page={}#dead\">older</a>",
            page + 1
        ));
    }
    if !nav.is_empty() {
        let _ = write!(b, "<p>Page {} · {}</p>", page + 1, nav.join(" · "));
    }
    b.push_str("</section>");
    b
}

/// `/queues/<queue>/jobs?state=`: the route job listing by state plugs into.
/// Until the store can list them, only `dead` lists jobs (the dead set);
/// other states show their count.
pub async fn jobs_by_state(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query::of(raw.as_deref());
    let state_name = query::get(&params, "state").unwrap_or("pending");
    let Ok(q) = app.client.store().queue(&queue) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!("{queue:?} is not a queue name"),
        );
    };
    let Ok(state) = state_name.parse::<crate::inspect::ListState>() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "state must be one of pending, scheduled, active, succeeded, dead",
        );
    };
    // Filters and cursor as the CLI takes them; empty fields mean none.
    let field = |name: &str| {
        query::get(&params, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let listing = crate::inspect::ListQuery {
        limit: PAGE_SIZE,
        after: field("after"),
        order: crate::inspect::Order::Natural,
        tenant: field("tenant"),
        group: field("group"),
    };
    let page = match app.client.list_jobs(q.queue(), state, &listing).await {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let qu = url(q.queue());
    let mut b = format!(
        "<p><a href=\"/queues/{qu}\">&larr; {}</a></p>\
         <form method=\"get\" action=\"/queues/{qu}/jobs\" class=\"inline\">\
         <input type=\"hidden\" name=\"state\" value=\"{}\">\
         tenant <input name=\"tenant\" value=\"{}\"> group <input name=\"group\" value=\"{}\"> \
         <button type=\"submit\">Filter</button></form>",
        esc(q.queue()),
        esc(state_name),
        esc(listing.tenant.as_deref().unwrap_or("")),
        esc(listing.group.as_deref().unwrap_or("")),
    );
    b.push_str(
        "<table id=\"jobs-list\"><thead><tr><th>id</th><th>state</th><th>priority</th>\
         <th>attempts</th><th>when</th><th>tenant</th><th>group</th><th>last error</th><th></th>\
         </tr></thead><tbody>",
    );
    for j in &page.jobs {
        let when = j.when_ms();
        let action = html::job_actions(j, &app.csrf);
        let _ = write!(
            b,
            "<tr><td><a href=\"/queues/{qu}/jobs/{}\">{}</a></td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
            url(&j.id),
            esc(&j.id),
            esc(&format!("{:?}", j.state).to_lowercase()),
            j.priority,
            j.attempts,
            html::time(Some(when)),
            esc(j.tenant.as_deref().unwrap_or("")),
            esc(j.group.as_deref().unwrap_or("")),
            esc(j.last_error.as_deref().unwrap_or("").lines().next().unwrap_or("")),
        );
    }
    b.push_str("</tbody></table>");
    if page.jobs.is_empty() {
        let _ = write!(b, "<p>No {} jobs on this page.</p>", esc(state_name));
    }
    if let Some(next) = &page.next {
        let mut link = format!(
            "/queues/{qu}/jobs?state={}&after={}",
            url(state_name),
            url(next)
        );
        for (name, v) in [("tenant", &listing.tenant), ("group", &listing.group)] {
            if let Some(v) = v {
                let _ = write!(link, "&{name}={}", url(v));
            }
        }
        let _ = write!(
            b,
            "<p><a id=\"next-page\" href=\"{}\">next page &rarr;</a></p>",
            esc(&link)
        );
    }
    html_response(&html::page(&format!("{queue}: {state_name} jobs"), &b))
}

/// `/lookup?queue=&id=`: the find-a-job form, redirected to the job's page.
pub async fn lookup(RawQuery(raw): RawQuery) -> Response {
    let params = query::of(raw.as_deref());
    match (query::get(&params, "queue"), query::get(&params, "id")) {
        (Some(q), Some(id)) if !q.is_empty() && !id.trim().is_empty() => {
            Redirect::to(&format!("/queues/{}/jobs/{}", url(q), url(id.trim()))).into_response()
        }
        _ => error_page(StatusCode::BAD_REQUEST, "give a queue and a job id"),
    }
}
