//! Celery's broker, as the dashboard shows it: its kind, whether the
//! dashboard reached it just now, each of herald's queues' waiting
//! messages and consumers (read by the collector's own probe), and the
//! ingress's connections over the live processes (their heartbeat
//! figures): how many loops run, how many are connected (AMQP), and how
//! often they connected again after losing the broker.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use utoipa::ToSchema;

use crate::fleet::figures::ProcessFigures;
use crate::ingress::broker::probe::{BrokerProbe, QueueDepth};
use crate::store::ProcessRow;

/// How long the collector waits for the broker before it says it is
/// unreachable (the rest of the figures do not wait on it).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Celery's broker.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrokerStats {
    /// `redis` or `amqp`.
    pub kind: String,
    /// Whether the dashboard's own read of the broker answered just now.
    pub reachable: bool,
    /// Ingress loops over the live processes (`celery.concurrency` each).
    pub loops: u64,
    /// On AMQP: those loops connected to the broker now.
    pub connected: Option<u64>,
    /// On AMQP: connections made again after one was lost, every live
    /// process, since each started.
    pub reconnects: u64,
    /// Herald's queues (`celery.queues`), as the broker counts them; none
    /// when it could not be read.
    pub queues: Vec<QueueDepth>,
    /// The latest revokes in force (20 at most), from the database.
    pub revoked: Vec<RevokedTask>,
}

/// A revoke in force (`celery.revoke_expires`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevokedTask {
    pub task_id: String,
    pub revoked_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// The collector's probe; its reads are one at a time.
pub(super) struct Probe(Mutex<BrokerProbe>);

impl Probe {
    pub(super) fn new(probe: BrokerProbe) -> Probe {
        Probe(Mutex::new(probe))
    }

    /// The broker's queues now, or the problem to show; and the latest
    /// revokes in `store`.
    pub(super) async fn read(&self, store: &crate::store::Store) -> Read {
        let revoked = match store.recent_revokes(20).await {
            Ok(rows) => rows
                .into_iter()
                .map(|(task_id, revoked_at, expires_at)| RevokedTask {
                    task_id,
                    revoked_at,
                    expires_at,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "dashboard: could not read the revokes");
                Vec::new()
            }
        };
        let mut probe = self.0.lock().await;
        let kind = probe.kind();
        let queues = match tokio::time::timeout(PROBE_TIMEOUT, probe.depths()).await {
            Ok(Ok(queues)) => Ok(queues),
            Ok(Err(error)) => {
                tracing::debug!(%error, "dashboard: could not read Celery's broker");
                Err("celery broker: unavailable".to_string())
            }
            Err(_) => Err("celery broker: no answer within 2 s".to_string()),
        };
        Read {
            kind,
            queues,
            revoked,
        }
    }
}

/// One read of the broker by the probe.
pub(super) struct Read {
    kind: &'static str,
    queues: Result<Vec<QueueDepth>, String>,
    revoked: Vec<RevokedTask>,
}

impl Read {
    /// The broker's figures, with the processes' connections; the problem
    /// to show when the broker did not answer.
    pub(super) fn stats(
        self,
        figures: &[(&ProcessRow, ProcessFigures)],
    ) -> (BrokerStats, Option<String>) {
        let (queues, problem) = match self.queues {
            Ok(queues) => (Some(queues), None),
            Err(problem) => (None, Some(problem)),
        };
        let mut stats = BrokerStats {
            kind: self.kind.to_string(),
            reachable: queues.is_some(),
            loops: 0,
            connected: None,
            reconnects: 0,
            queues: queues.unwrap_or_default(),
            revoked: self.revoked,
        };
        for ingress in figures.iter().filter_map(|(_, f)| f.ingress.as_ref()) {
            stats.loops += ingress.loops;
            stats.reconnects += ingress.reconnects;
            if let Some(connected) = ingress.connected {
                *stats.connected.get_or_insert(0) += connected;
            }
        }
        (stats, problem)
    }
}
