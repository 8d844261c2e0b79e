//! Herald's HTTP surface on one listener: the routes of the job API, the
//! WebSocket, the demo page and health, served by [`serve`] with the limits
//! that keep unauthenticated clients cheap.

mod serve;

pub use serve::{ServeLimits, serve};
