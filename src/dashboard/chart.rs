//! Charts drawn on the server as inline SVG, so they show without
//! JavaScript (the page's script only fetches them again to refresh).

use std::fmt::Write;

use super::html::{esc, num};
use crate::store::MinuteCount;

const W: f64 = 640.0;
const H: f64 = 160.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 20.0;
/// Colours of the stacked series, in order.
const PALETTE: [&str; 8] = [
    "#2b8a3e", "#1c7ed6", "#f08c00", "#ae3ec9", "#0c8599", "#e8590c", "#5c940d", "#868e96",
];

/// One bar: its label and the stacked values (series in `names` order).
pub struct Bar {
    pub label: String,
    pub values: Vec<f64>,
}

/// Stacked bars with a legend. `names` and each bar's values are in the
/// same order; colours follow [`PALETTE`] (failures are given red by
/// [`rates`]).
pub fn stacked(title: &str, names: &[&str], colours: &[&str], bars: &[Bar]) -> String {
    let max = bars
        .iter()
        .map(|b| b.values.iter().sum::<f64>())
        .fold(0.0, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let n = bars.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let bar_w = (slot * 0.8).max(1.0);
    let plot_h = H - BOTTOM - 8.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title>{}</title>",
        H + 18.0,
        esc(title),
        esc(title)
    );
    // Axis and the top value.
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"8\" x2=\"{LEFT}\" y2=\"{y}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\" stroke=\"#999\"/>\
         <text x=\"{tx}\" y=\"14\" text-anchor=\"end\" class=\"axis\">{max}</text>\
         <text x=\"{tx}\" y=\"{y}\" text-anchor=\"end\" class=\"axis\">0</text>",
        y = H - BOTTOM,
        tx = LEFT - 4.0,
        max = esc(&num(max))
    );
    for (i, bar) in bars.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
        let mut base = H - BOTTOM;
        for (s, v) in bar.values.iter().enumerate() {
            if *v <= 0.0 {
                continue;
            }
            let h = v / top * plot_h;
            base -= h;
            let colour = colours.get(s).copied().unwrap_or("#868e96");
            let name = names.get(s).copied().unwrap_or("");
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" \
                 fill=\"{colour}\"><title>{}: {} {}</title></rect>",
                esc(&bar.label),
                esc(&num(*v)),
                esc(name)
            );
        }
    }
    // A few labels along the bottom: first, middle, last.
    let picks = [0, bars.len() / 2, bars.len().saturating_sub(1)];
    for (k, i) in picks.iter().enumerate() {
        if k > 0 && *i == picks[k - 1] {
            continue;
        }
        if let Some(bar) = bars.get(*i) {
            let x = LEFT + *i as f64 * slot + slot / 2.0;
            // The first and last labels stay inside the drawing.
            let anchor = match k {
                0 => "start",
                2 => "end",
                _ => "middle",
            };
            let x = match k {
                0 => x - slot / 2.0,
                2 => x + slot / 2.0,
                _ => x,
            };
            let _ = write!(
                svg,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\" class=\"axis\">{}</text>",
                H - 4.0,
                esc(&bar.label)
            );
        }
    }
    let mut lx = LEFT;
    for (s, name) in names.iter().enumerate() {
        let colour = colours.get(s).copied().unwrap_or("#868e96");
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{}\" y=\"{}\" class=\"axis\">{}</text>",
            H + 6.0,
            lx + 14.0,
            H + 15.0,
            esc(name)
        );
        lx += 24.0 + 7.0 * name.chars().count().min(24) as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// Jobs succeeded and failed per minute (several queues' buckets summed).
pub fn rates(title: &str, series: &[Vec<MinuteCount>]) -> String {
    let len = series.iter().map(Vec::len).max().unwrap_or(0);
    let mut bars: Vec<Bar> = Vec::with_capacity(len);
    for i in 0..len {
        let (mut ok, mut failed, mut minute) = (0u64, 0u64, 0i64);
        for s in series {
            if let Some(m) = s.get(i) {
                ok += m.succeeded;
                failed += m.failed;
                minute = m.minute;
            }
        }
        bars.push(Bar {
            label: minute_label(minute),
            values: vec![ok as f64, failed as f64],
        });
    }
    stacked(
        title,
        &["succeeded", "failed"],
        &["#2b8a3e", "#c92a2a"],
        &bars,
    )
}

/// `HH:MM` UTC of a Unix minute.
fn minute_label(minute: i64) -> String {
    let m = minute.rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// The palette's colours for `n` series.
pub fn colours(n: usize) -> Vec<&'static str> {
    (0..n).map(|i| PALETTE[i % PALETTE.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_escaped() {
        let svg = stacked("<t>", &["<a>"], &["#000"], &[]);
        assert!(svg.contains("&lt;t&gt;") && !svg.contains("<t>") && !svg.contains("<a>"));
        let svg = rates("r", &[]);
        assert!(svg.starts_with("<svg"));
    }
}
