//! The `worker` scenario: N orders placed beforehand, then drained until every one is
//! terminal — by one `worker` process, or by a raw-SQL loop (CAS start, ledger insert,
//! CAS pay) at the same concurrency over as many database connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use order_engine::Engine;
use order_engine::core::app::{
    CreateOrderRequest, ErrorChain, LockMode, LockPolicy, ServiceConfig,
};
use order_engine::core::domain::{ProductId, UserId};
use order_engine::mysql::{MySqlOrderRepository, MySqlPool};
use order_engine::payment_sim::SimConfig;
use order_engine::redis::{RedisConfig, RedisConnection};

use crate::db::{self, Counters};
use crate::http::Process;
use crate::report::{Cell, Report};
use crate::{AnyError, Run, micros, percentiles};

/// The reference payment's mean delay (uniform 50–200 ms): the ideal drain rate of
/// `in_flight` jobs is `in_flight / MEAN_DELAY`.
const MEAN_DELAY: f64 = 0.125;
/// Products the pre-placed orders are spread over (so the drain measures the worker
/// path, not a hot row).
const PRODUCTS: u32 = 1_000;
/// Users the pre-placed orders are spread over (each user's event sequence is a row).
const USERS: usize = 256;

/// Runs the worker scenario at each `--worker-concurrency`, adding each cell to `report`.
pub(crate) async fn scenario(run: &Arc<Run>, report: &mut Report) -> Result<(), AnyError> {
    let args = &run.args;
    run.progress(&format!(
        "worker: database {} (fresh), {} orders per drain",
        db::database_name(&run.worker_url)?,
        args.worker_orders
    ));
    let admin = db::fresh_database(&run.worker_url).await?;
    let users = Arc::new(db::create_users(&admin, run.tag, USERS).await?);
    let delay_vars = payment_delay_settings(run).await;
    if delay_vars.is_empty() {
        run.progress(
            "worker: the worker binary exposes no payment-delay setting (`worker --help` \
             names none): its drain runs with the reference payment (50-200 ms) only",
        );
    } else {
        run.progress(&format!(
            "worker: payment delay set to 0 through {}",
            delay_vars.join(", ")
        ));
    }
    let mut in_flight: Vec<u16> = args.worker_concurrency.clone();
    in_flight.sort_unstable();
    in_flight.dedup();
    for c in in_flight {
        let mut kinds = vec![
            Kind::Raw { reference: false },
            Kind::Raw { reference: true },
        ];
        let mut processes = args.worker_processes.clone();
        processes.sort_unstable();
        processes.dedup();
        kinds.extend(processes.iter().map(|&processes| Kind::Process {
            reference: true,
            processes,
        }));
        if !delay_vars.is_empty() {
            kinds.push(Kind::Process {
                reference: false,
                processes: 1,
            });
        }
        for kind in kinds {
            let cell = measure(run, &admin, &users, c, kind, &delay_vars).await?;
            report.add(cell);
        }
    }
    admin.close().await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Raw {
        reference: bool,
    },
    /// `processes` worker processes, each with the cell's in-flight count.
    Process {
        reference: bool,
        processes: u16,
    },
}

/// The `ORDERS_*` variables of the worker binary that set a payment delay (empty when
/// it has none).
async fn payment_delay_settings(run: &Run) -> Vec<String> {
    let binary = run.args.bin_dir.join("worker");
    let Ok(output) = tokio::process::Command::new(&binary)
        .arg("--help")
        .output()
        .await
    else {
        return Vec::new();
    };
    let help = String::from_utf8_lossy(&output.stdout);
    let mut vars: Vec<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("ORDERS_PAYMENT") && w.contains("DELAY"))
        .map(str::to_owned)
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

async fn measure(
    run: &Arc<Run>,
    admin: &MySqlPool,
    users: &Arc<Vec<u64>>,
    in_flight: u16,
    kind: Kind,
    delay_vars: &[String],
) -> Result<Cell, AnyError> {
    let args = &run.args;
    let cell = run.next_cell();
    let products = db::create_products(admin, cell, PRODUCTS, 1_000).await?;
    let (runner, reference, processes) = match kind {
        Kind::Raw { reference } => ("raw", reference, 1),
        Kind::Process {
            reference,
            processes,
        } => ("process", reference, processes),
    };
    let payment = if reference { "reference" } else { "zero" };
    let label = format!(
        "worker in-flight={in_flight} {runner}{} payment={payment}",
        if processes > 1 {
            format!(" x{processes}")
        } else {
            String::new()
        }
    );
    run.progress(&format!(
        "{label}: placing {} orders ...",
        args.worker_orders
    ));
    let ids = place(
        run,
        admin,
        cell,
        &products,
        users,
        args.worker_orders as usize,
    )
    .await?;
    let (first, last) = match (ids.first(), ids.last()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => return Err("no orders placed".into()),
    };
    // The drain is counted by id range: it must hold exactly this cell's orders. (Ids
    // may have gaps — a rolled-back or retried batch insert uses up auto-increment
    // values — but the cells place their orders one after the other.)
    let (in_range,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM orders WHERE id BETWEEN ? AND ?")
            .bind(first)
            .bind(last)
            .fetch_one(admin)
            .await?;
    if in_range != ids.len() as i64 {
        return Err(format!(
            "{in_range} orders in the id range of this cell's {} pre-placed ones",
            ids.len()
        )
        .into());
    }
    run.progress(&format!("{label}: draining ..."));
    let n = ids.len() as u64;
    let connections = args.worker_db_connections;

    let before = Counters::read(admin).await.ok();
    let (seconds, mut latencies, timeline, own, note) = match kind {
        Kind::Raw { reference } => {
            let pool = order_engine::mysql::connect(&run.worker_url, connections).await?;
            let (seconds, latencies, timeline, failures) =
                raw_drain(&pool, Arc::new(ids), usize::from(in_flight), reference).await;
            pool.close().await;
            let note = failures.map_or(String::new(), |e| format!("first error: {e}"));
            (seconds, latencies, timeline, 1, note)
        }
        Kind::Process { reference, .. } => {
            let mut envs = vec![
                ("DATABASE_URL", run.worker_url.clone()),
                ("REDIS_URL", args.redis_url.clone()),
                ("ORDERS_REDIS_PREFIX", run.cell_prefix(cell)),
                ("ORDERS_DB_MAX_CONNECTIONS", connections.to_string()),
            ];
            if !reference {
                envs.extend(delay_vars.iter().map(|v| (v.as_str(), "0".to_owned())));
            }
            let concurrency = in_flight.to_string();
            let mut workers = Vec::with_capacity(usize::from(processes));
            for i in 0..processes {
                let log =
                    std::env::temp_dir().join(format!("loadgen-{}-worker-{cell}-{i}.log", run.tag));
                workers.push(
                    Process::spawn(
                        &args.bin_dir.join("worker"),
                        &["--concurrency", &concurrency, "--listen", "127.0.0.1:0"],
                        &envs,
                        log,
                    )
                    .await?,
                );
            }
            let started = Instant::now();
            let started_wall_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            let started_wall = started_wall_us / 1000;
            let timeout = Duration::from_secs(120.max(n / 50));
            let mut polls = 0u64;
            let mut most_processing = 0i64;
            let mut note = String::new();
            loop {
                // The orders still open, and of those how many are Processing: a worker
                // process holds at most its in-flight count, which the polls check.
                let (open, processing): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(status = 'PROCESSING'), 0) AS SIGNED) \
                     FROM orders WHERE id BETWEEN ? AND ? \
                     AND status IN ('PENDING', 'PROCESSING')",
                )
                .bind(first)
                .bind(last)
                .fetch_one(admin)
                .await?;
                most_processing = most_processing.max(processing);
                polls += 1;
                if open == 0 {
                    break;
                }
                let dead = workers.iter_mut().position(|w| !w.alive());
                if started.elapsed() > timeout || dead.is_some() {
                    note = format!(
                        "{} orders still open after {:.0} s{} (worker stderr: {})",
                        open,
                        started.elapsed().as_secs_f64(),
                        if dead.is_some() {
                            ", a worker exited"
                        } else {
                            ""
                        },
                        workers
                            .iter()
                            .map(|w| w.log.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    break;
                }
                if run.live() {
                    eprint!(
                        "\r    {label}: {:>4.1} s, {} open   ",
                        started.elapsed().as_secs_f64(),
                        open
                    );
                }
                // Seldom: each poll counts a range of the orders table on the server
                // the worker is measured on. The drain's end is read from the orders
                // themselves below, so the poll period adds nothing to it.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            // The drain ended with the last terminal write: its `updated_at`, on the
            // same machine's clock as `started_wall` (the worker stamps it).
            let last_write: (Option<i64>,) = sqlx::query_as(
                "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', MAX(updated_at)) \
                 DIV 1000 AS SIGNED) FROM orders WHERE id BETWEEN ? AND ?",
            )
            .bind(first)
            .bind(last)
            .fetch_one(admin)
            .await?;
            let polled = started.elapsed().as_secs_f64();
            let seconds = match last_write.0 {
                Some(ms) if note.is_empty() => {
                    ((ms as f64 - started_wall as f64) / 1000.0).clamp(0.001, polled)
                }
                _ => polled,
            };
            if run.live() {
                eprint!("\r{:60}\r", "");
            }
            // Counted before the process is stopped: its shutdown is not the drain.
            let after_drain = Counters::read(admin).await.ok();
            for worker in workers {
                worker.stop().await;
            }
            let (latencies, timeline) = from_events(admin, first, last, started_wall_us).await?;
            let held = format!(
                "at most {most_processing} orders Processing at a poll ({polls} polls; {} in flight)",
                u32::from(in_flight) * u32::from(processes)
            );
            let note = if note.is_empty() {
                held
            } else {
                format!("{note}; {held}")
            };
            let own = polls + 2;
            return finish(
                admin,
                cell,
                in_flight,
                processes,
                runner,
                payment,
                reference,
                n,
                seconds,
                latencies,
                timeline,
                before,
                after_drain,
                own,
                note,
                first,
                last,
            )
            .await;
        }
    };
    let after = Counters::read(admin).await.ok();
    latencies.sort_unstable();
    finish(
        admin, cell, in_flight, processes, runner, payment, reference, n, seconds, latencies,
        timeline, before, after, own, note, first, last,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    admin: &MySqlPool,
    cell: u32,
    in_flight: u16,
    processes: u16,
    runner: &'static str,
    payment: &'static str,
    reference: bool,
    n: u64,
    seconds: f64,
    mut latencies: Vec<u32>,
    timeline: Timeline,
    before: Option<Counters>,
    after: Option<Counters>,
    own: u64,
    note: String,
    first: u64,
    last: u64,
) -> Result<Cell, AnyError> {
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CAST(status AS CHAR), COUNT(*) FROM orders WHERE id BETWEEN ? AND ? GROUP BY status",
    )
    .bind(first)
    .bind(last)
    .fetch_all(admin)
    .await?;
    let count = |s: &str| {
        statuses
            .iter()
            .find(|(k, _)| k == s)
            .map_or(0, |(_, v)| u64::try_from(*v).unwrap_or(0))
    };
    let (paid, failed) = (count("PAID"), count("FAILED"));
    let open = count("PENDING") + count("PROCESSING");
    let mut invariants = db::check_cell(admin, cell, Some(n)).await?;
    if open > 0 {
        invariants.ok = false;
        invariants
            .summary
            .push_str(&format!(", {open} ORDERS NOT TERMINAL"));
    } else {
        invariants.summary.push_str(", all terminal");
    }
    match order_engine::mysql::audit::charges(admin).await {
        Ok(v) if v.is_empty() => invariants.summary.push_str(", PAID iff approved charge"),
        Ok(v) => {
            invariants.ok = false;
            invariants.summary.push_str(&format!(
                ", {} CHARGE VIOLATIONS (first: {})",
                v.len(),
                v[0]
            ));
        }
        Err(e) => {
            invariants.ok = false;
            invariants
                .summary
                .push_str(&format!(", charge audit failed: {}", ErrorChain(&e)));
        }
    }
    let (p50, p99, max) = percentiles(&mut latencies);
    let statements = match (before, after) {
        (Some(b), Some(a)) => Some(a.per_order(&b, own, n)),
        _ => None,
    };
    let throughput = (paid + failed) as f64 / seconds;
    // Each process holds `in_flight` jobs.
    let ideal = f64::from(in_flight) * f64::from(processes) / MEAN_DELAY;
    let steady = timeline.steady_rate().filter(|_| reference);
    Ok(Cell {
        scenario: "worker",
        path: if runner == "raw" {
            "raw"
        } else {
            "service-redis"
        },
        concurrency: u32::from(in_flight),
        payment: Some(payment),
        runner: Some(runner),
        processes: u32::from(processes),
        throughput,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        accepted: paid,
        rejected: failed,
        errors: n - paid - failed,
        seconds,
        ratio: None,
        statements_per_order: statements.as_ref().map(|s| s.statements()),
        statements_breakdown: statements.as_ref().map(|s| s.breakdown()),
        ideal_fraction: reference.then_some(throughput / ideal),
        steady_fraction: steady.map(|rate| rate / ideal),
        invariants_ok: invariants.ok,
        invariants: invariants.summary,
        note: if reference {
            let mut s = format!(
                "ideal {ideal:.0}/s (in flight / 125 ms): {:.0} % of it over the whole drain",
                100.0 * throughput / ideal
            );
            if let Some(rate) = steady {
                s.push_str(&format!(
                    ", {:.0} % while every slot was busy ({rate:.0}/s)",
                    100.0 * rate / ideal
                ));
            }
            if !note.is_empty() {
                s.push_str("; ");
                s.push_str(&note);
            }
            s
        } else {
            note
        },
    })
}

/// Places `n` single-line orders through `create_order` (no distributed lock) on the
/// worker database, with their jobs queued under cell `cell`'s Redis prefix; returns
/// their ids, ascending.
async fn place(
    run: &Run,
    admin: &MySqlPool,
    cell: u32,
    products: &[u64],
    users: &Arc<Vec<u64>>,
    n: usize,
) -> Result<Vec<u64>, AnyError> {
    const CLIENTS: usize = 32;
    let pool = order_engine::mysql::connect(&run.worker_url, CLIENTS as u32 + 2).await?;
    let config = RedisConfig::new(run.args.redis_url.clone()).with_prefix(run.cell_prefix(cell));
    let redis = RedisConnection::connect(config).await?;
    let engine = Engine::builder()
        .repository(Arc::new(MySqlOrderRepository::new(pool.clone())))
        .redis(&redis)
        .simulated_payments(SimConfig::default())
        .config(ServiceConfig {
            lock: LockPolicy {
                mode: LockMode::None,
                ..LockPolicy::default()
            },
            ..ServiceConfig::default()
        })
        .build()
        .await?;
    let service = engine.service().clone();
    let next = Arc::new(AtomicUsize::new(0));
    let products = Arc::new(products.to_vec());
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (service, next, products, users) = (
            service.clone(),
            next.clone(),
            products.clone(),
            users.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, String>(());
                }
                let user = UserId::new(users[i % users.len()]).map_err(|e| e.to_string())?;
                let product =
                    ProductId::new(products[i % products.len()]).map_err(|e| e.to_string())?;
                let request =
                    CreateOrderRequest::new(user, [(product, 1)], format!("lgw{cell}-{i}"));
                service
                    .create_order(request)
                    .await
                    .map_err(|e| format!("placing order {i}: {}", ErrorChain(&e)))?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    drop(service);
    drop(engine);
    pool.close().await;
    let ids: Vec<(u64,)> = sqlx::query_as(
        "SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id \
         JOIN products p ON p.id = i.product_id WHERE p.name LIKE ? ORDER BY o.id",
    )
    .bind(format!("{}%", db::product_prefix(cell)))
    .fetch_all(admin)
    .await?;
    if ids.len() != n {
        return Err(format!("placed {n} orders, found {}", ids.len()).into());
    }
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The raw drain: `tasks` tasks take the next order id and run CAS start, ledger insert
/// (during the reference payment's 50–200 ms sleep, as the simulated provider writes its
/// ledger), CAS pay — three autocommitted statements.
/// Returns the seconds until the last one is PAID, per-order latencies, the timeline and
/// the first error.
async fn raw_drain(
    pool: &MySqlPool,
    ids: Arc<Vec<u64>>,
    tasks: usize,
    reference: bool,
) -> (f64, Vec<u32>, Timeline, Option<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (pool, ids, next, failures) =
            (pool.clone(), ids.clone(), next.clone(), failures.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ ((task as u64 + 1) << 20);
            let mut latencies = Vec::new();
            let mut timeline = Timeline::default();
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&id) = ids.get(i) else {
                    break;
                };
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let token = rng >> 1;
                let t = Instant::now();
                let delay = reference.then(|| Duration::from_millis(50 + rng % 151));
                match raw_process(&pool, id, token, delay).await {
                    Ok(start_done) => {
                        latencies.push(micros(t.elapsed()));
                        timeline.started(micros_since(started, start_done));
                        timeline.done.push(micros_since(started, Instant::now()));
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert_with(|| format!("raw drain, order {id}: {e}"));
                    }
                }
            }
            (latencies, timeline, first_error)
        }));
    }
    let mut latencies = Vec::new();
    let mut timeline = Timeline::default();
    let mut first_error = None;
    for handle in handles {
        match handle.await {
            Ok((l, t, e)) => {
                latencies.extend(l);
                timeline.merge(t);
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("raw drain task: {e}"));
            }
        }
    }
    (
        started.elapsed().as_secs_f64(),
        latencies,
        timeline,
        first_error,
    )
}

/// One order through the raw drain; returns when its start committed.
async fn raw_process(
    pool: &MySqlPool,
    id: u64,
    token: u64,
    delay: Option<Duration>,
) -> Result<Instant, AnyError> {
    let started = sqlx::query(
        "UPDATE orders SET status = 'PROCESSING', lease_token = ?, \
         lease_until = UTC_TIMESTAMP(3) + INTERVAL 30 SECOND, attempts = attempts + 1, \
         updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND status = 'PENDING'",
    )
    .bind(token)
    .bind(id)
    .execute(pool)
    .await?;
    if started.rows_affected() != 1 {
        return Err("not PENDING".into());
    }
    let start_done = Instant::now();
    // As in the simulated provider, the ledger insert runs during the payment's delay.
    let record = sqlx::query(
        "INSERT INTO payments (order_id, amount, outcome) VALUES (?, 9.99, 'APPROVED')",
    )
    .bind(id)
    .execute(pool);
    let wait = async {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    };
    tokio::join!(record, wait).0?;
    let paid = sqlx::query(
        "UPDATE orders SET status = 'PAID', lease_token = NULL, lease_until = NULL, \
         updated_at = UTC_TIMESTAMP(3) WHERE id = ? AND status = 'PROCESSING' AND lease_token = ?",
    )
    .bind(id)
    .bind(token)
    .execute(pool)
    .await?;
    if paid.rows_affected() != 1 {
        return Err("lost the PAID compare-and-set".into());
    }
    Ok(start_done)
}

/// When a drain's orders were started and finished, in µs from the drain's start: what
/// its steady rate is read from.
#[derive(Debug, Default)]
struct Timeline {
    /// The last start: the queue ran dry then (every order had been taken), and from
    /// then on fewer and fewer orders are in flight.
    dry: i64,
    /// Each order's finish.
    done: Vec<i64>,
}

impl Timeline {
    fn started(&mut self, at: i64) {
        self.dry = self.dry.max(at);
    }

    fn merge(&mut self, other: Timeline) {
        self.dry = self.dry.max(other.dry);
        self.done.extend(other.done);
    }

    /// Orders per second finished while every slot was busy: after the ramp (from the
    /// finish of the first tenth of the orders) until the queue ran dry. The whole
    /// drain's rate also counts its last wave, in which slots fall idle one by one —
    /// even a worker with no overhead at all loses `E[age] ≈ 70 ms` of every slot there
    /// (the mean time left of a payment in progress), ~3 % of a 5-second drain — while
    /// the ideal (in flight / 125 ms) is the rate with every slot busy. `None` when the
    /// window is empty.
    fn steady_rate(mut self) -> Option<f64> {
        self.done.sort_unstable();
        let from = self.done.len() / 10;
        let t1 = *self.done.get(from)?;
        let until = self.done.partition_point(|&t| t <= self.dry);
        if until <= from + 1 || self.dry <= t1 {
            return None;
        }
        Some((until - from - 1) as f64 / ((self.dry - t1) as f64 / 1e6))
    }
}

/// µs from `origin` to `at`.
fn micros_since(origin: Instant, at: Instant) -> i64 {
    i64::try_from(at.saturating_duration_since(origin).as_micros()).unwrap_or(i64::MAX)
}

/// From the events of the orders `first..=last` drained by worker processes (stamped by
/// the workers' clock, the same machine's as `origin_us`, µs since the epoch), in one
/// read: each order's latency, from its first `order.processing` to its last
/// `order.paid` / `order.failed` (µs), and the drain's timeline (starts from the last
/// `order.processing` of each order, finishes from the terminal events).
async fn from_events(
    pool: &MySqlPool,
    first: u64,
    last: u64,
    origin_us: i64,
) -> Result<(Vec<u32>, Timeline), AnyError> {
    let rows: Vec<(Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT \
           CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', \
                MIN(CASE WHEN kind = 'order.processing' THEN at END)) AS SIGNED), \
           CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', \
                MAX(CASE WHEN kind = 'order.processing' THEN at END)) AS SIGNED), \
           CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', \
                MAX(CASE WHEN kind IN ('order.paid', 'order.failed') THEN at END)) AS SIGNED) \
         FROM order_events WHERE order_id BETWEEN ? AND ? GROUP BY order_id",
    )
    .bind(first)
    .bind(last)
    .fetch_all(pool)
    .await?;
    let mut latencies = Vec::with_capacity(rows.len());
    let mut timeline = Timeline::default();
    for (first_start, last_start, done) in rows {
        if let Some(start) = last_start {
            timeline.started(start - origin_us);
        }
        if let Some(done) = done {
            timeline.done.push(done - origin_us);
            if let Some(start) = first_start {
                latencies.push(u32::try_from((done - start).max(0)).unwrap_or(u32::MAX));
            }
        }
    }
    Ok((latencies, timeline))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drain with no overhead at all: `slots` slots, each taking the next of `n` jobs
    /// the moment its last one ends, every job a uniform 50–200 ms (the reference
    /// payment). Returns the whole drain's rate and its timeline.
    fn drain_without_overhead(n: usize, slots: usize) -> (f64, Timeline) {
        let mut free = std::collections::BinaryHeap::new();
        for _ in 0..slots {
            free.push(std::cmp::Reverse(0i64));
        }
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut timeline = Timeline::default();
        let mut end = 0;
        for _ in 0..n {
            let Some(std::cmp::Reverse(start)) = free.pop() else {
                unreachable!("a slot is always free again")
            };
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let done = start + 50_000 + (rng % 150_001) as i64;
            timeline.started(start);
            timeline.done.push(done);
            end = end.max(done);
            free.push(std::cmp::Reverse(done));
        }
        (n as f64 / (end as f64 / 1e6), timeline)
    }

    #[test]
    fn a_drain_without_overhead_is_steady_at_the_ideal_but_loses_its_last_wave() {
        let ideal = 256.0 / MEAN_DELAY;
        let (whole, timeline) = drain_without_overhead(10_000, 256);
        let steady = timeline.steady_rate().map(|rate| rate / ideal);
        // The last wave: every slot falls idle for the time left of the payments
        // around it; ~3 % of a 5-second drain.
        assert!(
            (0.95..0.985).contains(&(whole / ideal)),
            "whole drain at {:.3} of the ideal",
            whole / ideal
        );
        assert!(
            steady.is_some_and(|s| (0.99..1.01).contains(&s)),
            "steady rate at {steady:?} of the ideal"
        );
    }

    #[test]
    fn an_empty_or_instant_drain_has_no_steady_rate() {
        assert_eq!(Timeline::default().steady_rate(), None);
        let one = Timeline {
            dry: 0,
            done: vec![5],
        };
        assert_eq!(one.steady_rate(), None);
    }
}
