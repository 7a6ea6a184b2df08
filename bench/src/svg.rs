//! The chart of an HTTP scenario (`<date>-<tag>.svg`, linked from the Markdown): latency
//! percentiles (p50, p99, p99.9; log scale) against offered rate, one series per target
//! (the `--sweep` points when there are any, else the single shared open-loop rate), and a
//! bar per target for its closed-loop peak req/s.
//!
//! Owns: hand-written SVG text (no plotting dependency). Must not: compute medians or read
//! files; it draws what `report::Scenario` already holds.

use std::fmt::Write as _;

use crate::report::{Scenario, TargetResult};

const W: f64 = 960.0;
const H: f64 = 440.0;
/// Plot areas: latency on the left, bars on the right (x0, y0, x1, y1).
const LAT: (f64, f64, f64, f64) = (70.0, 50.0, 560.0, 370.0);
const BARS: (f64, f64, f64, f64) = (640.0, 50.0, 930.0, 370.0);

fn color(name: &str, i: usize) -> &'static str {
    match name {
        "direct" => "#555555",
        "egressd" => "#d62728",
        "haproxy" => "#1f77b4",
        "nginx" => "#2ca02c",
        "floor" => "#bbbbbb",
        _ => ["#9467bd", "#8c564b", "#e377c2", "#17becf"][i % 4],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// (offered rate, [p50, p99, p99.9] in µs) per point, by rising rate.
fn points(t: &TargetResult) -> Vec<(f64, [f64; 3])> {
    let mut pts: Vec<(f64, [f64; 3])> = if t.sweep.is_empty() {
        t.open_loop.iter().collect::<Vec<_>>()
    } else {
        t.sweep.iter().collect()
    }
    .into_iter()
    .map(|l| (l.rate, [l.p50_us, l.p99_us, l.p999_us]))
    .filter(|(r, p)| r.is_finite() && p.iter().all(|v| v.is_finite() && *v > 0.0))
    .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Round number of ticks' step for a 0..max axis.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

pub fn render(sc: &Scenario) -> String {
    let shown: Vec<&TargetResult> = sc.targets.iter().filter(|t| t.skipped.is_none()).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold">{}: latency vs offered rate, and peak throughput</text>"#,
        LAT.0,
        esc(&sc.name)
    );
    latency_panel(&mut s, &shown);
    bar_panel(&mut s, &shown);
    s.push_str("</svg>\n");
    s
}

fn latency_panel(s: &mut String, shown: &[&TargetResult]) {
    let (x0, y0, x1, y1) = LAT;
    let all: Vec<(f64, [f64; 3])> = shown.iter().flat_map(|t| points(t)).collect();
    let max_rate = all.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let lo = all
        .iter()
        .flat_map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(1e9);
    let hi = all.iter().flat_map(|p| p.1).fold(0.0, f64::max);
    // Log axis over whole decades covering every point.
    let (dlo, dhi) = if all.is_empty() {
        (1.0, 4.0)
    } else {
        (
            lo.log10().floor(),
            (hi.log10().ceil()).max(lo.log10().floor() + 1.0),
        )
    };
    let px = |r: f64| x0 + (x1 - x0) * r / max_rate;
    let py = |us: f64| y1 - (y1 - y0) * (us.log10() - dlo) / (dhi - dlo);
    let _ = writeln!(
        s,
        r##"<g class="axes"><rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        x1 - x0,
        y1 - y0
    );
    for d in dlo as i32..=dhi as i32 {
        let y = py(10f64.powi(d));
        let label = match d {
            d if d >= 6 => format!("{} s", 10f64.powi(d - 6)),
            d if d >= 3 => format!("{} ms", 10f64.powi(d - 3)),
            _ => format!("{} µs", 10f64.powi(d)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            x0 - 4.0,
            y + 4.0
        );
    }
    // Without a sweep every target has its one point at the same rate: give each target its
    // own column so the points do not sit on top of each other.
    let single = shown.iter().all(|t| points(t).len() <= 1);
    let slot = (x1 - x0) / shown.len().max(1) as f64;
    let xs = |i: usize, r: f64| {
        if single {
            x0 + slot * (i as f64 + 0.5)
        } else {
            px(r)
        }
    };
    let axis = if single {
        for (i, t) in shown.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                xs(i, 0.0),
                y1 + 16.0,
                esc(&t.name)
            );
        }
        let rate = all.first().map_or(0.0, |p| p.0);
        format!("target, open loop at {} req/s", fmt_count(rate))
    } else {
        let step = nice_step(max_rate);
        let mut r = 0.0;
        while r <= max_rate {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                px(r),
                y1 + 16.0,
                fmt_count(r)
            );
            r += step;
        }
        "offered rate (req/s, open loop)".to_string()
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{axis}</text></g>"#,
        (x0 + x1) / 2.0,
        y1 + 34.0
    );
    // One group per target: its three percentile lines and their points.
    for (i, t) in shown.iter().enumerate() {
        let c = color(&t.name, i);
        let pts = points(t);
        let _ = writeln!(s, r#"<g class="series" data-target="{}">"#, esc(&t.name));
        for (k, dash) in ["", "6,3", "2,3"].iter().enumerate() {
            let coords: Vec<String> = pts
                .iter()
                .map(|(r, p)| format!("{:.1},{:.1}", xs(i, *r), py(p[k])))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                coords.join(" ")
            );
            for (r, p) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                    xs(i, *r),
                    py(p[k])
                );
            }
        }
        if let (true, Some((r, p))) = (single, pts.first()) {
            let x = xs(i, *r);
            let _ = writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{c}"/>"#,
                py(p[0]),
                py(p[2])
            );
        }
        let ly = y0 + 14.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text></g>"#,
            x0 + 8.0,
            x0 + 28.0,
            x0 + 32.0,
            ly + 4.0,
            esc(&t.name)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{x0}" y="{}">solid p50, dashed p99, dotted p99.9 (log scale)</text>"#,
        y1 + 52.0
    );
}

fn bar_panel(s: &mut String, shown: &[&TargetResult]) {
    let (x0, y0, x1, y1) = BARS;
    let max = shown
        .iter()
        .filter_map(|t| t.peak_rps)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let _ = writeln!(
        s,
        r##"<g class="bars"><line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#999"/>"##
    );
    let slot = (x1 - x0) / shown.len().max(1) as f64;
    for (i, t) in shown.iter().enumerate() {
        let Some(rps) = t.peak_rps else { continue };
        let h = (y1 - y0) * rps / max;
        let x = x0 + slot * i as f64 + slot * 0.15;
        let _ = writeln!(
            s,
            r#"<rect class="bar" data-target="{n}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
            y1 - h,
            slot * 0.7,
            color(&t.name, i),
            x + slot * 0.35,
            y1 - h - 4.0,
            fmt_count(rps),
            x + slot * 0.35,
            y1 + 16.0,
            n = esc(&t.name),
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">peak req/s (closed loop)</text></g>"#,
        (x0 + x1) / 2.0,
        y1 + 34.0
    );
}

fn fmt_count(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 1000.0 {
        format!("{:.1}k", x / 1000.0)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::OpenLoop;

    fn ol(rate: f64, p50: f64) -> OpenLoop {
        OpenLoop {
            rate,
            achieved_rps: rate,
            p50_us: p50,
            p90_us: p50 * 2.0,
            p99_us: p50 * 4.0,
            p999_us: p50 * 9.0,
            max_us: p50 * 20.0,
            errors: 0,
            cpu_us_per_req: None,
        }
    }

    /// Every tag closes in order (a small stack check: the XML shape browsers need).
    fn balanced(svg: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if tag.contains('<') {
                return Err(format!("'<' inside tag {tag:?}"));
            }
            if tag.ends_with('/') {
                continue;
            }
            let name = tag.split_whitespace().next().unwrap_or("");
            if let Some(end) = name.strip_prefix('/') {
                match stack.pop() {
                    Some(top) if top == end => {}
                    other => return Err(format!("</{end}> closes {other:?}")),
                }
            } else {
                stack.push(name);
            }
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("left open: {stack:?}"))
        }
    }

    #[test]
    fn chart_is_balanced_with_one_series_and_bar_per_shown_target() {
        let t =
            |name: &str, peak: f64, sweep: Vec<OpenLoop>, single: Option<OpenLoop>| TargetResult {
                name: name.into(),
                peak_rps: Some(peak),
                sweep,
                open_loop: single,
                ..Default::default()
            };
        let mut skipped = t("nginx", 1.0, vec![], None);
        skipped.skipped = Some("absent".into());
        let sc = Scenario {
            name: "http-<keepalive>".into(),
            targets: vec![
                t("direct", 90e3, vec![ol(20e3, 40.0), ol(60e3, 80.0)], None),
                t("egressd", 60e3, vec![], Some(ol(30e3, 70.0))),
                t("haproxy", 40e3, vec![ol(10e3, 60.0), ol(30e3, 300.0)], None),
                skipped,
            ],
            ratios: Default::default(),
            cross_check: None,
        };
        let svg = render(&sc);
        balanced(&svg).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("http-&lt;keepalive&gt;"), "title escaped");
        assert_eq!(svg.matches(r#"<g class="series""#).count(), 3);
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 3);
        for name in ["direct", "egressd", "haproxy"] {
            assert!(svg.contains(&format!(r#"class="series" data-target="{name}""#)));
        }
        assert!(!svg.contains(r#"data-target="nginx""#));
        // direct's sweep: two points per percentile line.
        let direct = svg.split(r#"data-target="direct""#).nth(1).unwrap();
        let first_line = direct.split("points=\"").nth(1).unwrap();
        assert_eq!(first_line.split('"').next().unwrap().split(' ').count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn one_shared_rate_puts_each_target_in_its_own_column() {
        let t = |name: &str| TargetResult {
            name: name.into(),
            peak_rps: Some(1e4),
            open_loop: Some(ol(7e3, 50.0)),
            ..Default::default()
        };
        let sc = Scenario {
            name: "http-newconn".into(),
            targets: vec![t("direct"), t("egressd")],
            ratios: Default::default(),
            cross_check: None,
        };
        let svg = render(&sc);
        balanced(&svg).unwrap();
        assert!(svg.contains("target, open loop at 7.0k req/s"));
        let cx = |name: &str| {
            let g = svg
                .split(&format!(r#"data-target="{name}""#))
                .nth(1)
                .unwrap();
            g.split("cx=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        };
        assert_ne!(cx("direct"), cx("egressd"));
    }

    #[test]
    fn the_balance_check_itself_rejects_bad_nesting() {
        assert!(balanced("<a><b></a></b>").is_err());
        assert!(balanced("<a><b/></a>").is_ok());
        assert!(balanced("<a>").is_err());
    }
}
