//! Raw SQL into apalis's `Jobs` table (apalis-sqlite's `Jobs`,
//! apalis-postgres's `apalis.jobs`) for what apalis has no call for: pruning
//! done entries, reviving or forgetting the ones it gave up on, putting back
//! what a stopping worker holds. Matches [`super::APALIS_VERSIONS`].

// `Jobs` names the table on both backends: SQLite ignores the case, and the
// PostgreSQL pool's search path is the `apalis` schema. A statement ending
// in `id`, `job_type` or `lock_by` gets its list test appended.

/// The columns of apalis's `Jobs` table that the statements here use, with
/// their declared type on SQLite and PostgreSQL (`information_schema`'s
/// `data_type`): herald binds Unix seconds to SQLite's `done_at` and a
/// timestamp to PostgreSQL's, and reads `job` as bytes holding JSON.
pub const COLUMNS: &[(&str, &str, &str)] = &[
    ("id", "TEXT", "text"),
    ("job_type", "TEXT", "text"),
    ("job", "BLOB", "bytea"),
    ("status", "TEXT", "text"),
    ("attempts", "INTEGER", "integer"),
    ("max_attempts", "INTEGER", "integer"),
    ("lock_by", "TEXT", "text"),
    ("lock_at", "INTEGER", "timestamp with time zone"),
    ("done_at", "INTEGER", "timestamp with time zone"),
];

/// The values of its `status` column that they compare or set (apalis-core's
/// `Status` as text).
pub const STATUSES: &[&str] = &["Pending", "Queued", "Running", "Done", "Failed"];

/// SQLite: done entries finished before a cutoff (Unix seconds, bound
/// next), then the queue-name list test.
pub(crate) const SQLITE_PRUNE_DONE: &str =
    "DELETE FROM Jobs WHERE status = 'Done' AND done_at IS NOT NULL AND done_at < ";

/// PostgreSQL: done entries finished before $1 in the queues $2.
pub(crate) const POSTGRES_PRUNE_DONE: &str = "DELETE FROM apalis.jobs WHERE status = 'Done' \
     AND done_at < $1 AND job_type = ANY($2)";

/// SQLite: the entries apalis gave up on (failed, attempts used up), then
/// the queue-name list test and a limit.
pub(crate) const SQLITE_GIVEN_UP: &str = "SELECT id, job_type, job FROM Jobs WHERE status = 'Failed' \
     AND attempts >= max_attempts AND job_type";

/// PostgreSQL: the same, in the queues $1, at most $2.
pub(crate) const POSTGRES_GIVEN_UP: &str = "SELECT id, job_type, job FROM apalis.jobs \
     WHERE status = 'Failed' AND attempts >= max_attempts \
     AND job_type = ANY($1) LIMIT $2";

/// Both: given-up entries (by id) back to `Pending` with fresh attempts.
pub(crate) const REQUEUE_GIVEN_UP: &str = "UPDATE Jobs SET status = 'Pending', attempts = 0, \
     lock_by = NULL, lock_at = NULL, done_at = NULL WHERE status = 'Failed' AND id";

/// Both: given-up entries (by id) deleted.
pub(crate) const FORGET_GIVEN_UP: &str = "DELETE FROM Jobs WHERE status = 'Failed' AND id";

/// Both: what workers (by name) fetched and still hold, back to `Pending`.
pub(crate) const PUT_BACK: &str = "UPDATE Jobs SET status = 'Pending', lock_by = NULL, \
     lock_at = NULL WHERE status IN ('Queued', 'Running') AND lock_by";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status a statement quotes is in [`STATUSES`], and every column
    /// name it uses is in [`COLUMNS`], so the layout test checks them all.
    #[test]
    fn the_lists_cover_the_statements() {
        let statements = [
            SQLITE_PRUNE_DONE,
            POSTGRES_PRUNE_DONE,
            SQLITE_GIVEN_UP,
            POSTGRES_GIVEN_UP,
            REQUEUE_GIVEN_UP,
            FORGET_GIVEN_UP,
            PUT_BACK,
        ];
        const KEYWORDS: &[&str] = &[
            "DELETE", "FROM", "WHERE", "AND", "IS", "NOT", "NULL", "SELECT", "LIMIT", "ANY",
            "UPDATE", "SET", "IN", "Jobs", "apalis", "jobs",
        ];
        for sql in statements {
            for quoted in sql.split('\'').skip(1).step_by(2) {
                assert!(STATUSES.contains(&quoted), "{quoted} in {sql}");
            }
            let unquoted: String = sql.split('\'').step_by(2).collect::<Vec<_>>().join(" ");
            for word in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
                    continue;
                }
                assert!(
                    COLUMNS.iter().any(|(column, ..)| *column == word) || KEYWORDS.contains(&word),
                    "{word} in {sql}"
                );
            }
        }
    }
}
