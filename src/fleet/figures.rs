//! The figures a process publishes (as JSON in its heartbeat rows) and how
//! they are read from its Prometheus counters and summed over the fleet.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::telemetry::metrics::{self as m, DURATION_BUCKETS, Samples};

/// Length of one sample window, in seconds.
pub const WINDOW_SECONDS: i64 = 10;

/// The start of the window `at` falls in.
pub fn window_of(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(TimeDelta::seconds(WINDOW_SECONDS))
        .unwrap_or(at)
}

/// What a process holds now and has counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessFigures {
    /// Jobs held now (fetched or running), by kind.
    #[serde(default)]
    pub running: BTreeMap<String, u64>,
    #[serde(default)]
    pub jobs_done: u64,
    #[serde(default)]
    pub jobs_failed: u64,
    /// Jobs done per second over the last few heartbeats.
    #[serde(default)]
    pub jobs_per_second: f64,
    /// Channel-layer message copies this process dropped (full queues;
    /// held copies given up at `layer.full_channel_deadline` among them).
    #[serde(default)]
    pub dropped: u64,
    /// Group copies this process's publisher held back for a full queue.
    #[serde(default)]
    pub held: u64,
    /// Held copies given up at `layer.full_channel_deadline`.
    #[serde(default)]
    pub undelivered: u64,
    /// A process serving WebSockets: its delivery figures.
    #[serde(default)]
    pub delivery: Option<DeliveryFigures>,
    /// A process running the Celery ingress: its broker connections.
    #[serde(default)]
    pub ingress: Option<IngressFigures>,
}

/// One process's Celery ingress at a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressFigures {
    /// `redis` or `amqp`.
    pub broker: String,
    /// Loops taking messages (`celery.concurrency`).
    pub loops: u64,
    /// On AMQP (a connection per loop): the loops connected now.
    #[serde(default)]
    pub connected: Option<u64>,
    /// On AMQP: connections made again after one was lost, since start.
    #[serde(default)]
    pub reconnects: u64,
}

impl IngressFigures {
    /// Reads the ingress's gauges and counter; none when it does not run.
    pub fn read(samples: &Samples) -> Option<IngressFigures> {
        let loops = samples
            .named(m::CELERY_BROKER_LOOPS)
            .find(|sample| sample.value > 0.0)?;
        Some(IngressFigures {
            broker: loops.label("broker").unwrap_or_default().to_string(),
            loops: loops.value as u64,
            connected: samples
                .named(m::CELERY_BROKER_CONNECTED)
                .next()
                .map(|sample| sample.value.max(0.0) as u64),
            reconnects: samples.value(m::CELERY_BROKER_RECONNECTS, &[]) as u64,
        })
    }
}

/// One sidecar's delivery figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFigures {
    pub connections: u64,
    pub users_online: u64,
    /// Events queued to clients since start.
    pub delivered: u64,
    pub deliveries_per_second: f64,
    /// Channel-layer copies dropped since start.
    pub dropped: u64,
    /// Connections closed since start, by close code.
    pub closes: BTreeMap<String, u64>,
}

/// The sidecar's gauges at a heartbeat.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryNow {
    pub(crate) connections: u64,
    pub(crate) users_online: u64,
}

/// One kind's jobs in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindCounts {
    #[serde(default)]
    pub done: u64,
    #[serde(default)]
    pub failed: u64,
    /// Run times: jobs per bucket of [`DURATION_BUCKETS`] (not cumulative;
    /// the last entry is over the largest bound).
    #[serde(default)]
    pub times: Vec<u64>,
}

impl KindCounts {
    fn plus(&mut self, other: &KindCounts) {
        self.done += other.done;
        self.failed += other.failed;
        if self.times.len() < other.times.len() {
            self.times.resize(other.times.len(), 0);
        }
        for (mine, theirs) in self.times.iter_mut().zip(&other.times) {
            *mine += theirs;
        }
    }

    fn minus(&self, earlier: &KindCounts) -> KindCounts {
        KindCounts {
            done: self.done.saturating_sub(earlier.done),
            failed: self.failed.saturating_sub(earlier.failed),
            times: self
                .times
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.times.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }
}

/// What one process counted in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowFigures {
    #[serde(default)]
    pub jobs: BTreeMap<String, KindCounts>,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub dropped: u64,
}

impl WindowFigures {
    /// This window with `delta` added.
    pub fn plus(mut self, delta: &Counted) -> WindowFigures {
        self.add(&WindowFigures {
            jobs: delta.jobs.clone(),
            delivered: delta.delivered,
            dropped: delta.dropped,
        });
        self
    }

    /// Adds another's counts (another process's, or another window's).
    pub fn add(&mut self, other: &WindowFigures) {
        for (kind, counts) in &other.jobs {
            self.jobs.entry(kind.clone()).or_default().plus(counts);
        }
        self.delivered += other.delivered;
        self.dropped += other.dropped;
    }

    /// Jobs done and failed, every kind.
    pub fn done(&self) -> u64 {
        self.jobs.values().map(|k| k.done).sum()
    }

    pub fn failed(&self) -> u64 {
        self.jobs.values().map(|k| k.failed).sum()
    }

    /// The run-time histogram of every kind together.
    pub fn times(&self) -> Vec<u64> {
        let mut all = KindCounts::default();
        for counts in self.jobs.values() {
            all.plus(counts);
        }
        all.times
    }
}

/// A process's counters since it started, read from its Prometheus text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counted {
    pub jobs: BTreeMap<String, KindCounts>,
    pub running: BTreeMap<String, u64>,
    pub delivered: u64,
    pub dropped: u64,
    pub held: u64,
    pub undelivered: u64,
    pub closes: BTreeMap<String, u64>,
}

impl Counted {
    /// Reads `herald_jobs_total`, `herald_job_duration_seconds`,
    /// `herald_jobs_running`, `herald_layer_dropped_total` and the
    /// sidecar's delivery and close counters.
    pub fn read(samples: &Samples) -> Counted {
        let mut counted = Counted::default();
        for sample in samples.named(m::JOBS) {
            let (Some(kind), Some(outcome)) = (sample.label("kind"), sample.label("outcome"))
            else {
                continue;
            };
            let counts = counted.jobs.entry(kind.to_string()).or_default();
            match outcome {
                "done" => counts.done += sample.value as u64,
                "failed" => counts.failed += sample.value as u64,
                _ => {}
            }
        }
        // Cumulative buckets `le` per kind, turned into counts per bucket.
        let bucket_name = format!("{}_bucket", m::JOB_DURATION);
        let mut cumulative: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for sample in samples.named(&bucket_name) {
            let (Some(kind), Some(le)) = (sample.label("kind"), sample.label("le")) else {
                continue;
            };
            let index = match le.parse::<f64>() {
                Ok(bound) if bound.is_finite() => DURATION_BUCKETS
                    .iter()
                    .position(|b| (b - bound).abs() < 1e-9),
                _ => Some(DURATION_BUCKETS.len()),
            };
            let Some(index) = index else { continue };
            let list = cumulative
                .entry(kind.to_string())
                .or_insert_with(|| vec![0; DURATION_BUCKETS.len() + 1]);
            list[index] = sample.value as u64;
        }
        for (kind, list) in cumulative {
            let mut below = 0;
            let times = list
                .iter()
                .map(|&upto| {
                    let here = upto.saturating_sub(below);
                    below = below.max(upto);
                    here
                })
                .collect();
            counted.jobs.entry(kind).or_default().times = times;
        }
        for sample in samples.named(m::JOBS_RUNNING) {
            if let Some(kind) = sample.label("kind") {
                let now = sample.value.max(0.0) as u64;
                if now > 0 {
                    counted.running.insert(kind.to_string(), now);
                }
            }
        }
        counted.delivered = samples.value("herald_sidecar_events_delivered_total", &[]) as u64;
        counted.dropped = samples.value(m::LAYER_DROPPED, &[]) as u64;
        counted.held = samples.value(m::LAYER_HELD, &[]) as u64;
        counted.undelivered = samples.value(m::LAYER_UNDELIVERED, &[]) as u64;
        for sample in samples.named(m::SIDECAR_CLOSES) {
            if let Some(code) = sample.label("code") {
                *counted.closes.entry(code.to_string()).or_default() += sample.value as u64;
            }
        }
        counted
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &Counted) -> Counted {
        Counted {
            jobs: self
                .jobs
                .iter()
                .map(|(kind, now)| {
                    let before = earlier.jobs.get(kind).cloned().unwrap_or_default();
                    (kind.clone(), now.minus(&before))
                })
                .collect(),
            running: self.running.clone(),
            delivered: self.delivered.saturating_sub(earlier.delivered),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            held: self.held.saturating_sub(earlier.held),
            undelivered: self.undelivered.saturating_sub(earlier.undelivered),
            closes: self.closes.clone(),
        }
    }

    pub fn jobs_done(&self) -> u64 {
        self.jobs.values().map(|k| k.done).sum()
    }

    pub fn jobs_failed(&self) -> u64 {
        self.jobs.values().map(|k| k.failed).sum()
    }
}

/// The `q` quantile (0 to 1) of a histogram of [`DURATION_BUCKETS`], in
/// seconds: linear within the bucket it falls in (the last, unbounded
/// bucket reads as its lower bound). `None` with no jobs.
pub fn quantile(times: &[u64], q: f64) -> Option<f64> {
    let total: u64 = times.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in times.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let largest = DURATION_BUCKETS[DURATION_BUCKETS.len() - 1];
            // Buckets past the known ones (figures of another version)
            // read as the largest bound.
            let lower = match i {
                0 => 0.0,
                i => DURATION_BUCKETS.get(i - 1).copied().unwrap_or(largest),
            };
            let Some(&upper) = DURATION_BUCKETS.get(i) else {
                return Some(lower);
            };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    DURATION_BUCKETS.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_window_counts_and_quantiles() {
        let text = "herald_jobs_total{kind=\"notify\",outcome=\"done\"} 10\n\
            herald_jobs_total{kind=\"notify\",outcome=\"failed\"} 2\n\
            herald_job_duration_seconds_bucket{kind=\"notify\",le=\"0.0005\"} 0\n\
            herald_job_duration_seconds_bucket{kind=\"notify\",le=\"0.001\"} 6\n\
            herald_job_duration_seconds_bucket{kind=\"notify\",le=\"0.0025\"} 12\n\
            herald_job_duration_seconds_bucket{kind=\"notify\",le=\"+Inf\"} 12\n\
            herald_jobs_running{kind=\"notify\"} 3\n\
            herald_sidecar_closes_total{code=\"4008\"} 1\n";
        let counted = Counted::read(&Samples::parse(text));
        assert_eq!(counted.jobs_done(), 10);
        assert_eq!(counted.jobs_failed(), 2);
        assert_eq!(counted.running.get("notify"), Some(&3));
        assert_eq!(counted.closes.get("4008"), Some(&1));
        let times = &counted.jobs["notify"].times;
        assert_eq!(times.iter().sum::<u64>(), 12);
        assert_eq!(times[1], 6);
        assert_eq!(times[2], 6);
        let half = quantile(times, 0.5).unwrap();
        assert!((half - 0.001).abs() < 1e-9, "{half}");
        let high = quantile(times, 0.99).unwrap();
        assert!(high > 0.001 && high <= 0.0025, "{high}");
        assert_eq!(quantile(&[0; 13], 0.5), None);
        let mut odd = vec![0; 20];
        odd[19] = 3;
        assert_eq!(
            quantile(&odd, 0.5),
            Some(5.0),
            "unknown buckets do not panic"
        );

        let later = Counted::read(&Samples::parse(
            "herald_jobs_total{kind=\"notify\",outcome=\"done\"} 15\n",
        ));
        let delta = later.since(&counted);
        assert_eq!(delta.jobs_done(), 5);
        let window = WindowFigures::default().plus(&delta).plus(&delta);
        assert_eq!(window.done(), 10);
    }

    #[test]
    fn windows_are_ten_seconds() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:17.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(window_of(at).to_rfc3339(), "2026-12-01T10:00:10+00:00");
    }
}
