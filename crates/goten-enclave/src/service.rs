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

/// The data owner's side: seals the data key to the attested service key.
pub fn seal_provision(
    service_public: &[u8; 32],
    data_key: &[u8; 32],
) -> Result<Vec<u8>, HpkeError> {
    hpke::seal(service_public, PROVISION_INFO, PROVISION_AAD, data_key)
}

/// The enclave's side: the data key from a provisioning message.
pub(crate) fn open_provision(
    service: &KeyPair,
    sealed: &[u8],
) -> Result<Zeroizing<[u8; 32]>, HpkeError> {
    let plain = service.open(PROVISION_INFO, PROVISION_AAD, sealed)?;
    let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| HpkeError::Open)?;
    Ok(Zeroizing::new(key))
}
