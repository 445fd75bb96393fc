//! Provisioning: the data owner releases the data key to attested enclaves, never to a host.
//!
//! Where it sits: between the key exchange and the training session. S0's and S1's hosts each
//! listen on a provisioning address; the data owner (`goten provision`, or the local launcher
//! acting for it) connects to both. The wire carries only public values and ciphertext, so it
//! needs no TLS; what makes it safe is the evidence and the HPKE seal:
//!
//! ```text
//! client -> host   "GOTEN-PROVISION/2\n" || nonce (32 bytes)
//! host   -> client role (1) || service public key (32) || evidence length (u32 LE) || evidence
//!                  (the hello's evidence encoding: simulated, or a hardware quote or report,
//!                   for the report data SHA-256("goten/service/v1" || role || key || nonce))
//! client -> host   length (u32 LE) || HPKE(service key, data key)
//! host   -> client "OK\n" or "ERR <reason>\n"
//! ```
//!
//! The client checks both enclaves' evidence with the cluster's verifier (simulated platform
//! keys and pinned measurement, or the TEE policy and collateral) and that both name the same
//! service key before it sends anything secret. A
//! host that swaps the key, replays old evidence or forges it is refused; one that drops the
//! message only stops the run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use goten_enclave::attest::{Evidence, EvidenceVerifier};
use goten_enclave::service::{seal_provision, service_report_data};
use goten_enclave::{KeyedEnclave, Role};
use thiserror::Error;

/// The request line that opens a provisioning connection.
pub const MAGIC: &[u8; 18] = b"GOTEN-PROVISION/2\n";
/// Seconds a connection has for each exchange before it is dropped.
pub const EXCHANGE_SECS: u64 = 10;
/// The largest provisioning message accepted.
const MAX_SEALED: u32 = 4096;
/// The largest evidence accepted in an answer (a DCAP quote is a few KiB).
const MAX_EVIDENCE: u32 = 64 * 1024;

/// How a host obtains its enclave's evidence for given report data: the simulated platform's
/// signature, or a quote or report from the TEE (`crate::Trusts::evidence`).
pub type EvidenceSource<'a> = dyn Fn(&[u8; 32]) -> Result<Evidence, String> + Sync + 'a;

/// Why provisioning failed, and on whose side.
#[derive(Debug, Error)]
pub enum ProvisionError {
    /// The enclave's evidence is refused: forged, replayed, another program or another key.
    #[error("{role}'s enclave is not trusted: {why}")]
    Untrusted {
        /// Which party.
        role: Role,
        /// Why.
        why: String,
    },
    /// The network or the peer's answer failed.
    #[error("provisioning {role} at {addr}: {why}")]
    Net {
        /// Which party.
        role: Role,
        /// Where.
        addr: String,
        /// Why.
        why: String,
    },
    /// Nobody provisioned the key in time.
    #[error(
        "no data owner provisioned the data key within {0} s (run goten provision against this party)"
    )]
    Timeout(u64),
    /// The host could not listen.
    #[error("cannot listen for the data owner: {0}")]
    Listen(String),
}

/// An enclave a data owner can provision: in this process, or behind an enclave process.
pub trait Provisionable {
    /// S0 or S1.
    fn role(&self) -> Role;
    /// The service key and the report data its evidence must bind for `nonce`.
    fn service(&mut self, nonce: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String>;
    /// Hands the sealed data key to the enclave.
    fn provision(&mut self, sealed: &[u8]) -> Result<(), String>;
}

impl Provisionable for KeyedEnclave {
    fn role(&self) -> Role {
        KeyedEnclave::role(self)
    }
    fn service(&mut self, nonce: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), String> {
        Ok((self.service_public_key(), self.service_report_data(nonce)))
    }
    fn provision(&mut self, sealed: &[u8]) -> Result<(), String> {
        self.accept_provision(sealed).map_err(|e| e.to_string())
    }
}

/// What a host shows a data owner: its enclave's service key and evidence for one nonce.
fn answer(
    enclave: &mut dyn Provisionable,
    evidence: &EvidenceSource<'_>,
    nonce: &[u8; 32],
) -> std::io::Result<Vec<u8>> {
    let (public, rd) = enclave.service(nonce).map_err(std::io::Error::other)?;
    let e = evidence(&rd).map_err(std::io::Error::other)?;
    let mut w = crate::wire::W(Vec::new());
    w.evidence(&e);
    let mut out = vec![enclave.role().index() as u8];
    out.extend_from_slice(&public);
    out.extend_from_slice(&(w.0.len() as u32).to_le_bytes());
    out.extend_from_slice(&w.0);
    Ok(out)
}

/// One provisioning connection on the host's side; `Ok(true)` once the enclave holds the key.
fn serve_one(
    mut s: TcpStream,
    enclave: &mut dyn Provisionable,
    evidence: &EvidenceSource<'_>,
) -> std::io::Result<bool> {
    s.set_read_timeout(Some(Duration::from_secs(EXCHANGE_SECS)))?;
    s.set_write_timeout(Some(Duration::from_secs(EXCHANGE_SECS)))?;
    let mut head = [0u8; 18 + 32];
    s.read_exact(&mut head)?;
    if &head[..18] != MAGIC {
        s.write_all(b"ERR not a goten provisioning request\n")?;
        return Ok(false);
    }
    let nonce: [u8; 32] = head[18..].try_into().expect("32 bytes");
    s.write_all(&answer(enclave, evidence, &nonce)?)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = u32::from_le_bytes(len);
    if n > MAX_SEALED {
        s.write_all(b"ERR message too large\n")?;
        return Ok(false);
    }
    let mut sealed = vec![0u8; n as usize];
    s.read_exact(&mut sealed)?;
    match enclave.provision(&sealed) {
        Ok(()) => {
            s.write_all(b"OK\n")?;
            Ok(true)
        }
        Err(e) => {
            s.write_all(format!("ERR {e}\n").as_bytes())?;
            Ok(false)
        }
    }
}

/// The host's side: answers data owners on `listener` until one provisions the data key into
/// `enclave`, or `timeout` passes. Bad or idle connections are dropped and the host keeps
/// listening.
pub fn serve(
    listener: &TcpListener,
    enclave: &mut dyn Provisionable,
    evidence: &EvidenceSource<'_>,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| ProvisionError::Listen(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            return Err(ProvisionError::Timeout(timeout.as_secs()));
        }
        match listener.accept() {
            Ok((s, _)) => {
                if s.set_nonblocking(false).is_ok()
                    && matches!(serve_one(s, enclave, evidence), Ok(true))
                {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(ProvisionError::Listen(e.to_string())),
        }
    }
}

/// A connection to one party, its evidence checked.
struct Checked {
    stream: TcpStream,
    service: [u8; 32],
}

fn connect(
    role: Role,
    addr: SocketAddr,
    verifier: &dyn EvidenceVerifier,
    timeout: Duration,
) -> Result<Checked, ProvisionError> {
    let net = |why: String| ProvisionError::Net {
        role,
        addr: addr.to_string(),
        why,
    };
    let deadline = Instant::now() + timeout;
    // The party opens its provisioning port only after the key exchange: retry until then.
    let mut s = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(EXCHANGE_SECS)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(net(format!("cannot connect: {e}"))),
        }
    };
    let io = |e: std::io::Error| net(e.to_string());
    s.set_read_timeout(Some(Duration::from_secs(EXCHANGE_SECS)))
        .map_err(io)?;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| net(format!("no entropy: {e}")))?;
    s.write_all(&[MAGIC.as_slice(), &nonce].concat())
        .map_err(io)?;
    let mut head = [0u8; 1 + 32 + 4];
    s.read_exact(&mut head)
        .map_err(|e| net(format!("no evidence from the party: {e}")))?;
    if head[0] != role.index() as u8 {
        return Err(ProvisionError::Untrusted {
            role,
            why: format!("the party at {addr} answers as S{}", head[0]),
        });
    }
    let service: [u8; 32] = head[1..33].try_into().expect("32 bytes");
    let n = u32::from_le_bytes(head[33..37].try_into().expect("4 bytes"));
    if n > MAX_EVIDENCE {
        return Err(net(format!("evidence of {n} bytes is beyond the limit")));
    }
    let mut raw = vec![0u8; n as usize];
    s.read_exact(&mut raw)
        .map_err(|e| net(format!("truncated evidence: {e}")))?;
    let mut r = crate::wire::R(&raw);
    let evidence = r
        .evidence()
        .map_err(|e| net(format!("malformed evidence: {e}")))?;
    if !r.0.is_empty() {
        return Err(net("trailing bytes after the evidence".into()));
    }
    let expected = service_report_data(role, &service, &nonce);
    verifier
        .verify(&evidence, &expected)
        .map_err(|e| ProvisionError::Untrusted {
            role,
            why: e.to_string(),
        })?;
    Ok(Checked { stream: s, service })
}

/// The data owner's side: checks S0's and S1's enclaves (evidence for a fresh nonce each,
/// one service key for both) and then seals `data_key` (and the job seed, if any) to that key
/// for each. Returns the service key.
pub fn provision(
    parties: [(Role, SocketAddr); 2],
    verifier: &dyn EvidenceVerifier,
    (data_key, job_seed): (&[u8; 32], Option<&[u8; 32]>),
    timeout: Duration,
) -> Result<[u8; 32], ProvisionError> {
    let mut checked = Vec::new();
    for (role, addr) in parties {
        checked.push((role, addr, connect(role, addr, verifier, timeout)?));
    }
    let service = checked[0].2.service;
    if checked[1].2.service != service {
        return Err(ProvisionError::Untrusted {
            role: checked[1].0,
            why: "E0 and E1 name different service keys (a host substituted one)".into(),
        });
    }
    for (role, addr, c) in &mut checked {
        let net = |why: String| ProvisionError::Net {
            role: *role,
            addr: addr.to_string(),
            why,
        };
        let sealed =
            seal_provision(&service, data_key, job_seed).map_err(|e| net(e.to_string()))?;
        let mut msg = (sealed.len() as u32).to_le_bytes().to_vec();
        msg.extend_from_slice(&sealed);
        c.stream.write_all(&msg).map_err(|e| net(e.to_string()))?;
        let mut reply = String::new();
        let mut buf = [0u8; 1];
        while c.stream.read(&mut buf).map_err(|e| net(e.to_string()))? == 1 && buf[0] != b'\n' {
            if reply.len() < 512 {
                reply.push(char::from(buf[0]));
            }
        }
        if reply != "OK" {
            return Err(net(format!("the enclave refused the key: {reply}")));
        }
    }
    Ok(service)
}
