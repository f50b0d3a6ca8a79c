//! What `redq bench` reports: the samples of one run, their medians and
//! ranges over the repetitions, the rows next to the compared queue's
//! (`--compare`: BullMQ or ChasquiMQ), and the table
//! printed from them (`--json` prints [`Report`] instead).

use serde::Serialize;

/// Which way a number is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured number of one run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Stable id shared with the compared queues' programs (`a`, `c200p`,
    /// `d_p99`, …).
    pub id: String,
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub value: f64,
}

impl Sample {
    pub(super) fn new(
        id: impl Into<String>,
        label: impl Into<String>,
        unit: &'static str,
        better: Better,
        value: f64,
    ) -> Sample {
        Sample {
            id: id.into(),
            label: label.into(),
            unit,
            better,
            value,
        }
    }
}

/// Median and range over the repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stat {
    pub(super) fn of(mut samples: Vec<f64>) -> Option<Stat> {
        if samples.is_empty() {
            return None;
        }
        let sorted = {
            samples.sort_by(f64::total_cmp);
            samples.clone()
        };
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            samples,
        })
    }
}

/// One line of the table: redq's numbers and, when compared, the peer's.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub scenario: String,
    pub unit: String,
    pub better: Better,
    pub redq: Stat,
    /// The compared queue's (`--compare`), where it has this number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Stat>,
    /// redq median / the peer's median.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// Everything one `redq bench` produced.
#[derive(Debug, Serialize)]
pub struct Report {
    pub redis_server: String,
    pub cpus: usize,
    pub jobs: u64,
    pub repeat: u32,
    pub scenarios: String,
    /// A replica of the private server ran (`--replica`).
    pub replica: bool,
    /// redq's `redis.wait_replicas` (`--wait-replicas`).
    pub wait_replicas: u32,
    /// The compared queue (`--compare`): "BullMQ" or "ChasquiMQ".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_version: Option<String>,
    /// Why a requested comparison did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_skipped: Option<String>,
    pub rows: Vec<Row>,
}

fn num(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match unit {
        "jobs/s" => format!("{v:.0}"),
        "ms" => format!("{v:.3}"),
        "% core" => format!("{v:.2}"),
        _ => format!("{v:.1}"),
    }
}

fn cell(s: &Stat, unit: &str, repeat: u32) -> String {
    if repeat > 1 {
        format!(
            "{} ({}–{})",
            num(s.median, unit),
            num(s.min, unit),
            num(s.max, unit)
        )
    } else {
        num(s.median, unit)
    }
}

/// "3.10× better" / "0.50× worse": redq's median over the peer's, and which
/// way that goes for this number.
fn ratio(r: &Row) -> String {
    match r.ratio {
        Some(x) if x.is_finite() => {
            let good = match r.better {
                Better::Higher => x >= 1.0,
                Better::Lower => x <= 1.0,
            };
            format!("{x:.2}× {}", if good { "better" } else { "worse" })
        }
        _ => String::new(),
    }
}

/// Prints the report as a table on stdout.
pub fn print_table(report: &Report) {
    let compare = report.rows.iter().any(|r| r.peer.is_some());
    let peer = report.peer.as_deref().unwrap_or("peer");
    let w = if report.repeat > 1 { 28 } else { 10 };
    let replica = match (report.replica, report.wait_replicas) {
        (false, _) => String::new(),
        (true, 0) => ", a replica (wait_replicas 0)".into(),
        (true, n) => format!(", a replica, wait_replicas {n}"),
    };
    println!(
        "redq bench: {} jobs per scenario, {} repetition(s), redis-server {}{replica}, {} CPU(s){}",
        report.jobs,
        report.repeat,
        report.redis_server,
        report.cpus,
        report
            .peer_version
            .as_ref()
            .map(|v| format!(", {peer} {v}"))
            .unwrap_or_default()
    );
    if let Some(why) = &report.compare_skipped {
        println!("{peer} comparison skipped: {why}");
    }
    let peer = peer.to_uppercase();
    if compare {
        println!(
            "{:<6} {:<55} {:<7} {:>w$} {:>w$}  REDQ/{peer}",
            "ID", "SCENARIO", "UNIT", "REDQ", peer
        );
    } else {
        println!(
            "{:<6} {:<55} {:<7} {:>w$}",
            "ID", "SCENARIO", "UNIT", "REDQ"
        );
    }
    for r in &report.rows {
        let redq = cell(&r.redq, &r.unit, report.repeat);
        if compare {
            let other = r
                .peer
                .as_ref()
                .map(|b| cell(b, &r.unit, report.repeat))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<6} {:<55} {:<7} {:>w$} {:>w$}  {}",
                r.id,
                r.scenario,
                r.unit,
                redq,
                other,
                ratio(r)
            );
        } else {
            println!("{:<6} {:<55} {:<7} {:>w$}", r.id, r.scenario, r.unit, redq);
        }
    }
}
