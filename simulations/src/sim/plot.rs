//! SVG plots of a run (plotters, SVG backend only): success rate over time, the depletion of a
//! hub's channels, fee revenue. Each returns the SVG document as a string; the caller writes it.

use std::ops::Range;

use plotters::prelude::*;

use crate::sim::config::Unit;
use crate::sim::error::SimError;
use crate::sim::report::{Samples, short};

const SIZE: (u32, u32) = (960, 540);

fn plot_err<E: std::fmt::Display>(e: E) -> SimError {
    SimError::Plot(e.to_string())
}

/// The time axis: a divisor of milliseconds and its name, chosen for the run's length.
fn time_axis(samples: &Samples) -> (f64, &'static str) {
    let end = samples.times_ms.last().copied().unwrap_or(0);
    if end >= 2 * 3_600_000 {
        (3_600_000.0, "virtual time (hours)")
    } else if end >= 2 * 60_000 {
        (60_000.0, "virtual time (minutes)")
    } else {
        (1000.0, "virtual time (seconds)")
    }
}

fn x_max(samples: &Samples, div: f64) -> f64 {
    (samples.times_ms.last().copied().unwrap_or(0) as f64 / div).max(1e-3)
}

/// The frame of a line chart: what [`draw`] needs besides its lines.
struct Frame {
    caption: String,
    x_desc: &'static str,
    x_max: f64,
    y: Range<f64>,
    y_desc: String,
    /// Width of the y labels' area, pixels.
    y_label_area: u32,
    legend: SeriesLabelPosition,
}

/// A labelled line of a chart, its points and its colour.
type Line = (String, Vec<(f64, f64)>, RGBAColor);

/// `values` over the sampling times, as points: time in units of `div` ms, `y` of each value.
fn over_time<'a, T: 'a>(
    samples: &Samples,
    div: f64,
    values: impl IntoIterator<Item = &'a T>,
    y: impl Fn(&T) -> f64,
) -> Vec<(f64, f64)> {
    samples
        .times_ms
        .iter()
        .zip(values)
        .map(|(t, v)| (*t as f64 / div, y(v)))
        .collect()
}

/// The SVG document of a line chart: `lines` in `frame`, with a legend.
fn draw(frame: Frame, lines: Vec<Line>) -> Result<String, SimError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(frame.caption, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(frame.y_label_area)
            .build_cartesian_2d(0f64..frame.x_max, frame.y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(frame.x_desc)
            .y_desc(frame.y_desc)
            .draw()
            .map_err(plot_err)?;
        for (label, pts, color) in lines {
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(frame.legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Lines in the colours of the palette, in order.
fn colored(lines: Vec<(String, Vec<(f64, f64)>)>) -> Vec<Line> {
    lines
        .into_iter()
        .enumerate()
        .map(|(i, (label, pts))| (label, pts, Palette99::pick(i).to_rgba()))
        .collect()
}

/// Success rate per sampling window and cumulative, in percent.
pub fn success_rate_svg(samples: &Samples) -> Result<String, SimError> {
    let (div, x_desc) = time_axis(samples);
    let mut window = Vec::new();
    let mut cumulative = Vec::new();
    let (mut ok_all, mut n_all) = (0u64, 0u64);
    for ((t, ok), failed) in samples
        .times_ms
        .iter()
        .zip(&samples.window_succeeded)
        .zip(&samples.window_failed)
    {
        let n = ok + failed;
        ok_all += ok;
        n_all += n;
        let x = *t as f64 / div;
        if n > 0 {
            window.push((x, *ok as f64 * 100.0 / n as f64));
        }
        if n_all > 0 {
            cumulative.push((x, ok_all as f64 * 100.0 / n_all as f64));
        }
    }
    let lowest = window
        .iter()
        .chain(&cumulative)
        .map(|p| p.1)
        .fold(100.0f64, f64::min);
    let y_min = ((lowest / 10.0).floor() * 10.0 - 5.0).clamp(0.0, 95.0);
    let frame = Frame {
        caption: "Payment success rate over time".to_owned(),
        x_desc,
        x_max: x_max(samples, div),
        y: y_min..100.5f64,
        y_desc: "success rate (%)".to_owned(),
        y_label_area: 60,
        legend: SeriesLabelPosition::LowerLeft,
    };
    draw(
        frame,
        vec![
            ("per sampling window".to_owned(), window, BLUE.to_rgba()),
            ("cumulative".to_owned(), cumulative, RED.to_rgba()),
        ],
    )
}

/// The free balance on the hub's side of each of its sampled channels, in percent of the
/// channel's capacity: which channels drain, and when. Without hubs: side A of every sampled
/// channel.
pub fn balances_svg(samples: &Samples, hub: Option<usize>) -> Result<String, SimError> {
    let (div, x_desc) = time_axis(samples);
    let lines: Vec<(String, Vec<(f64, f64)>)> = samples
        .channels
        .iter()
        .filter(|c| match (hub, c.hub) {
            (Some(h), Some((ch, _))) => h == ch,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .take(12)
        .map(|c| {
            let (side, peer) = match c.hub {
                Some((_, 0)) if hub.is_some() => (0, &c.node_b),
                Some((_, _)) if hub.is_some() => (1, &c.node_a),
                _ => (0, &c.node_b),
            };
            let cap = c.capacity.max(1) as f64;
            let pts = over_time(samples, div, &c.points, |p| p[side] as f64 * 100.0 / cap);
            (format!("→ {}", short(peer)), pts)
        })
        .collect();
    let title = match hub.and_then(|h| samples.hub_names.get(h)) {
        Some(name) => format!("Balance of hub {} in its channels", short(name)),
        None => "Balance of side A in sampled channels".to_owned(),
    };
    let frame = Frame {
        caption: title,
        x_desc,
        x_max: x_max(samples, div),
        y: 0f64..100.5f64,
        y_desc: "free balance (% of capacity)".to_owned(),
        y_label_area: 60,
        legend: SeriesLabelPosition::UpperRight,
    };
    draw(frame, colored(lines))
}

/// Cumulative fees earned by each hub, and paid by all payers, in the display unit.
pub fn fees_svg(samples: &Samples, unit: &Unit) -> Result<String, SimError> {
    let (div, x_desc) = time_axis(samples);
    let scale = 10f64.powi(i32::try_from(unit.decimals).unwrap_or(0));
    let mut lines: Vec<(String, Vec<(f64, f64)>)> = samples
        .hub_names
        .iter()
        .zip(&samples.hub_fees)
        .map(|(name, series)| {
            let pts = over_time(samples, div, series, |f| *f as f64 / scale);
            (format!("earned by {}", short(name)), pts)
        })
        .collect();
    let total = over_time(samples, div, &samples.total_fees, |f| *f as f64 / scale);
    lines.push(("paid by all payers".to_owned(), total));
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0f64, f64::max)
        .max(1e-12)
        * 1.05;
    let frame = Frame {
        caption: "Fee revenue".to_owned(),
        x_desc,
        x_max: x_max(samples, div),
        y: 0f64..y_max,
        y_desc: format!("cumulative fees ({})", unit.name),
        y_label_area: 90,
        legend: SeriesLabelPosition::UpperLeft,
    };
    draw(frame, colored(lines))
}
