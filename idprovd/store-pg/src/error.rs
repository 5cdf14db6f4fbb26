//! Sorting PostgreSQL's errors into the storage interface's kinds: a
//! conflict the transaction runner retries, a lost connection (the store is
//! unavailable until it reconnects: 503, not 500), or anything else.

use idprovd_core::Error;
use idprovd_core::store::StoreError;
use postgres::error::SqlState;

/// An error inside one transaction attempt.
#[derive(Debug)]
pub enum PgError {
    /// A serialization failure or deadlock: run the decision again.
    Retry(String),
    /// Anything else: the operation fails with it.
    Core(Error),
}

impl PgError {
    pub(crate) fn into_core(self) -> Error {
        match self {
            PgError::Core(e) => e,
            PgError::Retry(why) => Error::Store(StoreError::Db(format!(
                "the database kept reporting a conflict ({why}); try again"
            ))),
        }
    }
}

impl From<Error> for PgError {
    fn from(e: Error) -> Self {
        PgError::Core(e)
    }
}

impl From<StoreError> for PgError {
    fn from(e: StoreError) -> Self {
        PgError::Core(Error::Store(e))
    }
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> Self {
        if is_conflict(&e) {
            PgError::Retry(e.to_string())
        } else {
            PgError::Core(Error::Store(store(e)))
        }
    }
}

/// Whether a retry of the whole transaction may succeed.
pub(crate) fn is_conflict(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// A database error as the storage interface reports it.
pub(crate) fn store(e: postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    if unavailable(&e) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Db(message)
    }
}

/// A lost or refused connection, a server shutting down, a full disk: the
/// database may come back, and then the store serves again.
fn unavailable(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            c.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::DISK_FULL,
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                ]
                .contains(c)
        }
        // No SQLSTATE: the socket failed (I/O) or the connection closed.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// A stored record that does not decode: an error naming its type and key,
/// never a panic.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    v: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| {
        let ty = std::any::type_name::<T>();
        let ty = ty.rsplit("::").next().unwrap_or(ty);
        StoreError::Record(format!("{ty} {key:?}: {e}"))
    })
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(v).map_err(|e| StoreError::Record(e.to_string()))
}
