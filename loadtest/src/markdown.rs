//! Markdown for the report: tables, numbered sections, and the charts drawn beside it.

use std::fmt::Write as _;
use std::path::Path;

use crate::charts::{self, Chart, Series};
use crate::results::Pct;

pub(crate) const PCT_NAMES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// The five percentiles of `p` as chart points (x = 0 for p50 … 4 for max), divided by `scale`.
pub(crate) fn pct_points(p: &Pct, scale: f64) -> Vec<(f64, f64)> {
    [p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as f64, v / scale))
        .collect()
}

/// One Markdown table row.
pub(crate) fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

/// A Markdown table's header row and its separator; `columns` are the names as the row shows
/// them, separated by ` | `.
pub(crate) fn header(out: &mut String, columns: &str) {
    let _ = writeln!(out, "| {columns} |");
    let separators = vec!["---"; columns.split(" | ").count()];
    let _ = writeln!(out, "| {} |", separators.join(" | "));
}

/// A numbered section's heading and the paragraph that says how its figures were taken.
pub(crate) fn section(out: &mut String, heading: &str, intro: &str) {
    let _ = writeln!(out, "\n## {heading}\n\n{intro}\n");
}

/// One series per target: its percentiles, as `pct` picks them from the target's figures.
pub(crate) fn pct_series<'a, T: 'a>(
    figures: impl IntoIterator<Item = (&'a String, &'a T)>,
    pct: impl Fn(&T) -> &Pct,
) -> Vec<Series> {
    figures
        .into_iter()
        .map(|(name, figures)| Series {
            name: name.clone(),
            points: pct_points(pct(figures), 1.0),
        })
        .collect()
}

/// A chart titled `title` of latency percentiles, in µs on a log scale.
pub(crate) fn latency_chart(title: &str) -> Chart<'_> {
    Chart {
        title,
        x_desc: "percentile",
        y_desc: "µs (log)",
        log_x: false,
        log_y: true,
        x_names: Some(&PCT_NAMES),
        h_lines: &[],
    }
}

/// Where the report's charts go: SVG files named after the report, beside it.
pub(crate) struct Charts<'a> {
    pub dir: &'a Path,
    pub stem: &'a str,
}

impl Charts<'_> {
    /// Draws the chart `name` beside the report and links it from the text as `alt`.
    pub fn draw(
        &self,
        out: &mut String,
        name: &str,
        alt: &str,
        chart: &Chart<'_>,
        series: &[Series],
    ) -> anyhow::Result<()> {
        let file = format!("{}-{name}.svg", self.stem);
        charts::draw(&self.dir.join(&file), chart, series)?;
        let _ = writeln!(out, "\n![{alt}]({file})");
        Ok(())
    }
}
