//! One measured cell, the table, the JSON lines and the SVG chart.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// One measured cell: a scenario, a path, a concurrency (and, for `worker`, a payment).
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub scenario: &'static str,
    pub path: &'static str,
    pub concurrency: u32,
    /// `worker` only: `reference` (50–200 ms) or `zero` (no payment delay).
    pub payment: Option<&'static str>,
    /// `worker` only: `process` (the worker binary) or `raw`.
    pub runner: Option<&'static str>,
    /// Server processes (`http`) or worker processes (`worker`, runner `process`) the
    /// cell ran on; 1 otherwise.
    pub processes: u32,
    /// Orders per second: accepted ones for hot/spread, terminal ones for worker.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Orders created (hot/spread) or PAID (worker).
    pub accepted: u64,
    /// Refused as a business outcome (stock, lock conflict, key in flight) or FAILED
    /// (worker: declined payments).
    pub rejected: u64,
    /// Anything else (a store failure, a transport error, a 5xx).
    pub errors: u64,
    pub seconds: f64,
    /// Throughput over the raw cell of the same scenario, concurrency (and payment).
    pub ratio: Option<f64>,
    /// SQL statements per order (`Questions` delta), when measured.
    pub statements_per_order: Option<f64>,
    /// The counters behind it, per order.
    pub statements_breakdown: Option<String>,
    /// worker: throughput / (in flight / 0.125 s) for the reference payment.
    pub ideal_fraction: Option<f64>,
    /// worker: the rate while every slot was busy (after the ramp, before the queue ran
    /// dry) / (in flight / 0.125 s), for the reference payment.
    pub steady_fraction: Option<f64>,
    pub invariants_ok: bool,
    pub invariants: String,
    /// Anything else worth a line (first error, coalescing stats, lock conflicts).
    pub note: String,
}

impl Cell {
    fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "path": self.path,
            "concurrency": self.concurrency,
            "payment": self.payment,
            "runner": self.runner,
            "processes": self.processes,
            "throughput": round(self.throughput, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "ratio": self.ratio.map(|r| round(r, 3)),
            "statements_per_order": self.statements_per_order.map(|s| round(s, 2)),
            "statements_breakdown": self.statements_breakdown,
            "ideal_fraction": self.ideal_fraction.map(|r| round(r, 3)),
            "steady_fraction": self.steady_fraction.map(|r| round(r, 3)),
            "invariants_ok": self.invariants_ok,
            "invariants": self.invariants,
            "note": self.note,
        })
    }

    fn key(&self) -> (&'static str, u32, Option<&'static str>) {
        (self.scenario, self.concurrency, self.payment)
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Every cell of the run, printed as it comes (JSON line or a progress line) and as a
/// table at the end.
#[derive(Debug)]
pub(crate) struct Report {
    json: bool,
    cells: Vec<Cell>,
}

impl Report {
    pub(crate) fn new(json: bool) -> Self {
        Self {
            json,
            cells: Vec::new(),
        }
    }

    /// The raw cell's throughput for `cell`'s scenario, concurrency and payment.
    pub(crate) fn raw_throughput(
        &self,
        scenario: &str,
        concurrency: u32,
        payment: Option<&str>,
    ) -> Option<f64> {
        self.cells
            .iter()
            .find(|c| {
                c.path == "raw"
                    && c.scenario == scenario
                    && c.concurrency == concurrency
                    && c.payment == payment
            })
            .map(|c| c.throughput)
    }

    /// Records a cell, computing its ratio to the raw cell measured before it.
    pub(crate) fn add(&mut self, mut cell: Cell) {
        let (scenario, concurrency, payment) = cell.key();
        cell.ratio = if cell.path == "raw" {
            Some(1.0)
        } else {
            self.raw_throughput(scenario, concurrency, payment)
                .filter(|raw| *raw > 0.0)
                .map(|raw| cell.throughput / raw)
        };
        if self.json {
            println!("{}", cell.json());
        }
        eprintln!("    {}", row(&cell));
        if !cell.note.is_empty() {
            eprintln!("      note: {}", cell.note);
        }
        if !cell.invariants_ok {
            eprintln!("      INVARIANTS FAILED: {}", cell.invariants);
        }
        self.cells.push(cell);
    }

    pub(crate) fn all_invariants_ok(&self) -> bool {
        self.cells.iter().all(|c| c.invariants_ok)
    }

    /// The whole table: on stdout, or on stderr when stdout carries JSON.
    pub(crate) fn print_table(&self) {
        let mut out = String::new();
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", header());
        let mut last = None;
        for cell in &self.cells {
            let group = (cell.scenario, cell.concurrency);
            if last.is_some() && last != Some(group) {
                let _ = writeln!(out);
            }
            last = Some(group);
            let _ = writeln!(out, "{}", row(cell));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "invariants per cell:");
        for cell in &self.cells {
            let _ = writeln!(
                out,
                "  {:<6} {:<17} {:>4} {:<9} {} {}",
                cell.scenario,
                cell.path,
                cell.concurrency,
                cell.payment.unwrap_or(""),
                if cell.invariants_ok { "OK  " } else { "FAIL" },
                cell.invariants
            );
        }
        let with_stmts: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.statements_breakdown.is_some())
            .collect();
        if !with_stmts.is_empty() {
            let _ = writeln!(
                out,
                "\nSQL statements per order (server-wide counters: other clients of the server add noise):"
            );
            for cell in with_stmts {
                let _ = writeln!(
                    out,
                    "  {:<6} {:<17} {:>4} {:<9} {:>6.2}  {}",
                    cell.scenario,
                    cell.path,
                    cell.concurrency,
                    cell.payment.unwrap_or(""),
                    cell.statements_per_order.unwrap_or(0.0),
                    cell.statements_breakdown.as_deref().unwrap_or("")
                );
            }
        }
        if self.json {
            eprint!("{out}");
        } else {
            print!("{out}");
        }
    }

    /// Throughput against concurrency, one panel per scenario, one line per path (and
    /// payment), as a self-contained SVG.
    pub(crate) fn svg(&self) -> String {
        let scenarios: Vec<&'static str> = ["hot", "spread", "worker"]
            .into_iter()
            .filter(|s| self.cells.iter().any(|c| c.scenario == *s))
            .collect();
        let (pw, ph) = (420.0, 300.0);
        let (ml, mr, mt, mb) = (64.0, 16.0, 36.0, 120.0);
        let width = (pw + ml + mr) * scenarios.len().max(1) as f64;
        let height = ph + mt + mb;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        const COLORS: [&str; 8] = [
            "#000000", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf",
        ];
        for (i, scenario) in scenarios.iter().enumerate() {
            let x0 = i as f64 * (pw + ml + mr) + ml;
            let cells: Vec<&Cell> = self
                .cells
                .iter()
                .filter(|c| c.scenario == *scenario)
                .collect();
            let mut xs: Vec<u32> = cells.iter().map(|c| c.concurrency).collect();
            xs.sort_unstable();
            xs.dedup();
            let ymax = nice_max(cells.iter().map(|c| c.throughput).fold(0.0, f64::max));
            let px = |c: u32| {
                let k = xs.iter().position(|x| *x == c).unwrap_or(0) as f64;
                let n = (xs.len().max(2) - 1) as f64;
                x0 + 20.0 + k * (pw - 40.0) / n
            };
            let py = |v: f64| mt + ph - v / ymax * ph;
            let title = match *scenario {
                "hot" => "hot: one product",
                "spread" => "spread: 1 000 products",
                _ => "worker drain (in flight)",
            };
            let _ = writeln!(
                s,
                r#"<text x="{}" y="20" font-size="13" font-weight="bold">{title}</text>"#,
                x0
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x0}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
            );
            for t in 0..=5 {
                let v = ymax * f64::from(t) / 5.0;
                let y = py(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text>"##,
                    x0 + pw,
                    x0 - 4.0,
                    y + 4.0,
                    v
                );
            }
            for x in &xs {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
                    px(*x),
                    mt + ph + 14.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x0 + pw / 2.0,
                mt + ph + 28.0,
                if *scenario == "worker" {
                    "jobs in flight"
                } else {
                    "concurrent clients"
                }
            );
            let _ = writeln!(
                s,
                r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">orders/s</text>"#,
                x0 - 48.0,
                mt + ph / 2.0
            );
            let mut series: Vec<(String, Vec<(u32, f64)>)> = Vec::new();
            for c in &cells {
                let path = if c.processes > 1 {
                    format!("{} x{}", c.path, c.processes)
                } else {
                    c.path.to_owned()
                };
                let name = match (c.runner, c.payment) {
                    (Some(r), Some(p)) => format!("{path} ({r}, payment {p})"),
                    _ => path,
                };
                match series.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, points)) => points.push((c.concurrency, c.throughput)),
                    None => series.push((name, vec![(c.concurrency, c.throughput)])),
                }
            }
            for (k, (name, points)) in series.iter().enumerate() {
                let color = COLORS[k % COLORS.len()];
                let pts: Vec<String> = points
                    .iter()
                    .map(|(c, v)| format!("{:.1},{:.1}", px(*c), py(*v)))
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                    pts.join(" ")
                );
                for (c, v) in points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                        px(*c),
                        py(*v)
                    );
                }
                let ly = mt + ph + 44.0 + k as f64 * 14.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                    ly - 4.0,
                    x0 + 18.0,
                    ly - 4.0,
                    x0 + 24.0,
                    ly,
                    escape(name)
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round axis maximum above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn header() -> String {
    format!(
        "{:<6} {:<17} {:>4} {:<9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>5} {:>6} {:>6} {:>4}",
        "scen",
        "path",
        "C",
        "payment",
        "orders/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "accepted",
        "rejectd",
        "errs",
        "ratio",
        "stmt/o",
        "inv"
    )
}

fn row(c: &Cell) -> String {
    format!(
        "{:<6} {:<17} {:>4} {:<9} {:>9.0} {:>8.2} {:>8.2} {:>8.1} {:>8} {:>7} {:>5} {:>6} {:>6} {:>4}",
        c.scenario,
        if c.processes > 1 {
            format!("{}x{}", c.path, c.processes)
        } else {
            c.path.to_owned()
        },
        c.concurrency,
        c.payment.map_or(String::new(), |p| match c.runner {
            Some(r) => format!("{p}/{}", &r[..1]),
            None => p.to_owned(),
        }),
        c.throughput,
        c.p50_ms,
        c.p99_ms,
        c.max_ms,
        c.accepted,
        c.rejected,
        c.errors,
        c.ratio.map_or("-".to_owned(), |r| format!("{r:.2}")),
        c.statements_per_order
            .map_or("-".to_owned(), |s| format!("{s:.1}")),
        if c.invariants_ok { "OK" } else { "FAIL" }
    )
}
