//! SVG line charts for the report (plotters' SVG backend: no fonts or system libraries).
//! Logarithmic axes are drawn by plotting log10 values on a linear axis and labelling the
//! ticks with the real values.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// How a chart is drawn.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub log_x: bool,
    pub log_y: bool,
    /// Names for x = 0, 1, 2, … (percentile charts).
    pub x_names: Option<&'a [&'a str]>,
    /// Horizontal reference lines (y, label).
    pub h_lines: &'a [(f64, &'a str)],
}

const COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

fn scale(v: f64, log: bool) -> f64 {
    if log { v.max(1e-9).log10() } else { v }
}

fn label(v: f64, log: bool) -> String {
    let v = if log { 10f64.powf(v) } else { v };
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws `series` into an SVG file at `path`.
pub fn draw(path: &Path, chart: &Chart<'_>, series: &[Series]) -> anyhow::Result<()> {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(|&(x, y)| (scale(x, chart.log_x), scale(y, chart.log_y)))
        })
        .chain(
            chart
                .h_lines
                .iter()
                .map(|&(y, _)| (f64::NAN, scale(y, chart.log_y))),
        )
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        if x.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
        }
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 || y0 > y1 {
        return Ok(());
    }
    let pad_x = ((x1 - x0) * 0.05).max(0.1);
    let pad_y = ((y1 - y0) * 0.08).max(if chart.log_y { 0.1 } else { 1.0 });
    let (x0, x1, y0, y1) = (x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y);
    let err = |e: &dyn std::fmt::Debug| anyhow!("drawing {}: {e:?}", path.display());
    let root = SVGBackend::new(path, (820, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    let (log_x, log_y) = (chart.log_x, chart.log_y);
    let names = chart.x_names;
    let x_fmt = move |v: &f64| match names {
        Some(names) => {
            let i = v.round();
            if (v - i).abs() < 0.05 && i >= 0.0 {
                names
                    .get(i as usize)
                    .map_or_else(String::new, |s| (*s).to_owned())
            } else {
                String::new()
            }
        }
        None => label(*v, log_x),
    };
    let y_fmt = move |v: &f64| label(*v, log_y);
    ctx.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .x_labels(names.map_or(8, |n| n.len() * 4 + 1))
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(|e| err(&e))?;
    for &(y, text) in chart.h_lines {
        let y = scale(y, log_y);
        ctx.draw_series(LineSeries::new(vec![(x0, y), (x1, y)], BLACK.mix(0.35)))
            .map_err(|e| err(&e))?;
        ctx.draw_series(std::iter::once(Text::new(
            text.to_owned(),
            (x0 + pad_x * 0.2, y),
            ("sans-serif", 12),
        )))
        .map_err(|e| err(&e))?;
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(x, y)| (scale(x, log_x), scale(y, log_y)))
            .collect();
        ctx.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        ctx.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
