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

/// Connects three parties on loopback; `via` optionally redirects S1's connection to S0 (a
/// proxy in front of S0's real listener, which is passed to `via` to start it).
fn mesh_with(
    ids: &[Identity; 3],
    pinned: [Vec<u8>; 3],
    timeout: Duration,
    via: Option<&dyn Fn(std::net::SocketAddr) -> std::net::SocketAddr>,
) -> [Result<TcpTransport, NetError>; 3] {
    let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a0, a1) = (l0.local_addr().unwrap(), l1.local_addr().unwrap());
    let s1_to_s0 = via.map_or(a0, |f| f(a0));
    let mut listeners = [Some(l0), Some(l1), None];
    std::thread::scope(|s| {
        let hs: Vec<_> = Role::ALL
            .into_iter()
            .map(|me| {
                let first = if me == Role::S1 { s1_to_s0 } else { a0 };
                let setup = TcpSetup {
                    me,
                    listener: listeners[me.index()].take(),
                    addrs: [Some(first), Some(a1), None],
                    identity: ids[me.index()].clone(),
                    certs: pinned.clone(),
                    timeout,
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

/// Fresh identities of S0, S1, S2.
fn identities() -> [Identity; 3] {
    [0, 1, 2].map(|i| Identity::generate(&format!("s{i}")).unwrap())
}

/// Their certificates, pinned as they are.
fn certs(ids: &[Identity; 3]) -> [Vec<u8>; 3] {
    [
        ids[0].cert.clone(),
        ids[1].cert.clone(),
        ids[2].cert.clone(),
    ]
}

fn mesh(ids: &[Identity; 3], pinned: [Vec<u8>; 3]) -> [Result<TcpTransport, NetError>; 3] {
    mesh_with(ids, pinned, Duration::from_secs(5), None)
}

#[test]
fn parties_over_mutual_tls_compute_exact_results() {
    let ids = identities();
    let [t0, t1, t2] = mesh(&ids, certs(&ids));
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
    let ids = identities();
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

/// A TCP proxy from `listener` to `target` that applies `mutate` to the byte stream from the
/// connecting side once `after` bytes have passed (the TLS handshake stays intact).
fn proxy(
    listener: TcpListener,
    target: std::net::SocketAddr,
    after: usize,
    mutate: fn(&mut Vec<u8>),
) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let Ok((mut client, _)) = listener.accept() else {
            return;
        };
        let Ok(mut server) = std::net::TcpStream::connect(target) else {
            return;
        };
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s2.read(&mut buf) {
                if n == 0 || c2.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let (mut seen, mut done) = (0usize, false);
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut chunk = buf[..n].to_vec();
            if !done && seen + n > after {
                mutate(&mut chunk);
                done = true;
            }
            seen += n;
            if server.write_all(&chunk).is_err() {
                break;
            }
        }
    });
}

#[test]
fn a_man_in_the_middle_causes_a_clean_failure() {
    let flip: fn(&mut Vec<u8>) = |c| {
        let i = c.len() / 2;
        c[i] ^= 0x40;
    };
    let replay: fn(&mut Vec<u8>) = |c| {
        let copy = c.clone();
        c.extend_from_slice(&copy);
    };
    let drop_: fn(&mut Vec<u8>) = |c| c.truncate(c.len() / 2);
    for (name, m) in [("flip", flip), ("replay", replay), ("drop", drop_)] {
        let ids = identities();
        let pinned = certs(&ids);
        // S1 reaches S0 through the proxy; everyone else connects directly.
        let start_proxy = |target: std::net::SocketAddr| {
            let lp = TcpListener::bind("127.0.0.1:0").unwrap();
            let ap = lp.local_addr().unwrap();
            proxy(lp, target, 2500, m);
            ap
        };
        let nets = mesh_with(&ids, pinned, Duration::from_secs(3), Some(&start_proxy));
        let nets: Vec<Box<dyn Transport>> = nets
            .into_iter()
            .map(|t| Box::new(t.unwrap()) as Box<dyn Transport>)
            .collect();
        let nets: [Box<dyn Transport>; 3] = nets.try_into().ok().unwrap();
        let op = BilinearOp::MatmulForward;
        let t = std::time::Instant::now();
        let r = run_local(
            &ClusterConfig {
                timeout: Duration::from_secs(3),
                ..ClusterConfig::default()
            },
            &Trusts::generate(),
            devices(),
            nets,
            &|p| {
                let mut last = Vec::new();
                for i in 0..3 {
                    last = p.linear_quantized(
                        (i, 0),
                        &op,
                        (&[64, 64], &quantized(values(4096, i, -9, 9))),
                        (&[64, 64], &quantized(values(4096, i + 9, -9, 9))),
                    )?;
                }
                Ok(last)
            },
        );
        assert!(r.is_err(), "{name}: the run must fail");
        assert!(t.elapsed() < Duration::from_secs(30), "{name}: no hang");
        let msg = r.err().unwrap().to_string();
        assert!(msg.contains("S0") || msg.contains("S1"), "{name}: {msg}");
    }
}

/// S0 and S1 send each other a product far larger than socket buffers at the same moment and
/// only then read (what every secure op does with C0' and C1'): blocking writes would deadlock
/// here; the transport must deliver both, intact and in order, and S2's small frames too.
#[test]
fn simultaneous_large_frames_do_not_deadlock() {
    use goten_enclave::OpHeader;
    use goten_party::Message;
    let ids = identities();
    let [t0, t1, t2] = mesh(&ids, certs(&ids));
    let ring = Ring::DEFAULT;
    // 8 x 1_000_000 elements: 21 MB per frame on the wire.
    let header = OpHeader {
        op_id: 1,
        iteration: 0,
        attempt: 0,
        part: 0,
        parts: 1,
        op: BilinearOp::MatmulForward,
        a_shape: vec![8, 1],
        b_shape: vec![1_000_000, 1],
    };
    let product = |seed: u64| Message::Product {
        header: header.clone(),
        tensor: RingTensor::from_residues(
            ring,
            &[8, 1_000_000],
            values(8_000_000, seed, -1000, 1000),
        )
        .unwrap(),
    };
    let exchange = |mut t: TcpTransport, peer: Role, mine: Message, theirs: Message| {
        for i in 0..3 {
            t.send(peer, mine.clone()).unwrap();
            t.send(Role::S2, Message::Resume { step: i }).unwrap();
            assert_eq!(t.recv(peer).unwrap(), theirs, "round {i}");
        }
    };
    let (m0, m1) = (product(1), product(2));
    std::thread::scope(|s| {
        let (a0, a1) = (m0.clone(), m1.clone());
        s.spawn(move || exchange(t0.unwrap(), Role::S1, a0, a1));
        s.spawn(move || exchange(t1.unwrap(), Role::S0, m1, m0));
        s.spawn(move || {
            let mut t = t2.unwrap();
            for i in 0..3 {
                for from in [Role::S0, Role::S1] {
                    assert_eq!(t.recv(from).unwrap(), Message::Resume { step: i });
                }
            }
        });
    });
}

#[test]
fn an_idle_connection_does_not_stall_start_up() {
    // A client that connects to S0 first and never speaks (a port scanner, a slow-loris) must
    // cost at most the per-connection handshake limit, not the whole start-up timeout.
    let ids = identities();
    let idle = std::sync::Mutex::new(Vec::new());
    let occupy = |a0: std::net::SocketAddr| {
        idle.lock()
            .unwrap()
            .push(std::net::TcpStream::connect(a0).unwrap());
        a0
    };
    let t = std::time::Instant::now();
    let [t0, t1, t2] = mesh_with(&ids, certs(&ids), Duration::from_secs(60), Some(&occupy));
    assert!(t0.is_ok() && t1.is_ok() && t2.is_ok());
    let waited = t.elapsed().as_secs_f64();
    let limit = goten_party::tcp::HANDSHAKE_SECS as f64 + 5.0;
    assert!(
        waited < limit,
        "start-up took {waited:.1} s with an idle client connected"
    );
    drop(idle);
}
