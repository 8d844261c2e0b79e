//! The application's users (Django's `auth_user`, or its custom user
//! model's table): whether a token's user exists and is active, as
//! simplejwt's `JWTAuthentication.get_user` checks before the application's
//! consumer accepts a socket. Herald only reads this table.

use super::{Backend, Store, StoreError, with_pool_retry_stale};

/// Where the users are. Each name is a plain SQL identifier (letters,
/// digits and `_`, optionally `schema.table`), checked by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTable {
    pub table: String,
    pub id_column: String,
    /// Empty: every user that exists counts as active.
    pub active_column: String,
}

/// What the table says of one user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Inactive,
    Missing,
}

/// `name` or `schema.name`, each part double-quoted.
fn quoted(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

impl UserTable {
    fn status_sql(&self) -> String {
        let active = if self.active_column.is_empty() {
            "true".to_string()
        } else {
            quoted(&self.active_column)
        };
        format!(
            "SELECT {active} FROM {} WHERE {} = $1",
            quoted(&self.table),
            quoted(&self.id_column)
        )
    }
}

impl Store {
    /// Whether the database has `table` (`name` or `schema.name`).
    pub async fn has_table(&self, table: &str) -> Result<bool, StoreError> {
        match self.backend() {
            Backend::Postgres => {
                const SQL: &str = "SELECT to_regclass($1) IS NOT NULL";
                with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(SQL)
                    .bind(quoted(table))
                    .fetch_one(pool)
                    .await?))
            }
            Backend::Sqlite => {
                const SQL: &str =
                    "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = $1";
                let name = table.rsplit('.').next().unwrap_or(table);
                with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(SQL)
                    .bind(name)
                    .fetch_one(pool)
                    .await?))
            }
        }
    }

    /// Whether user `id` exists in `users` and is active.
    pub async fn user_status(&self, users: &UserTable, id: i64) -> Result<UserStatus, StoreError> {
        // The names are identifiers checked by configuration and quoted;
        // the id is bound.
        let sql = users.status_sql();
        let active: Option<bool> = with_pool_retry_stale!(self, pool => Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(pool)
            .await?))?;
        Ok(match active {
            Some(true) => UserStatus::Active,
            Some(false) => UserStatus::Inactive,
            None => UserStatus::Missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_part_by_part() {
        let users = UserTable {
            table: "app.accounts_user".into(),
            id_column: "id".into(),
            active_column: "is_active".into(),
        };
        assert_eq!(
            users.status_sql(),
            r#"SELECT "is_active" FROM "app"."accounts_user" WHERE "id" = $1"#
        );
        let no_flag = UserTable {
            active_column: String::new(),
            ..users
        };
        assert!(no_flag.status_sql().starts_with("SELECT true FROM"));
    }
}
