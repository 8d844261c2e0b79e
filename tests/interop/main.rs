//! Interop tests: herald's channel layers against the real Python packages
//! (channels, channels_redis, daphne), run from the virtual environment the
//! test command installs (tests/interop/requirements.txt), and the sidecar
//! reached from Python, and the Celery drop-in driven by the real celery
//! package.

mod bursts;
mod celery;
mod deploy;
mod django;
mod harness;
mod layer;
#[path = "../support/rabbit.rs"]
mod rabbit;
#[path = "../support/servers.rs"]
mod servers;
mod sidecar;
