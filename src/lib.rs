//! Herald: a background-job worker with live notification delivery for
//! Django + Channels applications.
//!
//! The flow, one module per part: [`config`] describes the settings; jobs
//! are submitted through [`api`], the CLI or Celery's broker ([`ingress`])
//! into a [`queue`]; the [`worker`] runs them ([`jobs`]), writing rows
//! through [`store`]; [`payload`] shapes them as the contract says;
//! [`publish`] sends them over a [`layer`] to the clients; [`tokens`] checks
//! who a client is; [`sidecar`] serves them over WebSocket. [`http`]
//! composes every route; [`connect`] opens the store, queue and layer;
//! [`startup`] runs each command's roles and [`commands`] the CLI's
//! one-shot ones. Every process writes its heartbeat and figures
//! ([`fleet`]), which the operations [`dashboard`] reads. Which module may
//! import which is a test (tests/herald/layout.rs).

pub mod api;
pub mod batch;
pub mod commands;
pub mod config;
pub mod connect;
pub mod dashboard;
pub mod fleet;
pub mod http;
pub mod ingress;
pub mod jobs;
pub mod layer;
mod mailbox;
pub mod payload;
pub mod publish;
pub mod queue;
pub mod retry;
pub mod shutdown;
pub mod sidecar;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod worker;
