//! Who may use the dashboard, and which requests count as the operator's.
//!
//! - Access token (`--token`, required with `--listen-public`): every
//!   request must carry it as the password of HTTP Basic auth (any user
//!   name; browsers ask once) or as `Authorization: Bearer <token>`.
//! - CSRF: a page of another site must not make the operator's browser act.
//!   Actions are POST only; a POST whose `Origin` (or, without one,
//!   `Referer`) names another host is refused here, and each action also
//!   checks the form's `csrf` field against this process's random token
//!   ([`form_token_ok`]), which only pages served by this process carry.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::{error_page, App};

/// A new random token: 32 hex digits.
pub fn new_token() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the form's `csrf` field is this process's token.
pub fn form_token_ok(app: &App, fields: &[(String, String)]) -> bool {
    fields
        .iter()
        .any(|(k, v)| k == "csrf" && same(v.as_bytes(), app.csrf.as_bytes()))
}

/// The access token, then the origin of a POST.
pub async fn check(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if let Some(token) = &app.opts.token {
        if !authorized(req.headers(), token) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"redq dashboard\"")],
                "the dashboard needs its access token (HTTP Basic password or Bearer)\n",
            )
                .into_response();
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_origin(req.headers()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Refused: this request came from another site (Origin/Referer is not this dashboard).",
        );
    }
    next.run(req).await
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(bearer) = value.strip_prefix("Bearer ") {
        return same(bearer.trim().as_bytes(), token.as_bytes());
    }
    let Some(basic) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Some(decoded) = base64_decode(basic.trim()) else {
        return false;
    };
    match decoded.iter().position(|b| *b == b':') {
        Some(i) => same(&decoded[i + 1..], token.as_bytes()),
        None => false,
    }
}

/// True unless `Origin` (or, without it, `Referer`) names a host other than
/// `Host`. Requests with neither (curl, old browsers) pass: they still need
/// the form's CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    match (source, host) {
        (None, _) => true,
        (Some(source), Some(host)) => origin_host(source) == Some(host),
        (Some(_), None) => false,
    }
}

/// The `host[:port]` of `scheme://host[:port][/path]`.
fn origin_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// Standard base64 (with or without padding); `None` when malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_password_is_the_token() {
        let mut h = HeaderMap::new();
        // "op:secret-token-123456"
        h.insert(
            header::AUTHORIZATION,
            "Basic b3A6c2VjcmV0LXRva2VuLTEyMzQ1Ng==".parse().unwrap(),
        );
        assert!(authorized(&h, "secret-token-123456"));
        assert!(!authorized(&h, "secret-token-123457"));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!authorized(&h, "x"));
    }

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9465".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:9465".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
