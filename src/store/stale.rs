//! Statements PostgreSQL prepared before the application's migration changed
//! a table herald reads. Such a statement fails once with "cached plan must
//! not change result type" (a column's type or length changed under it):
//! every connection opened before that moment is retired (closed at its
//! next acquire, so its statement cache goes with it) and the statement runs
//! once more on a fresh connection. See [`super::with_pool_retry_stale`].

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::StoreError;

/// Connections opened before this instant are closed when next acquired.
/// One mark for the process: a retirement costs each pool a reconnect.
static RETIRED_BEFORE: Mutex<Option<Instant>> = Mutex::new(None);

/// PostgreSQL's answer to a prepared statement whose result columns changed.
pub(crate) fn is_stale_plan(error: &StoreError) -> bool {
    match error {
        StoreError::Database(sqlx::Error::Database(db)) => {
            db.code().as_deref() == Some("0A000")
                && db
                    .message()
                    .contains("cached plan must not change result type")
        }
        _ => false,
    }
}

/// Retires every connection open now.
pub(crate) fn retire_connections() {
    tracing::info!("a table changed under prepared statements; reconnecting");
    *RETIRED_BEFORE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
}

/// Whether a connection of this age was opened before the last retirement.
pub(crate) fn is_retired(age: Duration) -> bool {
    let Some(mark) = *RETIRED_BEFORE.lock().unwrap_or_else(|p| p.into_inner()) else {
        return false;
    };
    Instant::now()
        .checked_sub(age)
        .is_some_and(|opened| opened < mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_the_mark_are_retired() {
        retire_connections();
        assert!(is_retired(Duration::from_secs(3600)), "older than the mark");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!is_retired(Duration::ZERO), "opened just now");
    }
}
