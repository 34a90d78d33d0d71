//! Database plumbing: the run's databases, users and products, the invariant check of a
//! cell, and the server's statement counters.

use std::collections::BTreeMap;

use order_engine::mysql::MySqlPool;
use sqlx::migrate::MigrateDatabase;
use sqlx::{AssertSqlSafe, MySql};

use crate::AnyError;

/// The database name in a `mysql://…/name?…` URL.
pub(crate) fn database_name(url: &str) -> Result<String, AnyError> {
    let (_, name, _) = split(url)?;
    Ok(name.to_owned())
}

/// `url` with its database name replaced by `name`.
pub(crate) fn with_database(url: &str, name: &str) -> Result<String, AnyError> {
    let (head, _, tail) = split(url)?;
    Ok(format!("{head}/{name}{tail}"))
}

fn split(url: &str) -> Result<(&str, &str, &str), AnyError> {
    let scheme_end = url.find("://").ok_or("DATABASE_URL has no scheme")? + 3;
    let slash = url[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .ok_or("DATABASE_URL names no database")?;
    let rest = &url[slash + 1..];
    let end = rest.find('?').unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() {
        return Err("DATABASE_URL names no database".into());
    }
    Ok((&url[..slash], name, &rest[end..]))
}

/// Creates the database of `url` afresh (dropping a leftover of the same name), migrates
/// it, and returns a small pool on it for setup and checks.
pub(crate) async fn fresh_database(url: &str) -> Result<MySqlPool, AnyError> {
    if MySql::database_exists(url).await? {
        MySql::drop_database(url).await?;
    }
    MySql::create_database(url).await?;
    let pool = order_engine::mysql::connect(url, 3).await?;
    order_engine::mysql::migrate(&pool).await?;
    Ok(pool)
}

/// Drops the database of `url` if it exists.
pub(crate) async fn drop_database(url: &str) -> Result<(), AnyError> {
    if MySql::database_exists(url).await? {
        MySql::drop_database(url).await?;
    }
    Ok(())
}

/// Adds `n` users (`lg-<tag>-<i>@example.com`) and returns their ids in order. Their
/// password hash is alice's when the demo accounts are there (so they log in with the
/// demo password over HTTP), else one that matches no password.
pub(crate) async fn create_users(
    pool: &MySqlPool,
    tag: u64,
    n: usize,
) -> Result<Vec<u64>, AnyError> {
    let hash: Option<(String,)> =
        sqlx::query_as("SELECT password_hash FROM users WHERE email = 'alice@example.com'")
            .fetch_optional(pool)
            .await?;
    let hash = hash.map_or_else(|| "!".to_owned(), |(h,)| h);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let sql = format!(
            "INSERT INTO users (name, email, password_hash) VALUES {}",
            vec!["(?, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for i in chunk {
            query = query
                .bind(format!("loadgen {i}"))
                .bind(user_email(tag, *i))
                .bind(hash.clone());
        }
        query.execute(pool).await?;
    }
    let ids: Vec<(u64,)> = sqlx::query_as("SELECT id FROM users WHERE email LIKE ? ORDER BY id")
        .bind(format!("lg-{tag}-%"))
        .fetch_all(pool)
        .await?;
    if ids.len() != n {
        return Err(format!("created {n} users but found {}", ids.len()).into());
    }
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The e-mail of the `i`-th user of run `tag`.
pub(crate) fn user_email(tag: u64, i: usize) -> String {
    format!("lg-{tag}-{i:04}@example.com")
}

/// The name prefix of cell `cell`'s products (a `LIKE` pattern with `%` appended).
pub(crate) fn product_prefix(cell: u32) -> String {
    format!("lg{cell}-")
}

/// Adds `n` products named `lg<cell>-<i>` at 9.99 with `stock` each (what came in:
/// `stock_received = stock`) and returns their ids in order.
pub(crate) async fn create_products(
    pool: &MySqlPool,
    cell: u32,
    n: u32,
    stock: u32,
) -> Result<Vec<u64>, AnyError> {
    let prefix = product_prefix(cell);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let sql = format!(
            "INSERT INTO products (name, price, stock, stock_received) VALUES {}",
            vec!["(?, 9.99, ?, ?)"; chunk.len()].join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for i in chunk {
            query = query
                .bind(format!("{prefix}{i}"))
                .bind(stock)
                .bind(u64::from(stock));
        }
        query.execute(pool).await?;
    }
    let ids: Vec<(u64,)> = sqlx::query_as("SELECT id FROM products WHERE name LIKE ? ORDER BY id")
        .bind(format!("{prefix}%"))
        .fetch_all(pool)
        .await?;
    if ids.len() != n as usize {
        return Err(format!("created {n} products but found {}", ids.len()).into());
    }
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// The invariant check of one cell, over the cell's own products.
#[derive(Debug, Clone)]
pub(crate) struct Invariants {
    /// Every check passed.
    pub ok: bool,
    /// One line: each check and its result (the first offender of a failed one).
    pub summary: String,
}

/// Per product of cell `cell`: no oversell (the units held by PENDING/PROCESSING/PAID
/// orders never exceed what came in, `stock` never above it), conservation
/// (`stock_received = stock + held`), and — when `expected_orders` is given — that the
/// orders on these products are exactly those the clients saw accepted.
///
/// The raw path keeps the same rule: its products get `stock_received = stock` when
/// created and its orders are PENDING with one line, so `initial stock = stock + Σ its
/// orders' quantities` is this very check.
pub(crate) async fn check_cell(
    pool: &MySqlPool,
    cell: u32,
    expected_orders: Option<u64>,
) -> Result<Invariants, AnyError> {
    let rows: Vec<(u64, u32, u64, u64, i64)> = sqlx::query_as(
        "SELECT p.id, p.stock, p.stock_received, \
                CAST(COALESCE(SUM(CASE WHEN o.status IN ('PENDING', 'PROCESSING', 'PAID') \
                                       THEN i.quantity ELSE 0 END), 0) AS UNSIGNED), \
                COUNT(o.id) \
         FROM products p \
         LEFT JOIN order_items i ON i.product_id = p.id \
         LEFT JOIN orders o ON o.id = i.order_id \
         WHERE p.name LIKE ? \
         GROUP BY p.id, p.stock, p.stock_received",
    )
    .bind(format!("{}%", product_prefix(cell)))
    .fetch_all(pool)
    .await?;
    let mut oversold = Vec::new();
    let mut not_conserved = Vec::new();
    let mut orders = 0u64;
    for &(id, stock, received, held, count) in &rows {
        orders += u64::try_from(count).unwrap_or(0);
        if held > received || u64::from(stock) > received {
            oversold.push(format!(
                "product {id}: received {received}, held {held}, stock {stock}"
            ));
        }
        if received != u64::from(stock) + held {
            not_conserved.push(format!(
                "product {id}: received {received} != stock {stock} + held {held}"
            ));
        }
    }
    let mut parts = Vec::new();
    let mut ok = !rows.is_empty();
    if rows.is_empty() {
        parts.push("NO PRODUCTS FOUND".to_owned());
    }
    parts.push(match oversold.first() {
        None => "no oversell".to_owned(),
        Some(first) => {
            ok = false;
            format!("OVERSOLD on {} products ({first})", oversold.len())
        }
    });
    parts.push(match not_conserved.first() {
        None => "conserved".to_owned(),
        Some(first) => {
            ok = false;
            format!(
                "NOT CONSERVED on {} products ({first})",
                not_conserved.len()
            )
        }
    });
    if let Some(expected) = expected_orders {
        if orders == expected {
            parts.push(format!("orders = accepted ({orders})"));
        } else {
            ok = false;
            parts.push(format!("ORDERS {orders} != ACCEPTED {expected}"));
        }
    }
    Ok(Invariants {
        ok,
        summary: parts.join(", "),
    })
}

/// The statement counters read from `SHOW GLOBAL STATUS`.
pub(crate) const COUNTERS: [&str; 9] = [
    "Questions",
    "Com_select",
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_begin",
    "Com_commit",
    "Com_rollback",
    "Com_stmt_execute",
];

/// A snapshot of [`COUNTERS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// Reads the server-wide counters (every client of the server counts: noise).
    pub(crate) async fn read(pool: &MySqlPool) -> Result<Self, AnyError> {
        let sql = format!(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ({})",
            COUNTERS
                .iter()
                .map(|c| format!("'{c}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows: Vec<(String, String)> =
            sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await?;
        Ok(Self(
            rows.into_iter()
                .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
                .collect(),
        ))
    }

    /// `self - before` per counter, `own` statements of this program subtracted from
    /// `Questions`, each divided by `orders`.
    pub(crate) fn per_order(&self, before: &Counters, own: u64, orders: u64) -> PerOrder {
        let delta = |name: &str| {
            let d = self
                .0
                .get(name)
                .copied()
                .unwrap_or(0)
                .saturating_sub(before.0.get(name).copied().unwrap_or(0));
            if name == "Questions" {
                d.saturating_sub(own)
            } else {
                d
            }
        };
        let n = orders.max(1) as f64;
        PerOrder(
            COUNTERS
                .iter()
                .map(|c| ((*c).to_owned(), delta(c) as f64 / n))
                .collect(),
        )
    }
}

/// Counter deltas per order.
#[derive(Debug, Clone, Default)]
pub(crate) struct PerOrder(pub BTreeMap<String, f64>);

impl PerOrder {
    /// `Questions` per order: every statement a client sent.
    pub(crate) fn statements(&self) -> f64 {
        self.0.get("Questions").copied().unwrap_or(0.0)
    }

    /// A compact breakdown: `sel 7.2 ins 2.0 upd 3.0 begin 2.0 commit 2.0`.
    pub(crate) fn breakdown(&self) -> String {
        let g = |k: &str| self.0.get(k).copied().unwrap_or(0.0);
        format!(
            "sel {:.1} ins {:.1} upd {:.1} del {:.1} begin {:.1} commit {:.1} rollback {:.1}",
            g("Com_select"),
            g("Com_insert"),
            g("Com_update"),
            g("Com_delete"),
            g("Com_begin"),
            g("Com_commit"),
            g("Com_rollback")
        )
    }
}
