//! The table `redq bench` prints.

use super::{Better, Report, Row, Stat};

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

/// "3.10× better" / "0.50× worse": redq's median over BullMQ's, and which
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
    let compare = report.rows.iter().any(|r| r.bullmq.is_some());
    let w = if report.repeat > 1 { 28 } else { 10 };
    println!(
        "redq bench: {} jobs per scenario, {} repetition(s), redis-server {}, {} CPU(s){}",
        report.jobs,
        report.repeat,
        report.redis_server,
        report.cpus,
        report
            .bullmq_version
            .as_ref()
            .map(|v| format!(", BullMQ {v}"))
            .unwrap_or_default()
    );
    if let Some(why) = &report.compare_skipped {
        println!("BullMQ comparison skipped: {why}");
    }
    if compare {
        println!(
            "{:<6} {:<55} {:<7} {:>w$} {:>w$}  REDQ/BULLMQ",
            "ID", "SCENARIO", "UNIT", "REDQ", "BULLMQ"
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
            let bull = r
                .bullmq
                .as_ref()
                .map(|b| cell(b, &r.unit, report.repeat))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<6} {:<55} {:<7} {:>w$} {:>w$}  {}",
                r.id,
                r.scenario,
                r.unit,
                redq,
                bull,
                ratio(r)
            );
        } else {
            println!("{:<6} {:<55} {:<7} {:>w$}", r.id, r.scenario, r.unit, redq);
        }
    }
}
