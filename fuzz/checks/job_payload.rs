//! A submitted job (`herald::jobs::parse`) over any kind and any JSON:
//! never panics; a known kind is never refused as unknown nor an unknown
//! one accepted; a refused payload names a field (a path into the payload,
//! `.` for the payload as a whole, `""` for a payload that is not an object
//! or a key `""` it does not know) and a reason; an accepted job has its
//! kind and parses again, equal, from its own serialized payload, and its
//! check against the database's limits never panics and names a field.
//!
//! Input: the kind, a newline, then the payload as JSON text (input whose
//! payload is not JSON is skipped: the API refuses it before `parse`).
//!
//! The fuzz target `fuzz/fuzz_targets/job_payload.rs` calls [`check`] on every
//! input; `tests/herald/fuzz_corpus.rs` calls it on every committed seed
//! and past crash, in the ordinary test build.

use herald::jobs::{JobInputError, KINDS, parse};
use herald::store::ColumnLimits;
use serde_json::Value;

/// The property, on one input: panics when it does not hold.
pub(crate) fn check(data: &[u8]) {
    let (kind, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let kind = String::from_utf8_lossy(kind);
    let payload: Value = if payload.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(payload) {
            Ok(value) => value,
            Err(_) => return,
        }
    };
    let known = KINDS.contains(&kind.as_ref());
    match parse(&kind, payload.clone()) {
        Ok(job) => {
            assert!(known, "accepted unknown kind {kind:?}");
            assert_eq!(job.kind(), kind);
            let serialized = serde_json::to_value(&job).expect("a job serializes");
            assert_eq!(serialized["kind"], Value::String(kind.to_string()));
            let again = parse(&kind, serialized["payload"].clone());
            assert_eq!(again.as_ref(), Ok(&job), "from {serialized}");
            let narrow = ColumnLimits {
                user_id_max: i64::from(i32::MAX),
                task_id_max: i64::from(i32::MAX),
                ..ColumnLimits::default()
            };
            for limits in [ColumnLimits::default(), narrow] {
                if let Err(error) = job.check_limits(&limits) {
                    let JobInputError::OverLimit { field, reason } = error else {
                        panic!("limits answer OverLimit: {error:?}");
                    };
                    assert!(!field.is_empty() && !reason.is_empty(), "{field}: {reason}");
                }
            }
        }
        Err(JobInputError::OverLimit { .. }) => panic!("parse never judges the limits"),
        Err(JobInputError::UnknownKind { kind: named }) => {
            assert!(!known, "refused known kind {kind:?}");
            assert_eq!(named, kind);
        }
        Err(JobInputError::InvalidPayload { field, reason }) => {
            assert!(known, "judged the payload of unknown kind {kind:?}");
            // Empty only when it names the payload's key `""` exactly.
            assert!(
                !field.is_empty() || reason.starts_with("unknown field ``") || !payload.is_object(),
                "no field named: {reason}"
            );
            assert!(!reason.is_empty(), "no reason for {field}");
            if payload.is_object() && field == "." {
                // Only a reason about the object as a whole may name it.
                assert!(!reason.starts_with("missing field"), "{reason}");
            }
        }
    }
}
