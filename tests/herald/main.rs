//! Herald's integration tests: one binary, one harness (`helpers`). Store
//! tests run the same body on SQLite and PostgreSQL, each on a fresh database.

mod apalis_layout;
mod api;
mod browser;
mod bursts;
mod catalog;
mod cli;
mod dashboard;
mod demo;
mod faults;
mod fuzz_corpus;
mod health;
mod helpers;
mod jobs;
mod layer_held;
mod layer_memory;
mod layer_redis;
mod layout;
mod openapi;
mod payload;
mod publish;
mod queue;
mod resilience;
mod scheduler;
#[path = "../support/servers.rs"]
mod servers;
mod store;
mod tokens;
