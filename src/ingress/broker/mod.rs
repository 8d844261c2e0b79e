//! The brokers herald takes Celery's task messages from, one room each; the
//! rest of the ingress (decoding, routing, recording, results) knows none
//! of their keys or bookkeeping. Today: kombu's Redis transport.

pub mod redis;
