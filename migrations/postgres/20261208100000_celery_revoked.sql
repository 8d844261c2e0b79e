-- Celery task ids revoked (`AsyncResult.revoke()`, `celery control revoke`,
-- herald's API or dashboard): every herald process honours them, and every
-- herald started later, until `expires_at` (Celery's worker keeps its revoked
-- set in memory for 3 hours and loses it on restart). A message of a revoked
-- id that arrives later records nothing and gets a REVOKED result.
CREATE TABLE IF NOT EXISTS herald_celery_revoked (
    task_id varchar(255) NOT NULL PRIMARY KEY,
    revoked_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    terminate boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS herald_celery_revoked_expires ON herald_celery_revoked (expires_at);
