//! The WebSocket sidecar, end to end: a real server on port 0 and real
//! WebSocket clients (tokio-tungstenite), over the memory layer and the
//! shared Redis, on fresh SQLite (and PostgreSQL for resume) databases.

mod auth;
mod cli;
mod delivery;
mod group_add;
mod harness;
#[allow(dead_code, unused_imports, unreachable_pub)]
#[path = "../herald/helpers.rs"]
mod helpers;
mod js_client;
mod limits;
mod liveness;
mod messages;
mod metrics;
mod resume;
mod schema;
