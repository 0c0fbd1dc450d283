//! The final report as one self-contained HTML file: the text report, the summary as a table,
//! and charts of connections, rates, latency, CPU and memory over time (inline SVG, no scripts,
//! nothing fetched).

use std::fmt::Write as _;

use super::svg::{Series, chart, escape};
use super::{Report, fmt_us};

/// Renders the report as HTML.
pub fn render(r: &Report) -> String {
    let t = &r.timeline;
    let xy = |f: &dyn Fn(&crate::collect::Second) -> f64| -> Vec<(f64, f64)> {
        t.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    // Latency only where something was measured: a quiet second is no data, not zero.
    let measured = |pick: fn(&crate::collect::Second) -> &crate::hist::Summary,
                    q: fn(&crate::hist::Summary) -> u64|
     -> Vec<(f64, f64)> {
        t.iter()
            .filter(|s| pick(s).count > 0)
            .map(|s| (s.t as f64, q(pick(s)) as f64))
            .collect()
    };
    let mut charts = Vec::new();
    charts.push(chart(
        "Open connections",
        "connections",
        &[Series {
            name: "open",
            color: "#1f77b4",
            points: xy(&|s| s.open as f64),
        }],
        &|v| format!("{v:.0}"),
    ));
    charts.push(chart(
        "Per second",
        "per second",
        &[
            Series {
                name: "handshakes",
                color: "#2ca02c",
                points: xy(&|s| s.established as f64),
            },
            Series {
                name: "sent",
                color: "#ff7f0e",
                points: xy(&|s| s.sent as f64),
            },
            Series {
                name: "received",
                color: "#9467bd",
                points: xy(&|s| s.received as f64),
            },
            Series {
                name: "failed",
                color: "#d62728",
                points: xy(&|s| (s.failed + s.closed_early) as f64),
            },
        ],
        &|v| format!("{v:.0}"),
    ));
    let has_latency = t.iter().any(|s| s.latency.count > 0);
    let (lat_title, pick): (&str, fn(&crate::collect::Second) -> &crate::hist::Summary) =
        if has_latency {
            ("Message latency per second", |s| &s.latency)
        } else {
            ("Handshake latency per second", |s| &s.handshake)
        };
    charts.push(chart(
        lat_title,
        "latency",
        &[
            Series {
                name: "p50",
                color: "#2ca02c",
                points: measured(pick, |s| s.p50_us),
            },
            Series {
                name: "p99",
                color: "#ff7f0e",
                points: measured(pick, |s| s.p99_us),
            },
            Series {
                name: "max",
                color: "#d62728",
                points: measured(pick, |s| s.max_us),
            },
        ],
        &|v| fmt_us(v as u64),
    ));
    let mut cpu = vec![Series {
        name: "load generator",
        color: "#1f77b4",
        points: xy(&|s| s.cpu_pct),
    }];
    if r.memory.is_some() {
        cpu.push(Series {
            name: "server",
            color: "#ff7f0e",
            points: xy(&|s| s.server_cpu_pct),
        });
    }
    cpu.push(Series {
        name: "whole host",
        color: "#7f7f7f",
        points: xy(&|s| s.host_cpu_pct),
    });
    charts.push(chart("CPU", "% of one core", &cpu, &|v| format!("{v:.0}%")));
    const MIB: f64 = 1024.0 * 1024.0;
    let mut mem = vec![
        Series {
            name: "kernel slab",
            color: "#8c564b",
            points: xy(&|s| s.host.slab_bytes as f64 / MIB),
        },
        Series {
            name: "load generator RSS",
            color: "#1f77b4",
            points: xy(&|s| s.rss_bytes as f64 / MIB),
        },
    ];
    if r.memory.is_some() {
        mem.push(Series {
            name: "server RSS",
            color: "#ff7f0e",
            points: xy(&|s| s.host.server_rss_bytes as f64 / MIB),
        });
    }
    charts.push(chart("Memory", "MiB", &mem, &|v| format!("{v:.0}")));

    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>c10m-loadtest {}</title>\
         <style>body{{font-family:sans-serif;margin:24px;max-width:1000px}}\
         pre{{background:#f6f6f6;padding:12px;overflow-x:auto}}\
         .ok{{color:#2ca02c}}.failed{{color:#d62728}}svg{{display:block;margin:12px 0}}</style>\
         </head><body>",
        escape(r.settings.scenario)
    );
    let _ = write!(
        o,
        "<h1>c10m-loadtest {}: <span class=\"{}\">{}</span></h1>",
        escape(r.settings.scenario),
        if r.ok { "ok" } else { "failed" },
        if r.ok { "OK" } else { "FAILED" }
    );
    for chart in charts {
        o.push_str(&chart);
    }
    let _ = write!(o, "<h2>Report</h2><pre>{}</pre>", escape(&super::text(r)));
    o.push_str("</body></html>\n");
    o
}
