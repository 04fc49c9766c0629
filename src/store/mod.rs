//! The PostgreSQL seam: SQL lives only under `store/`. The rest of Herald
//! sees a [`Store`] with typed methods, one file per table.
//!
//! Every call is bounded by `database.timeout_ms`; a pool that cannot hand out
//! a connection, a dropped connection or a timeout is [`StoreError::Unavailable`]
//! (the API answers 503 with `Retry-After`), anything else is a bug or a
//! constraint and is [`StoreError::Query`].

pub mod events;
pub mod messages;
pub mod tenants;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::DatabaseConfig;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[source] tokio_postgres::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // SQLSTATE class 08 (connection), 53 (resources), 57 (operator
        // intervention) mean the database, not the query, is the problem.
        match e.code().map(|c| c.code()) {
            Some(code)
                if !(code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57")) =>
            {
                StoreError::Query(e)
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A handle on Herald's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    timeout: Duration,
}

impl Store {
    /// Create the database when missing, apply migrations, open the pool.
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Self> {
        migrate(config.url.expose()).await?;
        Self::connect(config)
    }

    /// Open the pool without touching the schema.
    pub fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        Self::connect_as(config, "herald")
    }

    /// [`Store::connect`], the sessions named `application_name` (as
    /// `pg_stat_activity` shows them) unless the URL names them.
    pub fn connect_as(config: &DatabaseConfig, application_name: &str) -> anyhow::Result<Self> {
        let mut pg: tokio_postgres::Config = config.url.expose().parse()?;
        if pg.get_application_name().is_none() {
            pg.application_name(application_name);
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()?;
        Ok(Self { pool, timeout })
    }

    /// Run `f` with a pooled connection, bounded by the configured timeout.
    pub(crate) async fn with<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let work = async {
            let client = self.pool.get().await?;
            f(client).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("timed out".into())),
        }
    }

    /// Open up to `n` connections now rather than at the first requests
    /// (each costs a few round trips). Best effort: what fails is opened
    /// later, on demand.
    pub async fn warm(&self, n: usize) {
        let opened = futures::future::join_all((0..n).map(|_| self.pool.get())).await;
        if let Some(Err(e)) = opened.iter().find(|c| c.is_err()) {
            tracing::warn!(error = %e, "database connections not opened ahead");
        }
    }

    /// `SELECT 1`: does the database answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| async move {
            c.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }
}

/// Create the database named in `url` when it does not exist, then apply
/// every migration not yet applied (recorded in `refinery_schema_history`),
/// under an advisory lock so two nodes starting together do not race.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    let config: tokio_postgres::Config = url.parse()?;
    ensure_database(&config).await?;
    let (mut client, connection) = config.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute("SELECT pg_advisory_lock(7263510001)")
        .await?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    client
        .batch_execute("SELECT pg_advisory_unlock(7263510001)")
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(report?.applied_migrations().len())
}

async fn ensure_database(config: &tokio_postgres::Config) -> anyhow::Result<()> {
    let Some(name) = config.get_dbname() else {
        return Ok(());
    };
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, connection) = admin.connect(NoTls).await?;
    let driver = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        match client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            Ok(()) => tracing::info!(database = name, "created database"),
            // Another node created it at the same moment.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
