//! Error plumbing: every `sqlx::Error` is caught here and turned into the ports' errors.
//!
//! Inside the crate a failed statement is a [`DbError`] carrying what the adapter was
//! doing; [`DbError::is_retryable`] tells deadlocks and lock-wait timeouts apart (the
//! repository retries those), and the `into_*` conversions classify it into the port's
//! variants. The driver error is never flattened to text: it stays the
//! [`source`](std::error::Error::source) of the `DbError`, which is the source of the
//! port error (behind `anyhow`), so a caller can walk down to the `sqlx::Error` — while
//! no `sqlx` type appears in any signature. Every `Display` here is its own layer's
//! sentence without the cause, as the ports require.

use order_core::domain::RestockError;
use order_core::ports::RepositoryError;
use order_payment_sim::LedgerError;
use sqlx::mysql::MySqlDatabaseError;

/// Why [`connect`](crate::connect) or [`migrate`](crate::migrate) failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database URL does not parse. The source is the driver's error.
    #[error("invalid database url")]
    InvalidUrl(#[source] anyhow::Error),
    /// The server cannot be reached or refused the connection. The source is the
    /// driver's error.
    #[error("cannot connect to the database")]
    Connect(#[source] anyhow::Error),
    /// A migration failed, or an applied migration no longer matches its file. The
    /// source is the driver's error.
    #[error("database migration failed")]
    Migrate(#[source] anyhow::Error),
}

/// Why [`MySqlOrderRepository::restock`](crate::MySqlOrderRepository::restock) changed
/// nothing: the domain refused it, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum MySqlRestockError {
    /// The restock is not allowed: the product does not exist
    /// ([`RestockError::UnknownProduct`]), or its stock plus its reserved units plus the
    /// restock would exceed [`MAX_STOCK`](order_core::domain::MAX_STOCK)
    /// ([`RestockError::AboveMaximum`]). The same refusals as the memory adapter's.
    #[error(transparent)]
    Refused(RestockError),
    /// The database failed (unreachable, or a lock conflict that outlasted every
    /// retry: [`RepositoryError::Unavailable`]; anything else:
    /// [`RepositoryError::Unexpected`]).
    #[error(transparent)]
    Store(RepositoryError),
}

/// Server error numbers the adapters act on (identical on MySQL 8.0 and MariaDB 10.11).
pub(crate) mod code {
    /// `ER_PARSE_ERROR`: the server does not know the statement's syntax (MySQL and
    /// `INSERT … RETURNING`).
    pub(crate) const PARSE_ERROR: u16 = 1064;
    /// `ER_DUP_ENTRY`: a unique index refused the row.
    pub(crate) const DUPLICATE_KEY: u16 = 1062;
    /// `ER_NO_REFERENCED_ROW_2`: a foreign key names a missing parent row.
    pub(crate) const NO_REFERENCED_ROW: u16 = 1452;
    /// `ER_LOCK_WAIT_TIMEOUT`: only the statement was rolled back.
    pub(crate) const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// `ER_LOCK_DEADLOCK`: the whole transaction was rolled back.
    pub(crate) const DEADLOCK: u16 = 1213;
    /// `ER_CON_COUNT_ERROR`: too many connections.
    pub(crate) const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// `ER_SERVER_SHUTDOWN`.
    pub(crate) const SERVER_SHUTDOWN: u16 = 1053;
    /// `ER_QUERY_INTERRUPTED` (e.g. the connection was killed).
    pub(crate) const QUERY_INTERRUPTED: u16 = 1317;
    /// MariaDB's `ER_CONNECTION_KILLED`.
    pub(crate) const CONNECTION_KILLED: u16 = 1927;
}

/// The server's error number, when `err` is an error the server reported.
pub(crate) fn server_code(err: &sqlx::Error) -> Option<u16> {
    err.as_database_error()?
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

/// A failed step inside the adapter.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    /// A statement failed; `context` says which step, `source` why.
    #[error("{context}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The database answered, but with data that cannot be a domain value.
    #[error(transparent)]
    Data(anyhow::Error),
}

impl DbError {
    /// A data error with a message.
    pub(crate) fn data(message: impl Into<String>) -> Self {
        DbError::Data(anyhow::Error::msg(message.into()))
    }

    /// The server error number, if a statement failed on the server.
    pub(crate) fn server_code(&self) -> Option<u16> {
        match self {
            DbError::Sql { source, .. } => server_code(source),
            DbError::Data(_) => None,
        }
    }

    /// A deadlock or lock-wait timeout: roll back and try the whole transaction again.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self.server_code(),
            Some(code::DEADLOCK | code::LOCK_WAIT_TIMEOUT)
        )
    }

    /// The server is unreachable, overloaded or going away: nothing was written and a
    /// later attempt may succeed.
    fn is_unavailable(&self) -> bool {
        match self {
            DbError::Sql { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::BeginFailed => true,
                sqlx::Error::Database(_) => matches!(
                    server_code(source),
                    Some(
                        code::DEADLOCK
                            | code::LOCK_WAIT_TIMEOUT
                            | code::TOO_MANY_CONNECTIONS
                            | code::SERVER_SHUTDOWN
                            | code::QUERY_INTERRUPTED
                            | code::CONNECTION_KILLED
                    )
                ),
                _ => false,
            },
            DbError::Data(_) => false,
        }
    }

    /// The port error for this failure, with `self` (and so the driver error) as its
    /// source.
    pub(crate) fn into_repository(self) -> RepositoryError {
        if self.is_unavailable() {
            RepositoryError::unavailable(self)
        } else {
            RepositoryError::Unexpected(self.into_anyhow())
        }
    }

    /// The ledger error for this failure, with `self` (and so the driver error) as its
    /// source.
    pub(crate) fn into_ledger(self) -> LedgerError {
        if self.is_unavailable() {
            LedgerError::unavailable(self)
        } else {
            LedgerError::Unexpected(self.into_anyhow())
        }
    }

    fn into_anyhow(self) -> anyhow::Error {
        match self {
            DbError::Sql { .. } => anyhow::Error::new(self),
            DbError::Data(e) => e,
        }
    }
}

/// Names the step a `sqlx` result belongs to: `query.execute(..).await.ctx("…")?`.
pub(crate) trait Context<T> {
    /// Wraps the error with `context`.
    fn ctx(self, context: &'static str) -> Result<T, DbError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Sql { context, source })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::time::Duration;

    use order_core::domain::OrderId;
    use order_core::ports::OrderRepository;
    use sqlx::mysql::MySqlPoolOptions;

    use super::*;
    use crate::MySqlOrderRepository;

    /// A local port nobody listens on (bound, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// The `sqlx::Error` somewhere below `e` in its source chain, if any.
    fn sqlx_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a sqlx::Error> {
        std::iter::successors(Some(e), |e| (*e).source()).find_map(|e| e.downcast_ref())
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_with_the_sqlx_error_as_its_cause() {
        let url = format!("mysql://nobody@127.0.0.1:{}/none", closed_port());
        let pool = MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_millis(300))
            .connect_lazy(&url)
            .unwrap();
        let repository = MySqlOrderRepository::new(pool);
        let err = repository.get(OrderId::new(1).unwrap()).await.unwrap_err();
        assert!(matches!(err, RepositoryError::Unavailable(_)), "{err:?}");
        assert_eq!(err.to_string(), "order store unavailable");
        let step = err.source().and_then(|s| s.downcast_ref::<DbError>());
        assert!(
            matches!(step, Some(DbError::Sql { .. })),
            "the source names the step: {step:?}"
        );
        let driver = sqlx_cause(&err);
        assert!(
            matches!(driver, Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))),
            "the sqlx error is kept in the chain: {err:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_at_setup_keeps_the_sqlx_error_as_its_cause() {
        let url = format!("mysql://nobody@127.0.0.1:{}/none", closed_port());
        let err = crate::connect(&url, 1).await.unwrap_err();
        assert!(matches!(err, SetupError::Connect(_)), "{err:?}");
        assert!(sqlx_cause(&err).is_some(), "{err:?}");
    }

    #[test]
    fn a_failure_that_is_not_unavailable_is_unexpected_and_keeps_its_cause_too() {
        let err = Err::<(), _>(sqlx::Error::RowNotFound)
            .ctx("reading order 7")
            .map_err(DbError::into_repository)
            .unwrap_err();
        assert!(matches!(err, RepositoryError::Unexpected(_)), "{err:?}");
        assert_eq!(err.to_string(), "reading order 7");
        assert!(matches!(sqlx_cause(&err), Some(sqlx::Error::RowNotFound)));
        let ledger = Err::<(), _>(sqlx::Error::PoolTimedOut)
            .ctx("reading payment 7")
            .map_err(DbError::into_ledger)
            .unwrap_err();
        assert!(matches!(ledger, LedgerError::Unavailable(_)), "{ledger:?}");
        assert!(matches!(
            sqlx_cause(&ledger),
            Some(sqlx::Error::PoolTimedOut)
        ));
    }
}
