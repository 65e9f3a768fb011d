//! The summary's pictures, drawn on the server as SVG by plotters: no script, no asset
//! from elsewhere; the page shows them as images.

use plotters::prelude::*;

/// Colours that stay apart for the usual handful of series (Okabe–Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Bars per label (a day, a time bucket), one stacked segment per series, with a legend.
pub fn stacked(title: &str, labels: &[String], series: &[(String, Vec<usize>)]) -> String {
    let mut svg = String::new();
    let drawn = draw_stacked(&mut svg, title, labels, series);
    if let Err(e) = drawn {
        return failed(title, &e.to_string());
    }
    svg
}

fn draw_stacked(
    svg: &mut String,
    title: &str,
    days: &[String],
    series: &[(String, Vec<usize>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let n = days.len().max(1);
    let top = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|(_, v)| v.get(i).copied().unwrap_or(0))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let root = SVGBackend::with_string(svg, (760, 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(40)
        .build_cartesian_2d((0..n).into_segmented(), 0..top + top / 3 + 1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => days.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc("messages")
        .draw()?;
    let mut base = vec![0usize; n];
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let bars: Vec<Rectangle<(SegmentValue<usize>, usize)>> = (0..n)
            .filter(|i| values.get(*i).copied().unwrap_or(0) > 0)
            .map(|i| {
                let v = values[i];
                let from = (SegmentValue::Exact(i), base[i]);
                let to = (SegmentValue::Exact(i + 1), base[i] + v);
                base[i] += v;
                let mut r = Rectangle::new([from, to], colour.filled());
                r.set_margin(0, 0, 6, 6);
                r
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

/// How many answers took how long: minutes in buckets from under 1 to over a day.
pub fn latency(title: &str, minutes: &[f64]) -> String {
    const EDGES: [(f64, &str); 7] = [
        (1.0, "< 1 min"),
        (5.0, "1–5 min"),
        (15.0, "5–15 min"),
        (60.0, "15–60 min"),
        (240.0, "1–4 h"),
        (1440.0, "4–24 h"),
        (f64::INFINITY, "> 1 day"),
    ];
    let mut counts = vec![0usize; EDGES.len()];
    for m in minutes {
        let i = EDGES
            .iter()
            .position(|(edge, _)| m < edge)
            .unwrap_or(EDGES.len() - 1);
        counts[i] += 1;
    }
    let labels: Vec<String> = EDGES.iter().map(|(_, l)| (*l).to_string()).collect();
    stacked(title, &labels, &[("answers".to_string(), counts)])
}

/// A picture that says it could not be drawn, rather than a broken image.
fn failed(title: &str, why: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="60"><text x="10" y="30">{}: {}</text></svg>"#,
        esc(title),
        esc(why)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_labels() {
        let days = vec!["11-30".to_string(), "12-01".to_string()];
        let svg = stacked(
            "by category",
            &days,
            &[
                ("quote_request".into(), vec![3, 1]),
                ("<script>".into(), vec![0, 2]),
            ],
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("quote_request") && svg.contains("12-01"));
        assert!(!svg.contains("<script>"), "series names are escaped");
        let lat = latency("latency", &[0.5, 3.0, 3000.0]);
        assert!(lat.contains("1–5 min") && lat.contains("&gt; 1 day") || lat.contains("> 1 day"));
    }
}
