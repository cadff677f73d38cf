//! Failed token reviews counted per caller address, so that an address presenting junk is
//! slowed and then refused, without locking out anyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// After this many failed reviews within [`FAILURE_WINDOW`] from one address, that address's new
/// tokens are refused unreviewed until the window ends (tokens already known keep their cached
/// verdict; other addresses are not affected).
const FAILURES_PER_WINDOW: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Addresses whose failures are remembered; past it, the quiet ones are forgotten first.
const PEER_LIMIT: usize = 4096;

/// The failure windows of the addresses with recent failed reviews.
#[derive(Default)]
pub(super) struct Peers(Mutex<HashMap<IpAddr, FailureWindow>>);

impl Peers {
    pub(super) fn record(&self, peer: IpAddr) -> PeerRecord {
        let Ok(mut peers) = self.0.lock() else {
            return PeerRecord::Clean;
        };
        let Some(w) = peers.get_mut(&peer) else {
            return PeerRecord::Clean;
        };
        if w.saturated(Instant::now()) {
            PeerRecord::Saturated
        } else if w.failures > 0 {
            PeerRecord::Suspect
        } else {
            PeerRecord::Clean
        }
    }

    pub(super) fn failed(&self, peer: IpAddr) {
        let Ok(mut peers) = self.0.lock() else {
            return;
        };
        let now = Instant::now();
        if peers.len() >= PEER_LIMIT && !peers.contains_key(&peer) {
            peers.retain(|_, w| {
                w.roll(now);
                w.failures > 0
            });
            if peers.len() >= PEER_LIMIT {
                // A flood from more addresses than the map holds: drop the oldest window.
                if let Some(oldest) = peers
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| *ip)
                {
                    peers.remove(&oldest);
                }
            }
        }
        peers.entry(peer).or_default().record(now);
    }
}

/// Where a caller's address stands with its recent failed reviews.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PeerRecord {
    Clean,
    /// Some failures in the window: reviewed, in the suspects' slot.
    Suspect,
    /// The budget is spent: refused unreviewed until the window ends.
    Saturated,
}

/// Failed TokenReviews of one address in the current window.
#[derive(Debug, Default)]
struct FailureWindow {
    started: Option<Instant>,
    failures: u32,
}

impl FailureWindow {
    fn roll(&mut self, now: Instant) {
        if self
            .started
            .is_none_or(|s| now.duration_since(s) >= FAILURE_WINDOW)
        {
            self.started = Some(now);
            self.failures = 0;
        }
    }

    fn record(&mut self, now: Instant) {
        self.roll(now);
        self.failures += 1;
    }

    fn saturated(&mut self, now: Instant) -> bool {
        self.roll(now);
        self.failures >= FAILURES_PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn failures_close_the_door_for_their_own_address_only() {
        let peers = Peers::default();
        let junk: IpAddr = "10.0.0.66".parse().expect("ip");
        let operator: IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(peers.record(junk), PeerRecord::Clean);
        peers.failed(junk);
        assert_eq!(peers.record(junk), PeerRecord::Suspect);
        for _ in 1..FAILURES_PER_WINDOW {
            peers.failed(junk);
        }
        assert_eq!(peers.record(junk), PeerRecord::Saturated);
        assert_eq!(peers.record(operator), PeerRecord::Clean);
    }

    #[test]
    fn the_failure_map_stays_bounded() {
        let peers = Peers::default();
        for i in 0..(PEER_LIMIT as u32 + 10) {
            peers.failed(IpAddr::V4(Ipv4Addr::from(i)));
        }
        let len = peers.0.lock().map(|p| p.len()).unwrap_or(0);
        assert!(len <= PEER_LIMIT, "{len}");
    }

    #[test]
    fn many_failed_reviews_close_the_door_for_a_while() {
        let mut w = FailureWindow::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_PER_WINDOW {
            assert!(!w.saturated(t0));
            w.record(t0);
        }
        assert!(w.saturated(t0 + Duration::from_secs(1)));
        assert!(!w.saturated(t0 + FAILURE_WINDOW));
    }
}
