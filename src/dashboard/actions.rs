//! The actions: POST only, each checked for the form's CSRF token (and, in
//! [`super::guard::check`], the request's origin), then answered with a
//! redirect (303) to the queue's page saying what was done.
//!
//! Form fields: `csrf` (always); `all=1` to act on the whole dead set, or
//! one `id` field per selected dead job.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::html::url;
use super::{error_page, fail, guard, query, App};
use crate::error::Result;
use crate::store::{DeadRetry, WasIn};

/// Most ids one form may name.
const MAX_IDS: usize = 1000;

/// The form's fields; `None` when its CSRF token is wrong.
fn form(app: &App, body: &Bytes) -> Option<Vec<(String, String)>> {
    let fields = query::pairs(body);
    guard::form_token_ok(app, &fields).then_some(fields)
}

fn refused() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Refused: the form's CSRF token is missing or stale. Reload the page and try again.",
    )
}

fn done(queue: &str, what: Result<String>) -> Response {
    match what {
        Ok(message) => {
            Redirect::to(&format!("/queues/{}?done={}", url(queue), url(&message))).into_response()
        }
        Err(e) => fail(e),
    }
}

pub async fn pause(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    body: Bytes,
) -> Response {
    if form(&app, &body).is_none() {
        return refused();
    }
    let r = app.client.pause(&queue).await;
    done(
        &queue,
        r.map(|()| format!("Paused {queue}: no daemon claims its jobs until resumed.")),
    )
}

/// `POST /queues/<queue>/jobs/<id>/<action>`: `cancel` a live job (`redq
/// cancel`), `promote` a scheduled or retrying one (`redq promote`), or
/// `delete` a finished one (`redq delete`); back to the queue's page saying
/// what was done, or where the job was.
pub async fn job_action(
    State(app): State<Arc<App>>,
    Path((queue, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let what = match action.as_str() {
        "cancel" => ByHand::Cancel,
        "promote" => ByHand::Promote,
        "delete" => ByHand::Delete,
        _ => return error_page(StatusCode::NOT_FOUND, "no such action on a job"),
    };
    by_hand(&app, &queue, &id, &body, what).await
}

#[derive(Clone, Copy)]
enum ByHand {
    Cancel,
    Promote,
    Delete,
}

/// One job acted on by hand; the queue's page then says what was done, or
/// why nothing was (the state it found the job in).
async fn by_hand(app: &App, queue: &str, id: &str, body: &Bytes, what: ByHand) -> Response {
    if form(app, body).is_none() {
        return refused();
    }
    if !crate::keys::is_valid_name(id) {
        return error_page(StatusCode::BAD_REQUEST, "not a job id");
    }
    let ids = [id.to_owned()];
    let (r, done_word, acts_on): (_, _, fn(WasIn) -> bool) = match what {
        ByHand::Cancel => (
            app.client.cancel(queue, &ids).await,
            "Cancelled",
            WasIn::is_live,
        ),
        ByHand::Promote => (app.client.promote(queue, &ids).await, "Promoted", |w| {
            matches!(w, WasIn::Scheduled | WasIn::Retrying)
        }),
        ByHand::Delete => (app.client.delete(queue, &ids).await, "Deleted", |w| {
            matches!(w, WasIn::Dead | WasIn::Succeeded)
        }),
    };
    let verb = done_word.to_lowercase();
    done(
        queue,
        r.map(|was| match was.first() {
            Some(w) if acts_on(*w) => format!("{done_word} {id} (it was {}).", w.as_str()),
            Some(w) => format!("{id} was not {verb}: it is {}.", w.as_str()),
            None => format!("{id} was not {verb}."),
        }),
    )
}

pub async fn resume(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    body: Bytes,
) -> Response {
    if form(&app, &body).is_none() {
        return refused();
    }
    let r = app.client.resume(&queue).await;
    done(&queue, r.map(|()| format!("Resumed {queue}.")))
}

/// The selected ids, or why not (none, or too many).
fn ids(fields: &[(String, String)]) -> std::result::Result<Vec<String>, String> {
    let ids: Vec<String> = query::all(fields, "id")
        .into_iter()
        .filter(|id| crate::keys::is_valid_name(id))
        .collect();
    if ids.is_empty() {
        return Err("Select at least one dead job (or use the \"all\" button).".into());
    }
    if ids.len() > MAX_IDS {
        return Err(format!("At most {MAX_IDS} jobs at once."));
    }
    Ok(ids)
}

pub async fn retry(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    body: Bytes,
) -> Response {
    let Some(fields) = form(&app, &body) else {
        return refused();
    };
    if query::get(&fields, "all") == Some("1") {
        let r = app.client.dead_retry_all(&queue).await;
        return done(&queue, r.map(|n| format!("Requeued {n} dead jobs.")));
    }
    let ids = match ids(&fields) {
        Ok(ids) => ids,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, &why),
    };
    let r = app.client.dead_retry(&queue, &ids).await.map(|outcomes| {
        let count = |want: DeadRetry| outcomes.iter().filter(|o| **o == want).count();
        let mut m = format!("Requeued {} dead jobs.", count(DeadRetry::Requeued));
        if count(DeadRetry::UniqueKeyTaken) > 0 {
            m += &format!(
                " {} stay dead: a live job holds their unique key.",
                count(DeadRetry::UniqueKeyTaken)
            );
        }
        if count(DeadRetry::NotDead) > 0 {
            m += &format!(" {} were no longer dead.", count(DeadRetry::NotDead));
        }
        m
    });
    done(&queue, r)
}

pub async fn purge(
    State(app): State<Arc<App>>,
    Path(queue): Path<String>,
    body: Bytes,
) -> Response {
    let Some(fields) = form(&app, &body) else {
        return refused();
    };
    if query::get(&fields, "all") == Some("1") {
        let r = app
            .client
            .dead_purge_older(&queue, std::time::Duration::ZERO)
            .await;
        return done(&queue, r.map(|n| format!("Deleted {n} dead jobs.")));
    }
    let ids = match ids(&fields) {
        Ok(ids) => ids,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, &why),
    };
    let r = app.client.dead_purge(&queue, &ids).await;
    done(&queue, r.map(|n| format!("Deleted {n} dead jobs.")))
}
