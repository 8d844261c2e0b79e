//! The dashboard's sign-in, rate-limited per client address: after
//! [`TRIES`] refused keys within [`WINDOW`], that address gets 429 (with
//! `Retry-After`) until the oldest refusal leaves the window, the right key
//! included, so a key cannot be guessed at speed. The address is the TCP
//! peer: behind a proxy on the same host every client shares the proxy's,
//! and the limit holds for all of them together.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refused sign-ins an address may make within [`WINDOW`].
pub(super) const TRIES: usize = 5;
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest are forgotten past it).
const ADDRESSES: usize = 10_000;

#[derive(Default)]
pub(super) struct Throttle {
    refused: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Throttle {
    fn address(peer: Option<SocketAddr>) -> IpAddr {
        peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| peer.ip())
    }

    /// `Some(wait)` while `peer` may not try again.
    pub(super) fn wait(&self, peer: Option<SocketAddr>) -> Option<Duration> {
        let now = Instant::now();
        let mut refused = crate::layer::lock(&self.refused);
        let times = refused.get_mut(&Self::address(peer))?;
        while times.front().is_some_and(|at| now - *at >= WINDOW) {
            times.pop_front();
        }
        (times.len() >= TRIES).then(|| WINDOW - (now - times[0]))
    }

    /// Counts a refused key from `peer`.
    pub(super) fn refused(&self, peer: Option<SocketAddr>) {
        let now = Instant::now();
        let mut refused = crate::layer::lock(&self.refused);
        if refused.len() >= ADDRESSES {
            refused.retain(|_, times| times.back().is_some_and(|at| now - *at < WINDOW));
        }
        refused
            .entry(Self::address(peer))
            .or_default()
            .push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_try_of_an_address_waits_and_others_do_not() {
        let throttle = Throttle::default();
        let one: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        for _ in 0..TRIES {
            assert!(throttle.wait(Some(one)).is_none());
            throttle.refused(Some(one));
        }
        let wait = throttle.wait(Some(one)).expect("throttled");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(throttle.wait(Some(other)).is_none(), "per address");
    }
}
