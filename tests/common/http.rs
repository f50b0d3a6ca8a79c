//! A daemon's HTTP endpoints (`/metrics`, `/healthz`, `/readyz`) as a
//! scraper or a probe reads them.

use std::io::{Read, Write};
use std::time::Duration;

/// `GET path` from `addr` over plain HTTP/1.0, blocking: the status and the
/// body (`None` when nothing answers).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// `GET url`, async: the status and the body, or 0 and the error when
/// nothing answers.
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The value of one series in a Prometheus text body, named in full with
/// its labels (`redq_jobs_total{queue="ok",outcome="dead"}`).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
