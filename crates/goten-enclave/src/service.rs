//! The enclaves' attested service key, and what clients provision through it.
//!
//! Where it sits: after the key exchange. E0 and E1 derive one HPKE key pair from their pair key
//! (so both publish the same public key and either can open what a client seals to it; no host
//! and not S2 can derive it). A client asks each enclave for evidence binding
//! `SHA-256("goten/service/v1" || role || service public key || client nonce)`
//! ([`service_report_data`]), checks both against the pinned measurement and that both name the
//! same key, then seals its secret to that key ([`seal_provision`]); the enclave opens it
//! inside ([`open_provision`]). Today the secret is the data owner's data key: no host reads it
//! from a file, and the sealed dataset opens only inside the enclaves.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Role;
use crate::hpke::{self, HpkeError, KeyPair};

/// HPKE `info` of a provisioning message.
pub const PROVISION_INFO: &[u8] = b"goten/provision/v1";
/// Associated data of a provisioning message: its format version.
const PROVISION_AAD: &[u8] = b"goten/provision/data-key/v1";

/// What a data owner provisions: the data key and, optionally, a job secret seed that keys the
/// run's rounding noise, batch order and initial weights (so the owner, and nobody else, can
/// reproduce the run bit for bit).
pub struct Provision {
    /// Opens the sealed records.
    pub data_key: Zeroizing<[u8; 32]>,
    /// The owner's job secret seed.
    pub job_seed: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Provision(<data key>, {})",
            if self.job_seed.is_some() {
                "<job seed>"
            } else {
                "no job seed"
            }
        )
    }
}

/// The report data an enclave's evidence binds for a client's `nonce`: the role, the service
/// key and the nonce, so evidence cannot be replayed to another client or for another key.
pub fn service_report_data(role: Role, service_public: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"goten/service/v1\0");
    h.update([role.index() as u8]);
    h.update(service_public);
    h.update(nonce);
    h.finalize().into()
}

/// The service key pair from the key-exchange's input keying material.
pub(crate) fn service_key(ikm: &[u8; 32]) -> KeyPair {
    KeyPair::derive(ikm)
}

/// The data owner's side: seals the data key (and the job seed, if any) to the attested
/// service key. The plaintext is the 32-byte key, or the key followed by the 32-byte seed.
pub fn seal_provision(
    service_public: &[u8; 32],
    data_key: &[u8; 32],
    job_seed: Option<&[u8; 32]>,
) -> Result<Vec<u8>, HpkeError> {
    let mut plain = Zeroizing::new(data_key.to_vec());
    if let Some(seed) = job_seed {
        plain.extend_from_slice(seed);
    }
    hpke::seal(service_public, PROVISION_INFO, PROVISION_AAD, &plain)
}

/// The enclave's side: the data key (and job seed) from a provisioning message.
pub(crate) fn open_provision(service: &KeyPair, sealed: &[u8]) -> Result<Provision, HpkeError> {
    let plain = service.open(PROVISION_INFO, PROVISION_AAD, sealed)?;
    let take = |r: std::ops::Range<usize>| -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&plain[r]);
        k
    };
    match plain.len() {
        32 => Ok(Provision {
            data_key: take(0..32),
            job_seed: None,
        }),
        64 => Ok(Provision {
            data_key: take(0..32),
            job_seed: Some(take(32..64)),
        }),
        _ => Err(HpkeError::Open),
    }
}

/// The job secret and the initial-weights seed a job seed determines.
pub(crate) fn from_job_seed(seed: &[u8; 32]) -> (goten_field::SecretKey, u64) {
    use hmac::Mac;
    let key = goten_field::SecretKey::from_bytes(*seed);
    let job = key.derive(b"goten/owner-job-secret");
    let mut mac = key.derive(b"goten/owner-init-weights").hmac_sha256();
    mac.update(b"seed");
    let d = mac.finalize().into_bytes();
    (job, u64::from_le_bytes(d[..8].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisions_round_trip_with_and_without_a_seed() {
        let kp = KeyPair::derive(&[3; 32]);
        let sealed = seal_provision(&kp.public_key(), &[1; 32], None).unwrap();
        let p = open_provision(&kp, &sealed).unwrap();
        assert_eq!(*p.data_key, [1; 32]);
        assert!(p.job_seed.is_none());
        let sealed = seal_provision(&kp.public_key(), &[1; 32], Some(&[2; 32])).unwrap();
        let p = open_provision(&kp, &sealed).unwrap();
        assert_eq!(p.job_seed.as_deref(), Some(&[2; 32]));
        assert!(!format!("{p:?}").contains('2'));
        // Another key, or bytes altered on the way: refused.
        assert!(open_provision(&KeyPair::derive(&[4; 32]), &sealed).is_err());
        let mut t = sealed.clone();
        t[40] ^= 1;
        assert!(open_provision(&kp, &t).is_err());
        // Different seeds give different secrets and initial weights.
        assert_ne!(from_job_seed(&[2; 32]).1, from_job_seed(&[5; 32]).1);
    }
}
