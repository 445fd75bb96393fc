//! Three parties over loopback TCP with mutual TLS: the protocol gives the exact results, and
//! a party presenting an unpinned certificate is refused.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{devices, quantized, values};
use goten_device::naive;
use goten_enclave::Role;
use goten_field::{BilinearOp, Conv2dParams, Ring, RingTensor};
use goten_party::tcp::{Identity, TcpSetup, TcpTransport};
use goten_party::{ClusterConfig, NetError, Transport, Trusts, run_local};

fn mesh(ids: &[Identity; 3], pinned: [Vec<u8>; 3]) -> [Result<TcpTransport, NetError>; 3] {
    let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = [
        Some(l0.local_addr().unwrap()),
        Some(l1.local_addr().unwrap()),
        None,
    ];
    let mut listeners = [Some(l0), Some(l1), None];
    std::thread::scope(|s| {
        let hs: Vec<_> = Role::ALL
            .into_iter()
            .map(|me| {
                let setup = TcpSetup {
                    me,
                    listener: listeners[me.index()].take(),
                    addrs,
                    identity: ids[me.index()].clone(),
                    certs: pinned.clone(),
                    timeout: Duration::from_secs(5),
                    ring: Ring::DEFAULT,
                };
                s.spawn(move || TcpTransport::establish(setup))
            })
            .collect();
        let mut out = hs.into_iter().map(|h| h.join().unwrap());
        [
            out.next().unwrap(),
            out.next().unwrap(),
            out.next().unwrap(),
        ]
    })
}

#[test]
fn parties_over_mutual_tls_compute_exact_results() {
    let ids = [0, 1, 2].map(|i| Identity::generate(&format!("s{i}")).unwrap());
    let pinned = [
        ids[0].cert.clone(),
        ids[1].cert.clone(),
        ids[2].cert.clone(),
    ];
    let [t0, t1, t2] = mesh(&ids, pinned);
    let nets: [Box<dyn Transport>; 3] = [
        Box::new(t0.unwrap()),
        Box::new(t1.unwrap()),
        Box::new(t2.unwrap()),
    ];
    let op = BilinearOp::Conv2dForward(Conv2dParams::new(1, 1));
    let (sa, sb) = ([2usize, 3, 6, 6], [4usize, 3, 3, 3]);
    let (a, b) = (values(216, 1, -128, 127), values(108, 2, -128, 127));
    let out = run_local(
        &ClusterConfig::default(),
        &Trusts::generate(),
        devices(),
        nets,
        &|p| {
            p.linear_quantized(
                (0, 0),
                &op,
                (&sa, &quantized(a.clone())),
                (&sb, &quantized(b.clone())),
            )
        },
    )
    .unwrap();
    let ring = Ring::DEFAULT;
    let want = naive::bilinear(
        &op,
        &RingTensor::from_i64(
            ring,
            &sa,
            &a.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
        )
        .unwrap(),
        &RingTensor::from_i64(
            ring,
            &sb,
            &b.iter().map(|&v| i64::from(v)).collect::<Vec<_>>(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(out.results.0, out.results.1);
    let got: Vec<i32> = out.results.0.iter().map(|&v| ring.reduce_i64(v)).collect();
    assert_eq!(got, want.data());
    assert!(out.reports[0].elements_sent > 0);
}

#[test]
fn an_unpinned_certificate_is_refused() {
    let ids = [0, 1, 2].map(|i| Identity::generate(&format!("s{i}")).unwrap());
    let stranger = Identity::generate("mallory").unwrap();
    // S0 and S1 expect a different S2 than the one that connects.
    let pinned = [
        ids[0].cert.clone(),
        ids[1].cert.clone(),
        stranger.cert.clone(),
    ];
    let [t0, t1, t2] = mesh(&ids, pinned);
    // S0 and S1 never accept the stranger: they give up naming S2.
    for t in [t0, t1] {
        let e = t
            .err()
            .expect("no connection from an unpinned S2")
            .to_string();
        assert!(e.contains("S2"), "{e}");
    }
    // In TLS 1.3 the client learns of its rejection only when it next reads: it cannot talk.
    if let Ok(mut t2) = t2 {
        assert!(t2.recv(Role::S0).is_err());
    }
}
