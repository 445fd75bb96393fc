//! Loopback ports for parties that bind later: the local launcher's cluster files and the
//! tests' clusters.
//!
//! Where it sits: beside [`crate::launcher`], which writes the ports into a cluster file before
//! the party processes exist. A port probed free with `bind(0)` and released comes from the
//! kernel's ephemeral range, which every `bind(0)` and every outgoing connection draws from:
//! until the party binds it, another test's listener or a connection's own end can take it, and
//! a client that keeps reconnecting to a port in that range can even connect to itself. So the
//! ports here come from below the ephemeral range, at random, checked free, and this process
//! never hands one out twice.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::RuntimeError;

/// Ports this process handed out (launches in parallel threads, as tests run them).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Lowest port handed out: above the registered services most machines run.
const LOWEST: u16 = 10_000;

/// The kernel's ephemeral range (Linux), or the common default where it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// The range to draw from: below the ephemeral range when it leaves room, else above it.
fn range() -> Option<(u16, u16)> {
    let (lo, hi) = ephemeral_range();
    if lo > LOWEST + 1_000 {
        Some((LOWEST, lo - 1))
    } else if hi < u16::MAX - 1_000 {
        Some((hi + 1, u16::MAX))
    } else {
        None
    }
}

fn probe(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first port of `lo..=hi` from `start` on (wrapping) that is free and not in `taken`;
/// it goes into `taken`. A bounded scan: a range with every port in use gives `None`.
fn pick((lo, hi): (u16, u16), start: u32, taken: &mut BTreeSet<u16>) -> Option<u16> {
    let span = u32::from(hi - lo) + 1;
    (0..span.min(4_096))
        .map(|k| lo + ((start + k) % span) as u16)
        .find(|&port| !taken.contains(&port) && probe(port))
        .inspect(|&port| {
            taken.insert(port);
        })
}

/// A loopback port that is free now, outside the ephemeral range where the machine allows,
/// and not handed out before by this process.
pub fn reserve_loopback_port() -> Result<u16, RuntimeError> {
    let mut taken = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((lo, hi)) = range() {
        let mut seed = [0u8; 2];
        getrandom::fill(&mut seed).map_err(|e| {
            RuntimeError::storage(
                "no entropy to pick a loopback port",
                std::io::Error::other(e.to_string()),
            )
        })?;
        if let Some(port) = pick((lo, hi), u32::from(u16::from_le_bytes(seed)), &mut taken) {
            return Ok(port);
        }
    }
    // No room outside the ephemeral range: let the kernel pick (the old behaviour).
    for _ in 0..64 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| RuntimeError::storage("cannot find a free loopback port", e))?
            .port();
        if taken.insert(port) {
            return Ok(port);
        }
    }
    Err(RuntimeError::storage(
        "cannot find a free loopback port",
        std::io::Error::from(std::io::ErrorKind::AddrInUse),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports are distinct, free, and outside the ephemeral range when it leaves room.
    #[test]
    fn ports_are_distinct_free_and_not_ephemeral() {
        let (lo, hi) = ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| reserve_loopback_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for &p in &ports {
            if range().is_some() {
                assert!(
                    !(lo..=hi).contains(&p),
                    "{p} is in the ephemeral range {lo}-{hi}"
                );
            }
        }
        // Free: the first one binds (nothing of ours holds it).
        TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    }

    /// A port someone listens on, or one handed out before, is passed over.
    #[test]
    fn busy_and_handed_out_ports_are_passed_over() {
        let (lo, hi) = range().unwrap_or((20_000, 30_000));
        let mut none = BTreeSet::new();
        let busy = pick((lo, hi), 0, &mut none).unwrap();
        let _held = TcpListener::bind(("127.0.0.1", busy)).unwrap();
        let mut taken = BTreeSet::new();
        let start = u32::from(busy - lo);
        let next = pick((lo, hi), start, &mut taken).unwrap();
        assert_ne!(next, busy);
        assert!(taken.contains(&next));
        let after = pick((lo, hi), start, &mut taken).unwrap();
        assert_ne!(after, next);
        assert_ne!(after, busy);
    }
}
