//! The TCP transport: one TLS 1.3 connection per party pair, mutually authenticated by pinned
//! certificates, carrying [`crate::wire`] frames.
//!
//! Where it sits: under the hosts, for parties on separate machines. The higher-numbered party
//! of each pair connects to the lower one's listener. Each side presents its certificate and
//! accepts exactly the peer certificate pinned for that role (no CA, no names): an unknown
//! certificate fails the handshake. Every frame carries a per-direction sequence number that
//! must advance by one, so a replayed, dropped or reordered frame is an error naming the peer;
//! TLS already rejects modified bytes. Reads time out after the configured timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use goten_enclave::Role;
use goten_field::Ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, StreamOwned};

pub use crate::pinning::{HANDSHAKE_SECS, Identity};
use crate::pinning::{Pinned, server_handshake, setup};
use crate::transport::{Message, NetError, Traffic, Transport};
use crate::wire;

/// One authenticated connection after its handshake, driven without blocking: outgoing
/// frames are buffered in the TLS connection and written whenever the socket accepts bytes,
/// incoming bytes are read whenever they arrive. Blocking writes would deadlock: S0 and S1 send
/// each other megabyte products at the same moment, and with both blocked in `write` neither
/// reads, so both socket buffers stay full.
struct Conn {
    tls: rustls::Connection,
    sock: TcpStream,
    /// Decrypted bytes not yet consumed as frames.
    inbuf: Vec<u8>,
    /// The peer closed the connection, or it failed (kind and description).
    closed: Option<(std::io::ErrorKind, String)>,
}

impl Conn {
    fn new(tls: rustls::Connection, sock: TcpStream) -> std::io::Result<Conn> {
        sock.set_nonblocking(true)?;
        // Nagle's algorithm would hold back the tail of each frame.
        sock.set_nodelay(true)?;
        let mut tls = tls;
        // Frames of any size are queued whole; memory is bounded by the protocol's messages.
        tls.set_buffer_limit(None);
        Ok(Conn {
            tls,
            sock,
            inbuf: Vec::new(),
            closed: None,
        })
    }

    fn close(&mut self, kind: std::io::ErrorKind, why: &str) {
        if self.closed.is_none() {
            self.closed = Some((kind, why.to_string()));
        }
    }

    fn closed_error(&self) -> Option<std::io::Error> {
        self.closed
            .as_ref()
            .map(|(k, why)| std::io::Error::new(*k, why.clone()))
    }

    /// Writes what the socket takes now. Returns whether bytes moved.
    fn pump_write(&mut self) -> std::io::Result<bool> {
        let mut moved = false;
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => break,
                Ok(_) => moved = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Reads and decrypts what has arrived. Returns whether bytes moved.
    fn pump_read(&mut self) -> std::io::Result<bool> {
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let mut moved = false;
        loop {
            // Hold at most the frame being assembled (plus one read's worth): a peer that sends
            // ahead of the protocol waits in its own send buffer, not in our memory.
            if self.holds_whole_frame() {
                return Ok(moved);
            }
            let eof = match self.tls.read_tls(&mut self.sock) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(moved),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.close(e.kind(), &e.to_string());
                    return Err(e);
                }
            };
            moved = true;
            if let Err(e) = self.tls.process_new_packets() {
                // Modified or forged TLS records: the connection is unusable.
                self.close(std::io::ErrorKind::InvalidData, &format!("TLS error: {e}"));
                return Err(self.closed_error().expect("just closed"));
            }
            // Drain the plaintext after every record batch: rustls bounds what it holds.
            self.drain_plaintext()?;
            if eof {
                self.close(std::io::ErrorKind::UnexpectedEof, "connection closed");
                return Ok(moved);
            }
        }
    }

    /// Whether the inbound buffer already holds a complete frame (or a header that no frame may
    /// have, which the reader will refuse): reading more can wait until it is consumed.
    fn holds_whole_frame(&self) -> bool {
        let Some(head) = self.inbuf.get(..wire::HEADER) else {
            return false;
        };
        let head: [u8; wire::HEADER] = head.try_into().expect("header length");
        match wire::body_len(&head) {
            Ok(n) => self.inbuf.len() >= wire::HEADER + n,
            Err(_) => true,
        }
    }

    fn drain_plaintext(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => {
                    self.close(std::io::ErrorKind::UnexpectedEof, "connection closed");
                    return Ok(());
                }
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    self.close(e.kind(), &e.to_string());
                    return Err(e);
                }
            }
        }
    }
}

/// How to reach and recognise the other parties.
pub struct TcpSetup {
    /// This party.
    pub me: Role,
    /// Listener for the higher-numbered peers (S0 and S1 need one).
    pub listener: Option<TcpListener>,
    /// Addresses of the lower-numbered peers' listeners.
    pub addrs: [Option<SocketAddr>; 3],
    /// This party's identity.
    pub identity: Identity,
    /// Pinned certificates of S0, S1, S2.
    pub certs: [Vec<u8>; 3],
    /// Connect and receive timeout.
    pub timeout: Duration,
    /// Ring of the shares in product frames.
    pub ring: Ring,
}

/// An endpoint connected to both peers.
pub struct TcpTransport {
    me: Role,
    conns: [Option<Conn>; 3],
    send_seq: [u64; 3],
    recv_seq: [u64; 3],
    ring: Ring,
    timeout: f64,
    busy: f64,
    sent: u64,
    traffic: Traffic,
}

fn tls_err(peer: Role, e: impl std::fmt::Display) -> NetError {
    NetError::Unexpected {
        peer,
        expected: "an authenticated TLS 1.3 connection".into(),
        got: e.to_string(),
    }
}

impl TcpTransport {
    /// Connects to the lower-numbered peers and accepts the higher-numbered ones.
    pub fn establish(s: TcpSetup) -> Result<TcpTransport, NetError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let others: Vec<Role> = Role::ALL.into_iter().filter(|&r| r != s.me).collect();
        let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(s.identity.key.clone()));
        let chain = vec![CertificateDer::from(s.identity.cert.clone())];
        let mut conns: [Option<Conn>; 3] = [None, None, None];
        // Outgoing: to each lower-numbered peer, pinning that peer's certificate.
        for &peer in others.iter().filter(|&&r| r < s.me) {
            let addr =
                s.addrs[peer.index()].ok_or_else(|| setup(format!("no address for {peer}")))?;
            let verifier = Arc::new(Pinned {
                allowed: vec![s.certs[peer.index()].clone()],
                provider: provider.clone(),
            });
            let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| tls_err(peer, e))?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(chain.clone(), key())
                .map_err(|e| tls_err(peer, e))?;
            let tcp = connect_retry(addr, s.timeout)
                .map_err(|e| tls_err(peer, format!("cannot connect to {addr}: {e}")))?;
            tcp.set_read_timeout(Some(s.timeout))
                .map_err(|e| tls_err(peer, e))?;
            let conn = ClientConnection::new(
                Arc::new(cfg),
                ServerName::try_from("goten").expect("valid name"),
            )
            .map_err(|e| tls_err(peer, e))?;
            let mut stream = StreamOwned::new(conn, tcp);
            // Complete the handshake now, so a refused certificate fails here.
            while stream.conn.is_handshaking() {
                stream
                    .conn
                    .complete_io(&mut stream.sock)
                    .map_err(|e| tls_err(peer, e))?;
            }
            let StreamOwned { conn, sock } = stream;
            conns[peer.index()] = Some(Conn::new(conn.into(), sock).map_err(|e| tls_err(peer, e))?);
        }
        // Incoming: from each higher-numbered peer, recognised by its pinned certificate.
        let higher: Vec<Role> = others.iter().copied().filter(|&r| r > s.me).collect();
        if !higher.is_empty() {
            let listener = s
                .listener
                .as_ref()
                .ok_or_else(|| setup(format!("{} needs a listener", s.me)))?;
            let allowed: Vec<Vec<u8>> = higher.iter().map(|r| s.certs[r.index()].clone()).collect();
            let verifier = Arc::new(Pinned {
                allowed,
                provider: provider.clone(),
            });
            let cfg = Arc::new(
                rustls::ServerConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| tls_err(s.me, e))?
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain.clone(), key())
                    .map_err(|e| tls_err(s.me, e))?,
            );
            listener
                .set_nonblocking(true)
                .map_err(|e| tls_err(s.me, e))?;
            // Start-up deadline, checked on every pass; each accepted connection gets at most
            // HANDSHAKE_SECS to finish TLS, so an idle or trickling client (a port scanner, a
            // slow-loris) delays start-up by seconds, never by the whole timeout.
            let deadline = Instant::now() + s.timeout;
            while higher.iter().any(|r| conns[r.index()].is_none()) {
                let now = Instant::now();
                if now > deadline {
                    let missing = higher
                        .iter()
                        .find(|r| conns[r.index()].is_none())
                        .expect("one is missing");
                    return Err(NetError::Timeout {
                        peer: *missing,
                        secs: s.timeout.as_secs_f64(),
                    });
                }
                let (tcp, _) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => return Err(tls_err(s.me, e)),
                };
                let limit = Duration::from_secs(HANDSHAKE_SECS)
                    .min(deadline.saturating_duration_since(now))
                    .max(Duration::from_millis(100));
                let Some(stream) = server_handshake(tcp, &cfg, limit) else {
                    continue; // an unknown, idle or slow client: drop it and keep listening
                };
                stream
                    .sock
                    .set_read_timeout(Some(s.timeout))
                    .map_err(|e| tls_err(s.me, e))?;
                let Some(cert) = stream
                    .conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec())
                else {
                    continue;
                };
                if let Some(peer) = higher.iter().find(|r| s.certs[r.index()] == cert) {
                    let StreamOwned { conn, sock } = stream;
                    conns[peer.index()] =
                        Some(Conn::new(conn.into(), sock).map_err(|e| tls_err(*peer, e))?);
                }
            }
        }
        Ok(TcpTransport {
            me: s.me,
            conns,
            send_seq: [0; 3],
            recv_seq: [0; 3],
            ring: s.ring,
            timeout: s.timeout.as_secs_f64(),
            busy: 0.0,
            sent: 0,
            traffic: Traffic::default(),
        })
    }

    /// Decode products in `ring` from now on (S2 learns the job's ring in the handshake).
    pub fn set_ring(&mut self, ring: Ring) {
        self.ring = ring;
    }

    fn conn(&mut self, peer: Role) -> Result<&mut Conn, NetError> {
        let me = self.me;
        self.conns[peer.index()]
            .as_mut()
            .ok_or(NetError::NoRoute { from: me, to: peer })
    }
}

fn connect_retry(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e)
                if Instant::now() < deadline
                    && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e),
        }
    }
}

fn io_err(peer: Role, e: std::io::Error, secs: f64) -> NetError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            NetError::Timeout { peer, secs }
        }
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted => NetError::PeerGone { peer },
        _ => NetError::Unexpected {
            peer,
            expected: "a frame".into(),
            got: e.to_string(),
        },
    }
}

impl TcpTransport {
    /// Moves bytes on every connection without blocking; returns whether anything moved.
    /// Errors are kept on the connection and reported when its peer is next used.
    fn pump_all(&mut self) -> bool {
        let mut moved = false;
        for c in self.conns.iter_mut().flatten() {
            if c.closed.is_none() {
                moved |= c.pump_write().unwrap_or_else(|e| {
                    c.close(e.kind(), &e.to_string());
                    false
                });
                moved |= c.pump_read().unwrap_or(false);
            }
        }
        moved
    }

    /// The next complete frame from `from`, if its bytes have arrived.
    fn take_frame(&mut self, from: Role) -> Result<Option<Vec<u8>>, NetError> {
        let c = self.conn(from)?;
        if c.inbuf.len() < 16 {
            return Ok(None);
        }
        let head: [u8; 16] = c.inbuf[..16].try_into().expect("16 bytes");
        let n = wire::body_len(&head).map_err(|e| NetError::Unexpected {
            peer: from,
            expected: "a goten frame".into(),
            got: e.to_string(),
        })?;
        if c.inbuf.len() < 16 + n {
            return Ok(None);
        }
        let rest = c.inbuf.split_off(16 + n);
        Ok(Some(std::mem::replace(&mut c.inbuf, rest)))
    }

    /// Waits (moving every connection's bytes meanwhile) for a whole frame from `from`.
    fn wait_frame(&mut self, from: Role) -> Result<Vec<u8>, NetError> {
        let start = Instant::now();
        let mut idle = Duration::from_micros(20);
        loop {
            if let Some(f) = self.take_frame(from)? {
                return Ok(f);
            }
            if let Some(e) = self.conn(from)?.closed_error() {
                return Err(io_err(from, e, self.timeout));
            }
            if self.pump_all() {
                idle = Duration::from_micros(20);
                continue;
            }
            if start.elapsed().as_secs_f64() > self.timeout {
                return Err(NetError::Timeout {
                    peer: from,
                    secs: self.timeout,
                });
            }
            // Nothing moved: back off up to 1 ms so a waiting party costs no CPU.
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(1));
        }
    }
}

impl Drop for TcpTransport {
    /// Delivers what is still queued (a party's last frames) before the sockets close.
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs_f64(self.timeout.min(10.0));
        while Instant::now() < deadline
            && self
                .conns
                .iter()
                .flatten()
                .any(|c| c.closed.is_none() && c.tls.wants_write())
        {
            if !self.pump_all() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
}

impl Transport for TcpTransport {
    fn me(&self) -> Role {
        self.me
    }

    fn send(&mut self, to: Role, msg: Message) -> Result<(), NetError> {
        let t = Instant::now();
        let seq = self.send_seq[to.index()];
        self.send_seq[to.index()] += 1;
        self.sent += msg.elements() as u64;
        let frame = wire::encode(&msg, seq);
        self.traffic.sent += frame.len() as u64;
        let c = self.conn(to)?;
        if let Some(e) = c.closed_error() {
            return Err(io_err(to, e, 0.0));
        }
        let r = c
            .tls
            .writer()
            .write_all(&frame)
            .map_err(|e| io_err(to, e, 0.0));
        self.pump_all();
        self.busy += t.elapsed().as_secs_f64();
        r
    }

    fn recv(&mut self, from: Role) -> Result<Message, NetError> {
        let t = Instant::now();
        let r = self.wait_frame(from);
        self.busy += t.elapsed().as_secs_f64();
        let frame = r?;
        self.traffic.received += frame.len() as u64;
        let (seq, msg) = wire::decode(&frame, self.ring).map_err(|e| NetError::Unexpected {
            peer: from,
            expected: "a well-formed frame".into(),
            got: e.to_string(),
        })?;
        let want = self.recv_seq[from.index()];
        if seq != want {
            return Err(NetError::Unexpected {
                peer: from,
                expected: format!("frame {want}"),
                got: format!("frame {seq} (replayed, dropped or reordered)"),
            });
        }
        self.recv_seq[from.index()] += 1;
        Ok(msg)
    }

    fn busy_secs(&self) -> f64 {
        self.busy
    }

    fn elements_sent(&self) -> u64 {
        self.sent
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> [TcpTransport; 3] {
        let ids = [0, 1, 2].map(|i| Identity::generate(&format!("s{i}")).unwrap());
        let certs = [
            ids[0].cert.clone(),
            ids[1].cert.clone(),
            ids[2].cert.clone(),
        ];
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
                        certs: certs.clone(),
                        timeout: Duration::from_secs(5),
                        ring: Ring::DEFAULT,
                    };
                    s.spawn(move || TcpTransport::establish(setup).unwrap())
                })
                .collect();
            let mut it = hs.into_iter().map(|h| h.join().unwrap());
            [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
        })
    }

    /// A peer holding valid TLS keys that skips, repeats or reorders frames (a buggy or
    /// malicious party; a network attacker cannot do this under TLS) is caught by the
    /// per-direction sequence numbers.
    #[test]
    fn skipped_replayed_and_reordered_frames_are_rejected() {
        let msg = |step| Message::Resume { step };
        let [mut t0, mut t1, _t2] = mesh();
        // In order: accepted.
        t0.send(Role::S1, msg(1)).unwrap();
        assert_eq!(t1.recv(Role::S0).unwrap(), msg(1));
        // Skipped (a dropped frame): frame 2 arrives where 1 is due.
        t0.send_seq[1] += 1;
        t0.send(Role::S1, msg(2)).unwrap();
        let e = t1.recv(Role::S0).unwrap_err().to_string();
        assert!(
            e.contains("expected frame 1") && e.contains("frame 2"),
            "{e}"
        );
        // Replayed: frame 0 again.
        let [mut t0, mut t1, _t2] = mesh();
        t0.send(Role::S1, msg(1)).unwrap();
        assert_eq!(t1.recv(Role::S0).unwrap(), msg(1));
        t0.send_seq[1] = 0;
        t0.send(Role::S1, msg(1)).unwrap();
        let e = t1.recv(Role::S0).unwrap_err().to_string();
        assert!(e.contains("replayed"), "{e}");
        // Reordered: frames 1 then 0.
        let [mut t0, mut t1, _t2] = mesh();
        t0.send_seq[1] = 1;
        t0.send(Role::S1, msg(1)).unwrap();
        t0.send_seq[1] = 0;
        t0.send(Role::S1, msg(0)).unwrap();
        let e = t1.recv(Role::S0).unwrap_err().to_string();
        assert!(
            e.contains("expected frame 0") && e.contains("frame 1"),
            "{e}"
        );
    }
}
