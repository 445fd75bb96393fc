//! Key files and the cluster file of a deployment on separate machines, and the TCP session
//! they describe.
//!
//! Where it sits: session setup for `goten keygen` and `goten party`. Each party generates its
//! own key file (secret: TLS private key and attestation key, never leaves its machine) and a
//! public entry (address, certificate, attestation public key); the three entries concatenated
//! form the cluster file every party reads. [`connect`] turns a cluster file and a key file into
//! an authenticated [`TcpTransport`], [`trusts`] into the key material of the key exchange.
//!
//! Attestation is simulated: the "attestation key" of S0 and S1 plays the role of their
//! machine's TEE platform key, S2's is its identity key.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use goten_enclave::Role;
use goten_field::Ring;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::{Trusts, attestation_public_key, danger_deterministic_secret};
pub use crate::cluster_attest::{
    AttestationPins, enclave_verifier, expected_measurement, hardware_setup, provision_address,
};
use crate::tcp::{Identity, TcpSetup, TcpTransport};
use crate::transport::NetError;

/// Why a deployment file is unusable.
#[derive(Debug, Error)]
pub enum DeployError {
    /// Not valid TOML or missing fields.
    #[error("{file}: {detail}")]
    Parse {
        /// Which file.
        file: String,
        /// Why.
        detail: String,
    },
    /// Valid syntax, wrong content.
    #[error("{file}: {detail}")]
    Invalid {
        /// Which file.
        file: String,
        /// Why.
        detail: String,
    },
    /// The network setup failed.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// One party's public entry in the cluster file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyEntry {
    /// 0, 1 or 2 (S0, S1, S2).
    pub id: u8,
    /// `host:port` where the party listens (S0 and S1; S2 only connects out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// TLS certificate, DER, hex.
    pub certificate: String,
    /// Attestation public key, hex (simulated platform key of S0/S1, identity key of S2).
    pub attestation_key: String,
    /// `host:port` where S0's or S1's host takes the data owner's provisioned key (sealed
    /// datasets without a key file on the party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_address: Option<String>,
    /// Hardware attestation: this platform's collateral file (DCAP collateral JSON for SGX and
    /// TDX, the VCEK certificate for SEV-SNP), relative to the cluster file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collateral: Option<String>,
}

/// The cluster file: the three parties and what their enclaves must prove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The parties, in any order.
    pub party: Vec<PartyEntry>,
    /// What E0 and E1 must prove: the pinned measurement, or a TEE kind and its policy
    /// (absent: simulated evidence of each party's own program, so all three must run the
    /// identical build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationPins>,
}

/// A party's secret key file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Which party.
    pub id: u8,
    /// TLS certificate, DER, hex (copied into the public entry).
    pub certificate: String,
    /// TLS private key, PKCS#8 DER, hex.
    pub tls_key: String,
    /// Attestation secret, hex.
    pub attestation_secret: String,
    /// Made with `--danger-deterministic-keys`: the attestation secret derives from a public
    /// seed, so this key protects nothing (tests only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub danger_deterministic: bool,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFile(S{}, <redacted>)", self.id)
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str, file: &str, what: &str) -> Result<Vec<u8>, DeployError> {
    let bad = || DeployError::Invalid {
        file: file.into(),
        detail: format!("{what} is not valid hex"),
    };
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

pub(crate) fn key32(s: &str, file: &str, what: &str) -> Result<[u8; 32], DeployError> {
    unhex(s, file, what)?
        .try_into()
        .map_err(|_| DeployError::Invalid {
            file: file.into(),
            detail: format!("{what} must be 32 bytes (64 hex digits)"),
        })
}

fn role_of(id: u8, file: &str) -> Result<Role, DeployError> {
    Role::ALL
        .get(usize::from(id))
        .copied()
        .ok_or_else(|| DeployError::Invalid {
            file: file.into(),
            detail: format!("party id {id}: must be 0, 1 or 2"),
        })
}

/// A new key file and public entry for `role`. `danger_seed` derives the attestation secret from
/// a test seed so runs are reproducible (tests only; the TLS key is always fresh).
pub fn keygen(
    role: Role,
    address: Option<String>,
    danger_seed: Option<u64>,
) -> Result<(KeyFile, PartyEntry), NetError> {
    let tls = Identity::generate(&format!("goten-s{}", role.index()))?;
    let secret = match danger_seed {
        Some(seed) => danger_deterministic_secret(seed, role),
        None => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| NetError::Unexpected {
                peer: role,
                expected: "OS entropy".into(),
                got: e.to_string(),
            })?;
            b
        }
    };
    let id = role.index() as u8;
    let key = KeyFile {
        id,
        certificate: hex(&tls.cert),
        tls_key: hex(&tls.key),
        attestation_secret: hex(&secret),
        danger_deterministic: danger_seed.is_some(),
    };
    let entry = PartyEntry {
        id,
        address,
        certificate: hex(&tls.cert),
        attestation_key: hex(&attestation_public_key(role, secret)),
        provision_address: None,
        collateral: None,
    };
    Ok((key, entry))
}

impl PartyEntry {
    /// A short fingerprint of this entry's keys (certificate and attestation key), for the
    /// operators to compare out of band: what `goten keygen` printed on the party's machine
    /// must be what every other party reads in the cluster file.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"goten/party-fingerprint/v1\0");
        h.update([self.id]);
        h.update(self.certificate.to_ascii_lowercase().as_bytes());
        h.update(b"\0");
        h.update(self.attestation_key.to_ascii_lowercase().as_bytes());
        let d: [u8; 32] = h.finalize().into();
        d[..16]
            .chunks(2)
            .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl KeyFile {
    /// Parses a key file (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<KeyFile, DeployError> {
        let k: KeyFile = toml::from_str(text).map_err(|e| DeployError::Parse {
            file: file.into(),
            detail: e.message().to_string(),
        })?;
        role_of(k.id, file)?;
        key32(&k.attestation_secret, file, "attestation_secret")?;
        unhex(&k.tls_key, file, "tls_key")?;
        unhex(&k.certificate, file, "certificate")?;
        Ok(k)
    }

    /// The file's text, with a warning comment.
    pub fn to_toml(&self) -> String {
        let danger = if self.danger_deterministic {
            "# DANGER: made with --danger-deterministic-keys: its attestation secret derives from a public seed; tests only.\n"
        } else {
            ""
        };
        format!(
            "# goten party key of S{}: SECRET. Keep it on this party's machine only.\n{danger}{}",
            self.id,
            toml::to_string(self).expect("plain struct serializes")
        )
    }

    /// The party this key belongs to.
    pub fn role(&self) -> Role {
        Role::ALL[usize::from(self.id)]
    }
}

impl ClusterFile {
    /// A cluster file of these entries, pinning `measurement` when given.
    pub fn new(party: Vec<PartyEntry>, measurement: Option<[u8; 32]>) -> ClusterFile {
        ClusterFile {
            party,
            attestation: measurement.map(|m| AttestationPins {
                measurement: Some(hex(&m)),
                ..AttestationPins::default()
            }),
        }
    }

    /// Parses and checks a cluster file: exactly one entry per party, addresses for S0 and
    /// S1, well-formed certificates and keys.
    pub fn parse(text: &str, file: &str) -> Result<ClusterFile, DeployError> {
        let c: ClusterFile = toml::from_str(text).map_err(|e| DeployError::Parse {
            file: file.into(),
            detail: e.message().to_string(),
        })?;
        let invalid = |detail: String| DeployError::Invalid {
            file: file.into(),
            detail,
        };
        for role in Role::ALL {
            let n = c
                .party
                .iter()
                .filter(|p| p.id == role.index() as u8)
                .count();
            if n != 1 {
                return Err(invalid(format!(
                    "{n} entries for party {} ({role}); need exactly one",
                    role.index()
                )));
            }
        }
        if let Some(a) = &c.attestation {
            a.validate(&c, file)?;
        }
        // One key for two roles would let one machine answer for two parties, and collapse
        // the non-collusion the protocol rests on.
        for (i, p) in c.party.iter().enumerate() {
            for q in &c.party[i + 1..] {
                for (what, a, b) in [
                    ("certificate", &p.certificate, &q.certificate),
                    ("attestation_key", &p.attestation_key, &q.attestation_key),
                ] {
                    if a.eq_ignore_ascii_case(b) {
                        return Err(invalid(format!(
                            "parties {} and {} have the same {what}: every party needs its own keys (run goten keygen on each machine)",
                            p.id, q.id
                        )));
                    }
                }
            }
        }
        for p in &c.party {
            let role = role_of(p.id, file)?;
            unhex(&p.certificate, file, "certificate")?;
            key32(&p.attestation_key, file, "attestation_key")?;
            if role != Role::S2 && p.address.is_none() {
                return Err(invalid(format!(
                    "party {} ({role}) needs an address (host:port): the others connect to it",
                    p.id
                )));
            }
        }
        Ok(c)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("plain struct serializes")
    }

    /// The hash every party of one deployment must share (the job handshake compares it): the
    /// cluster file, entries in id order, and the `--danger-deterministic-keys` setting.
    pub fn deployment_hash(&self, danger_seed: Option<u64>) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut c = self.clone();
        c.party.sort_by_key(|p| p.id);
        let mut h = Sha256::new();
        h.update(b"goten/deployment/v1\0");
        h.update(c.to_toml().as_bytes());
        h.update(match danger_seed {
            Some(seed) => format!("\0danger-deterministic-keys={seed}"),
            None => "\0keys=fresh".into(),
        });
        h.finalize().into()
    }

    /// The entry of `role` (present after [`ClusterFile::parse`]).
    pub fn entry(&self, role: Role) -> &PartyEntry {
        self.party
            .iter()
            .find(|p| p.id == role.index() as u8)
            .expect("checked in parse")
    }
}

pub(crate) fn resolve(addr: &str, who: Role) -> Result<SocketAddr, DeployError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| DeployError::Invalid {
            file: "cluster file".into(),
            detail: format!("cannot resolve the address {addr:?} of {who}"),
        })
}

/// Checks that `key` is the key of the cluster file's entry for its party.
fn check_key(cluster: &ClusterFile, key: &KeyFile) -> Result<Role, DeployError> {
    let role = key.role();
    let e = cluster.entry(role);
    let secret = key32(&key.attestation_secret, "key file", "attestation_secret")?;
    if e.certificate != key.certificate
        || e.attestation_key != hex(&attestation_public_key(role, secret))
    {
        return Err(DeployError::Invalid {
            file: "key file".into(),
            detail: format!(
                "it does not belong to the cluster file's {role}: its certificate or attestation key differs"
            ),
        });
    }
    Ok(role)
}

/// The key material of `key`'s party for the key exchange.
pub fn trusts(
    cluster: &ClusterFile,
    key: &KeyFile,
    danger_fixed_ephemeral: Option<[u8; 32]>,
) -> Result<Trusts, DeployError> {
    let role = check_key(cluster, key)?;
    let secret = key32(&key.attestation_secret, "key file", "attestation_secret")?;
    let mut public = [[0u8; 32]; 3];
    for r in Role::ALL {
        public[r.index()] = key32(
            &cluster.entry(r).attestation_key,
            "cluster file",
            "attestation_key",
        )?;
    }
    let own = goten_attest::measure::program_measurement().map_err(|e| DeployError::Invalid {
        file: "this program".into(),
        detail: e.to_string(),
    })?;
    let expected = expected_measurement(cluster)?;
    Ok(Trusts::for_party(
        role,
        secret,
        public,
        (own, expected),
        danger_fixed_ephemeral,
    ))
}

/// Connects `key`'s party to the other two as the cluster file says: S0 and S1 listen on their
/// address (or on `listen`, e.g. `0.0.0.0:7000` behind NAT), higher-numbered parties connect to
/// lower-numbered ones.
pub fn connect(
    cluster: &ClusterFile,
    key: &KeyFile,
    listen: Option<&str>,
    timeout: Duration,
    ring: Ring,
) -> Result<TcpTransport, DeployError> {
    let me = check_key(cluster, key)?;
    let mut addrs = [None; 3];
    let mut certs: [Vec<u8>; 3] = Default::default();
    for r in Role::ALL {
        let e = cluster.entry(r);
        certs[r.index()] = unhex(&e.certificate, "cluster file", "certificate")?;
        if r < me {
            let a = e.address.as_deref().expect("checked in parse");
            addrs[r.index()] = Some(resolve(a, r)?);
        }
    }
    let listener = if me == Role::S2 {
        None
    } else {
        let a = listen
            .or(cluster.entry(me).address.as_deref())
            .expect("checked in parse");
        let addr = resolve(a, me)?;
        Some(TcpListener::bind(addr).map_err(|e| DeployError::Invalid {
            file: "cluster file".into(),
            detail: format!("{me} cannot listen on {addr}: {e}"),
        })?)
    };
    let identity = Identity {
        cert: certs[me.index()].clone(),
        key: unhex(&key.tls_key, "key file", "tls_key")?,
    };
    Ok(TcpTransport::establish(TcpSetup {
        me,
        listener,
        addrs,
        identity,
        certs,
        timeout,
        ring,
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (ClusterFile, Vec<KeyFile>) {
        let mut entries = Vec::new();
        let mut keys = Vec::new();
        for r in Role::ALL {
            let addr = (r != Role::S2).then(|| format!("127.0.0.1:{}", 7000 + r.index()));
            let (k, e) = keygen(r, addr, None).unwrap();
            keys.push(k);
            entries.push(e);
        }
        (ClusterFile::new(entries, None), keys)
    }

    #[test]
    fn files_round_trip_and_keys_match_their_entries() {
        let (c, keys) = cluster();
        let text = c.to_toml();
        let back = ClusterFile::parse(&text, "c.toml").unwrap();
        assert_eq!(back, c);
        for k in &keys {
            let k2 = KeyFile::parse(&k.to_toml(), "k").unwrap();
            assert_eq!(check_key(&back, &k2).unwrap(), k.role());
            assert!(!format!("{k2:?}").contains(&k.tls_key[..16]));
        }
        // A key of another party (or another cluster) is refused.
        let (other, _) = cluster();
        let e = check_key(&other, &keys[0]).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn one_key_for_two_roles_is_refused() {
        for field in ["certificate", "attestation_key"] {
            let (mut c, _) = cluster();
            if field == "certificate" {
                c.party[2].certificate = c.party[0].certificate.clone();
            } else {
                c.party[1].attestation_key = c.party[0].attestation_key.to_uppercase();
            }
            let e = ClusterFile::parse(&c.to_toml(), "c.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("the same {field}")), "{e}");
        }
    }

    #[test]
    fn fingerprints_and_the_deployment_hash_identify_what_they_cover() {
        let (c, _) = cluster();
        let f: Vec<String> = c.party.iter().map(PartyEntry::fingerprint).collect();
        assert_eq!(f[0].len(), 39, "{}", f[0]); // 8 groups of 4 hex digits
        assert!(f[0] != f[1] && f[1] != f[2]);
        assert_eq!(f[0], c.party[0].clone().fingerprint());
        // The deployment hash ignores entry order but not content or the danger setting.
        let h = c.deployment_hash(None);
        let mut reordered = c.clone();
        reordered.party.reverse();
        assert_eq!(reordered.deployment_hash(None), h);
        assert_ne!(c.deployment_hash(Some(5)), h);
        let pinned = ClusterFile::new(c.party.clone(), Some([1; 32]));
        assert_ne!(pinned.deployment_hash(None), h);
    }

    #[test]
    fn deterministic_key_files_say_so() {
        let (k, _) = keygen(Role::S0, Some("127.0.0.1:1".into()), Some(5)).unwrap();
        let text = k.to_toml();
        assert!(text.contains("DANGER") && text.contains("danger_deterministic = true"));
        assert!(KeyFile::parse(&text, "k").unwrap().danger_deterministic);
        let (k, _) = keygen(Role::S0, Some("127.0.0.1:1".into()), None).unwrap();
        assert!(!k.to_toml().contains("danger"));
    }

    #[test]
    fn malformed_cluster_files_name_the_problem() {
        let (c, _) = cluster();
        let mut two = c.clone();
        two.party.pop();
        let mut noaddr = c.clone();
        noaddr.party[1].address = None;
        let mut badhex = c.clone();
        badhex.party[0].certificate = "zz".into();
        let mut shortkey = c.clone();
        shortkey.party[2].attestation_key = "abcd".into();
        let mut dup = c.clone();
        dup.party[2].id = 1;
        for (bad, want) in [
            (two.to_toml(), "0 entries for party 2"),
            (noaddr.to_toml(), "needs an address"),
            (badhex.to_toml(), "not valid hex"),
            (shortkey.to_toml(), "32 bytes"),
            (dup.to_toml(), "2 entries for party 1"),
            ("[[party]]\nid = 0\n".into(), "missing field"),
            ("party = 3".into(), "invalid type"),
            (format!("{}\nextra = 1\n", c.to_toml()), "unknown field"),
        ] {
            let e = ClusterFile::parse(&bad, "c.toml").unwrap_err().to_string();
            assert!(e.contains(want) && e.starts_with("c.toml"), "{e}");
        }
    }
}
