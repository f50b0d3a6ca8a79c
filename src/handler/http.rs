//! HTTP handler: POSTs each job as JSON to a URL.
//!
//! Contract with the endpoint (docs/operating.md, "Handlers", repeats it for handler authors):
//! - Request: `POST <url>` with `Content-Type: application/json`,
//!   `Idempotency-Key: <job id>`, the configured headers, and the body
//!   `{"id", "queue", "attempt", "tenant", "payload"}` (`tenant` is null when none;
//!   `payload` is embedded exactly as the producer sent it).
//! - 2xx: success; the body (capped at `max_response_bytes`, lossy UTF-8) is the result.
//!   If the body is a JSON object with `"usage": {name: number, …}`, those numbers are
//!   the job's usage.
//! - 429 and 503: retry no earlier than `Retry-After` (seconds or an HTTP-date, capped at
//!   one day); without one, the queue's normal backoff.
//! - Any other 4xx: fail for good (dead set).
//! - 3xx (redirects are not followed), 5xx, network errors and time-outs: the attempt
//!   fails and is retried while attempts remain.
//! - The job's time-out bounds the whole exchange, body included; `ctx.cancel` stops it.
//!
//! One `reqwest::Client` (rustls, certificates verified) per handler, shared by all jobs.
//! Configured header values are marked sensitive and never shown in `Debug` or errors.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Handler, JobContext, Outcome, RunReport, Usage};

/// Default cap on the response body kept as the result.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured; longer ones are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Headers redq sets itself, which configuration may not override.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "transfer-encoding",
    "idempotency-key",
    "host",
];
/// How much of an error response's body goes into the error text.
const ERROR_BODY_CHARS: usize = 200;

/// How to call an HTTP handler; built from `workers.toml`.
#[derive(Clone)]
pub struct HttpSpec {
    /// The `http://` or `https://` URL jobs are POSTed to.
    pub url: String,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: BTreeMap<String, String>,
    /// Time allowed to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Cap (bytes) on the response body kept; the rest is not read.
    pub max_response_bytes: usize,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            url: String::new(),
            headers: BTreeMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Shows header names only: their values are often credentials.
impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec")
            .field("url", &redacted(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// One call of the endpoint: its outcome, the status seen and the usage reported.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRun {
    pub outcome: Outcome,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// Usage from a 2xx JSON body's `"usage"` object; empty otherwise.
    pub usage: Usage,
}

/// POSTs jobs to one URL; see the module docs for the contract.
#[derive(Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    url: Url,
    /// `url` without credentials, query or fragment: safe for error texts.
    shown_url: String,
    headers: HeaderMap,
    max_response_bytes: usize,
}

/// Shows the URL without credentials and header names only.
impl std::fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHandler")
            .field("url", &self.shown_url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// The request body.
#[derive(Serialize)]
struct Request<'a> {
    id: &'a str,
    queue: &'a str,
    attempt: u32,
    tenant: Option<&'a str>,
    payload: &'a RawValue,
}

/// A response read as far as the cap allows.
struct Response {
    status: StatusCode,
    retry_after: Duration,
    location: Option<String>,
    body: String,
    complete: bool,
}

impl HttpHandler {
    /// Validates `spec` and builds the shared client.
    pub fn new(spec: HttpSpec) -> Result<HttpHandler, String> {
        let url = Url::parse(&spec.url).map_err(|e| {
            format!("url is not a valid URL ({e}); write it like https://host/path")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "url scheme `{}` is not supported; use http:// or https://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("url has no host; write it like https://host/path".into());
        }
        if spec.connect_timeout.is_zero() {
            return Err("connect_timeout must be more than zero, for example \"10s\"".into());
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("header name `{name}` is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)")
            })?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(format!(
                    "header `{name}` is set by redq itself; remove it from headers"
                ));
            }
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                format!("the value of header `{name}` is not valid in HTTP (it holds a newline or another control character)")
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("redq/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(HttpHandler {
            client,
            shown_url: redacted(&spec.url),
            url,
            headers,
            max_response_bytes: spec.max_response_bytes,
        })
    }

    /// POSTs the job once and reports how it went.
    pub async fn run(&self, ctx: JobContext) -> HttpRun {
        let fail = |error: String| HttpRun {
            outcome: Outcome::Fail { error },
            status: None,
            usage: Usage::new(),
        };
        // Any UTF-8 passes (as obs-text); only control characters cannot be sent.
        let Ok(key) = HeaderValue::from_bytes(ctx.id.as_bytes()) else {
            let error = "the job id holds control characters, so it cannot be sent as the \
                         Idempotency-Key header";
            return HttpRun {
                outcome: Outcome::Dead {
                    error: error.into(),
                },
                status: None,
                usage: Usage::new(),
            };
        };
        let request = Request {
            id: &ctx.id,
            queue: &ctx.queue,
            attempt: ctx.attempt,
            tenant: ctx.tenant.as_deref(),
            payload: &ctx.payload,
        };
        let body = match serde_json::to_vec(&request) {
            Ok(body) => body,
            Err(e) => return fail(format!("cannot encode the request body: {e}")),
        };
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(body);
        let response = tokio::select! {
            response = self.exchange(request) => response,
            _ = tokio::time::sleep(ctx.timeout) => {
                let after = humantime::format_duration(ctx.timeout);
                return fail(format!("timed out after {after} waiting for {}", self.shown_url));
            }
            _ = ctx.cancel.cancelled() => return fail("cancelled: the worker stopped the request".into()),
        };
        match response {
            Ok(response) => self.judge(response),
            Err(e) => fail(format!(
                "POST {} failed: {}",
                self.shown_url,
                error_chain(&e.without_url())
            )),
        }
    }

    /// Sends the request and reads the body up to the cap.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> reqwest::Result<Response> {
        let mut response = request.send().await?;
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let retry_after =
            header(RETRY_AFTER).map_or(Duration::ZERO, |v| parse_retry_after(v, SystemTime::now()));
        let location = header(LOCATION).map(str::to_owned);
        let (status, declared, cap) = (
            response.status(),
            response.content_length(),
            self.max_response_bytes,
        );
        let (mut kept, mut seen) = (Vec::new(), 0u64);
        while let Some(chunk) = response.chunk().await? {
            seen += chunk.len() as u64;
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if seen > cap as u64 {
                break; // the rest is dropped unread
            }
        }
        let mut body = String::from_utf8_lossy(&kept).into_owned();
        let complete = seen == kept.len() as u64;
        if !complete {
            match declared {
                Some(total) => body.push_str(&format!(
                    "…[truncated {} bytes]",
                    total.saturating_sub(cap as u64)
                )),
                None => body.push_str("…[truncated]"),
            }
        }
        Ok(Response {
            status,
            retry_after,
            location,
            body,
            complete,
        })
    }

    /// Turns a response into an outcome, per the contract in the module docs.
    fn judge(&self, response: Response) -> HttpRun {
        let Response {
            status,
            retry_after,
            location,
            body,
            complete,
        } = response;
        let head = format!("HTTP {} from {}", status, self.shown_url);
        let with_body = || match body.trim() {
            "" => head.clone(),
            text if text.chars().count() > ERROR_BODY_CHARS => {
                format!(
                    "{head}: {}…",
                    text.chars().take(ERROR_BODY_CHARS).collect::<String>()
                )
            }
            text => format!("{head}: {text}"),
        };
        let mut usage = Usage::new();
        let outcome = if status.is_success() {
            if complete {
                usage = parse_usage(&body);
            }
            Outcome::Done {
                result: (!body.is_empty()).then_some(body.clone()),
            }
        } else if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE
        {
            Outcome::Retry {
                after: retry_after,
                error: with_body(),
            }
        } else if status.is_redirection() {
            let to = location.unwrap_or_else(|| "no Location".into());
            Outcome::Fail {
                error: format!(
                    "{head}: redirects are not followed ({to}); set url to the final address"
                ),
            }
        } else if status.is_client_error() {
            Outcome::Dead { error: with_body() }
        } else {
            Outcome::Fail { error: with_body() }
        };
        HttpRun {
            outcome,
            status: Some(status.as_u16()),
            usage,
        }
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, ctx: JobContext) -> Outcome {
        HttpHandler::run(self, ctx).await.outcome
    }

    async fn run(&self, ctx: JobContext) -> RunReport {
        let run = HttpHandler::run(self, ctx).await;
        RunReport {
            outcome: run.outcome,
            usage: run.usage,
            resources: None,
        }
    }
}

/// Reads `Retry-After` (delay-seconds or an IMF-fixdate) as a delay from `now`. Missing
/// meaning is `Duration::ZERO` ("normal backoff"): unparseable values, past dates, and
/// the obsolete date formats. The result is capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Duration {
    let value = value.trim();
    let after = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else if let Some(at) = parse_imf_fixdate(value) {
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    };
    after.min(MAX_RETRY_AFTER)
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate).
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = value.split_once(", ")?;
    let [day, month, year, time, "GMT"] = rest.split(' ').collect::<Vec<_>>()[..] else {
        return None;
    };
    let number = |text: &str, digits: usize| -> Option<u64> {
        if text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().ok()
        } else {
            None
        }
    };
    let [hour, minute, second] = time.split(':').collect::<Vec<_>>()[..] else {
        return None;
    };
    let (hour, minute, second) = (number(hour, 2)?, number(minute, 2)?, number(second, 2)?);
    let (day, year) = (number(day, 2)?, number(year, 4)?);
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    if year < 1970 || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil, for years >= 1970).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + hour * 3600 + minute * 60 + second))
}

/// The numbers of a JSON object body's `"usage"` object; anything else yields none.
fn parse_usage(body: &str) -> Usage {
    let Ok(doc) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body) else {
        return Usage::new();
    };
    let Some(serde_json::Value::Object(usage)) = doc.get("usage") else {
        return Usage::new();
    };
    usage
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.as_f64().filter(|n| n.is_finite())?)))
        .collect()
}

/// `url` without credentials, query or fragment, for logs and error texts.
fn redacted(url: &str) -> String {
    let Ok(mut url) = Url::parse(url) else {
        return "<invalid url>".into();
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// An error and its causes, joined with ": " (reqwest's own text alone is vague).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
