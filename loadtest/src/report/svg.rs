//! A minimal line chart as inline SVG: no scripts, no external resources.

use std::fmt::Write as _;

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS color.
    pub color: &'a str,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 30.0;

/// Escapes text for XML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
pub fn nice_max(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * exp)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * exp)
}

/// Renders a chart titled `title` with `y_label` units; `fmt_y` formats tick values.
pub fn chart(
    title: &str,
    y_label: &str,
    series: &[Series<'_>],
    fmt_y: &dyn Fn(f64) -> String,
) -> String {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let x_max = xs.fold(1.0f64, f64::max);
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let px = |x: f64| LEFT + x / x_max * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - y / y_max * (H - TOP - BOTTOM);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        o,
        r#"<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{y1:.1}" y2="{y1:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            py(y) + 4.0,
            escape(&fmt_y(y)),
            y1 = py(y)
        );
    }
    for i in 0..=5 {
        let x = x_max * f64::from(i) / 5.0;
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{:.0}s</text>"#,
            px(x),
            H - BOTTOM + 14.0,
            x
        );
    }
    let _ = write!(
        o,
        r#"<text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"#,
        H / 2.0,
        H / 2.0,
        escape(y_label)
    );
    let mut legend_x = W - RIGHT;
    for s in series.iter().rev() {
        legend_x -= 8.0 * s.name.len() as f64 + 24.0;
        let _ = write!(
            o,
            r#"<rect x="{legend_x:.1}" y="6" width="10" height="10" fill="{}"/><text x="{:.1}" y="15">{}</text>"#,
            escape(s.color),
            legend_x + 14.0,
            escape(s.name)
        );
    }
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y.min(y_max))))
            .collect();
        let _ = write!(
            o,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            escape(s.color),
            pts.join(" ")
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(1_234.0), 2_000.0);
        assert_eq!(nice_max(0.03), 0.05);
    }

    #[test]
    fn chart_is_self_contained_svg() {
        let s = Series {
            name: "open <conns>",
            color: "#1f77b4",
            points: vec![(0.0, 0.0), (1.0, 500.0), (2.0, 1000.0)],
        };
        let svg = chart("a & b", "connections", &[s], &|v| format!("{v:.0}"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &amp; b") && svg.contains("open &lt;conns&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(
            !svg.contains("http://") || svg.matches("http://").count() == 1,
            "only the xmlns"
        );
    }
}
