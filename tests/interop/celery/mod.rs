//! The Celery drop-in against the real celery package: the Django project's
//! `@shared_task` functions (tests/interop/django_app/apps/*/tasks.py),
//! routed to herald's queue by `CELERY_TASK_ROUTES`, called with `.delay()`
//! and `apply_async()` as the application calls them, run by `herald run`
//! on the project's PostgreSQL database; their notifications reach the
//! application's consumer under daphne, and `AsyncResult.get()` returns or
//! raises as under Celery. Each test has a redis-server of its own as
//! Celery's broker (DB 0) and result backend (DB 1), and its own queue name;
//! the task the application keeps on Celery counts its runs in DB 2. The
//! cases written `on_both_brokers!` run a second time with RabbitMQ as the
//! broker (a vhost of the test's own on the test RabbitMQ), the results
//! still on Redis.
//!
//! Parts: `harness` (Celery's side of a test: broker, results, the real
//! worker and CLI), `calls` (what the application's calls get back),
//! `control` (Celery's remote control: revoke, ping and inspect),
//! `watch` (the Celery worker beside herald, what waits and is held on
//! the broker), `workers` (herald killed, a Celery worker beside it, beat) and `rabbitmq`
//! (what only RabbitMQ has: consumer_timeout, its faults, rpc:// results,
//! quorum queues).

/// The broker a case runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Redis,
    RabbitMq,
}

/// Runs the case `$case(On)` once per broker, as `$case::redis` and
/// `$case::rabbitmq`.
macro_rules! on_both_brokers {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$case(super::On::Redis).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbitmq() {
                super::$case(super::On::RabbitMq).await
            }
        }
    };
}

mod calls;
mod control;
mod harness;
mod rabbitmq;
mod watch;
mod workers;

pub(crate) use harness::project_with_a_task;
