//! The Markdown view of a `Report`: one table per scenario, its ratios, the cross-check and
//! the machine notes, opening with the warning that these are ratios from one noisy run.
//!
//! Owns: presentation only. Must not: compute medians or ratios (`report` does).

use std::fmt::Write as _;

use crate::report::Report;

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".to_string(), |v| format!("{v:.digits$}"))
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# egressd benchmark, {}\n", r.date);
    let _ = writeln!(
        s,
        "Results are ratios from one run on a shared, noisy VM: compare targets within this file, \
         not absolute numbers across files. Each figure is the median of {} rounds.\n",
        r.layout.rounds
    );
    for sc in &r.scenarios {
        let _ = writeln!(s, "## {}\n", sc.name);
        let rate = sc
            .targets
            .iter()
            .find_map(|t| t.open_loop.as_ref().map(|l| l.rate));
        let _ = writeln!(
            s,
            "| target | peak req/s | CPU µs/req | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | note |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for t in &sc.targets {
            let l = t.open_loop.as_ref();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                opt(t.peak_rps, 0),
                opt(t.cpu_us_per_req, 1),
                opt(l.map(|l| l.p50_us), 0),
                opt(l.map(|l| l.p90_us), 0),
                opt(l.map(|l| l.p99_us), 0),
                opt(l.map(|l| l.p999_us), 0),
                opt(l.map(|l| l.max_us), 0),
                l.map_or("–".into(), |l| l.errors.to_string()),
                t.skipped
                    .as_deref()
                    .map_or(String::new(), |w| format!("skipped: {w}")),
            );
        }
        if sc.targets.iter().any(|t| t.gbit_per_s.is_some()) {
            let _ = writeln!(s, "\n| target | peak Gbit/s | CPU s/GB |\n|---|---|---|");
            for t in sc.targets.iter().filter(|t| t.skipped.is_none()) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    t.name,
                    opt(t.gbit_per_s, 2),
                    opt(t.cpu_s_per_gb, 3)
                );
            }
            let _ = writeln!(
                s,
                "\nEvery response has the same body, so the Gbit/s ratios equal the req/s ratios \
                 and the CPU/GB ratios the CPU/req ratios below."
            );
        }
        let _ = writeln!(
            s,
            "\nLatencies: open loop at {} req/s offered to every target ({}), measured from the \
             intended send time (corrected for coordinated omission). CPU: utime+stime of the \
             process under test over the peak window / completed requests (direct: the origin's).\n",
            opt(rate, 0),
            r.layout.open_loop_rate_basis
        );
        let _ = writeln!(
            s,
            "| ratio | req/s | CPU/req | p99 at same rate |\n|---|---|---|---|"
        );
        for (name, q) in &sc.ratios {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} |",
                opt(q.rps, 2),
                opt(q.cpu, 2),
                opt(q.p99_at_same_rate, 2)
            );
        }
        let _ = writeln!(
            s,
            "\nEvery measured window (to judge noise: the target CPU should be ~100% busy at peak, \
             and steal near 0):\n\n| target | mode | req/s | CPU µs/req | origin CPU µs/req | load generator CPU µs/req | target CPU busy % | steal % | errors |\n|---|---|---|---|---|---|---|---|---|"
        );
        for t in &sc.targets {
            for p in t.rounds.peak.iter().chain(&t.rounds.open_loop) {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                    t.name,
                    p.rate
                        .map_or("peak".to_string(), |r| format!("open {r:.0}/s")),
                    p.rps,
                    opt(p.cpu_us_per_req, 1),
                    opt(p.origin_cpu_us_per_req, 1),
                    opt(p.loadgen_cpu_us_per_req, 1),
                    opt(p.target_cpu_busy_pct, 0),
                    opt(p.target_cpu_steal_pct, 1),
                    p.errors,
                );
            }
        }
        if let Some(c) = &sc.cross_check {
            let _ = writeln!(
                s,
                "\nCross-check against {}: {} {} req/s, this load generator {} req/s{}.",
                c.target,
                c.tool,
                opt(c.wrk_rps, 0),
                opt(c.bench_rps, 0),
                c.error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            );
        }
        s.push('\n');
    }
    let m = &r.machine;
    let l = &r.layout;
    let _ = writeln!(s, "## Machine and layout\n");
    let _ = writeln!(
        s,
        "- CPU: {} × {} ({} usable), kernel {}, {} MiB RAM",
        m.cpu_model,
        m.cores,
        m.available_parallelism,
        m.kernel,
        m.mem_total_kb / 1024
    );
    let _ = writeln!(
        s,
        "- load average: {} at start, {} at end; run took {:.0} s",
        m.loadavg_start, m.loadavg_end, m.wall_s
    );
    let _ = writeln!(
        s,
        "- load generator on CPU {}; origin and the proxy under test on CPU {}",
        l.loadgen_cpu, l.target_cpu
    );
    let _ = writeln!(
        s,
        "- {} connections, {:.1} s warm-up + {:.1} s measured per phase, order {}",
        l.connections,
        l.warmup_s,
        l.duration_s,
        l.order.join(", ")
    );
    let _ = writeln!(
        s,
        "- request `{}`, response body {} bytes",
        l.request.escape_debug(),
        l.response_body_bytes
    );
    for (k, v) in l.tool_versions.iter().chain(&l.proxies) {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(s, "- CPU used during the run (top processes):");
    for p in &m.top_cpu_during_run {
        let _ = writeln!(
            s,
            "  - {} (pid {}): {:.2} s, {:.1}% of one CPU",
            p.comm, p.pid, p.cpu_s, p.cpu_pct
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}
