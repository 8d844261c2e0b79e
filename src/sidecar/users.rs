//! Only live users get a socket: a valid token whose user does not exist
//! or is not active is refused, as the application's consumer refuses it
//! (simplejwt's `JWTAuthentication.get_user`). Answers are kept for
//! `sidecar.user_cache_ttl`, so a burst of reconnects costs one query a user.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{SidecarSettings, UserCheckMode};
use crate::store::{Store, UserStatus, UserTable};

/// Most cached answers; past it the expired ones go, then all.
const CACHE_LIMIT: usize = 100_000;

/// Why a user was refused; [`UserRefusal::code`] is the close reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UserRefusal {
    #[error("the token's user does not exist")]
    NotFound,
    #[error("the token's user is not active")]
    Inactive,
    /// The database could not answer; the client may try again.
    #[error("the user could not be checked now")]
    Unavailable,
}

impl UserRefusal {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            UserRefusal::NotFound => "user_not_found",
            UserRefusal::Inactive => "user_inactive",
            UserRefusal::Unavailable => "user_check_unavailable",
        }
    }
}

/// The check of one sidecar, with its cache.
pub(crate) struct UserCheck {
    store: Store,
    mode: UserCheckMode,
    table: UserTable,
    ttl: Duration,
    /// Whether the table exists (for `auto`), asked again after `ttl`.
    has_table: Mutex<Option<(bool, Instant)>>,
    answers: Mutex<HashMap<i64, (UserStatus, Instant)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl UserCheck {
    pub(crate) fn new(store: Store, settings: &SidecarSettings) -> Self {
        Self {
            store,
            mode: settings.user_check,
            table: UserTable {
                table: settings.user_table.clone(),
                id_column: settings.user_id_column.clone(),
                active_column: settings.user_active_column.clone(),
            },
            ttl: settings.user_cache_ttl,
            has_table: Mutex::new(None),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Ok when `user_id` may have a socket.
    pub(crate) async fn check(&self, user_id: i64) -> Result<(), UserRefusal> {
        if !self.applies().await? {
            return Ok(());
        }
        let status = match self.cached(user_id) {
            Some(status) => status,
            None => {
                let status =
                    self.store
                        .user_status(&self.table, user_id)
                        .await
                        .map_err(|error| {
                            tracing::warn!(%error, "user check failed");
                            UserRefusal::Unavailable
                        })?;
                self.remember(user_id, status);
                status
            }
        };
        match status {
            UserStatus::Active => Ok(()),
            UserStatus::Inactive => Err(UserRefusal::Inactive),
            UserStatus::Missing => Err(UserRefusal::NotFound),
        }
    }

    /// Whether users are checked: always with `on`, never with `off`, and
    /// with `auto` while the database has the table.
    async fn applies(&self) -> Result<bool, UserRefusal> {
        match self.mode {
            UserCheckMode::Off => return Ok(false),
            UserCheckMode::On => return Ok(true),
            UserCheckMode::Auto => {}
        }
        if let Some((exists, at)) = *lock(&self.has_table)
            && at.elapsed() < self.ttl
        {
            return Ok(exists);
        }
        let exists = self
            .store
            .has_table(&self.table.table)
            .await
            .map_err(|_| UserRefusal::Unavailable)?;
        *lock(&self.has_table) = Some((exists, Instant::now()));
        Ok(exists)
    }

    fn cached(&self, user_id: i64) -> Option<UserStatus> {
        let answers = lock(&self.answers);
        let (status, at) = answers.get(&user_id)?;
        (at.elapsed() < self.ttl).then_some(*status)
    }

    fn remember(&self, user_id: i64, status: UserStatus) {
        let mut answers = lock(&self.answers);
        if answers.len() >= CACHE_LIMIT {
            answers.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if answers.len() >= CACHE_LIMIT {
                answers.clear();
            }
        }
        answers.insert(user_id, (status, Instant::now()));
    }
}
