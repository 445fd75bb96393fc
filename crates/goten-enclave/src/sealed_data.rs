//! The data owner's sealed records: AES-256-GCM per image, opened only inside the enclave.
//!
//! Where it sits: the data owner seals each CIFAR record (label byte + 3,072 pixel bytes) once
//! with a data key it provisions to the enclaves; hosts store and forward only ciphertext, and
//! [`open`] runs inside E0/E1 when a batch is assembled. The associated data binds the split
//! ("train" / "test") and the record's index, so a host cannot swap, reorder, replay or mix
//! records undetected; any tag failure is an error.
//!
//! One sealed record: nonce (12 bytes) || ciphertext (3,073 bytes) || tag (16 bytes).

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use goten_field::{Prg, SecretKey};
use zeroize::Zeroizing;

/// Plaintext bytes of one record.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// Bytes of one sealed record.
pub const SEALED_RECORD: usize = 12 + RECORD + 16;

/// Why a record could not be opened.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "sealed {split} record {index} fails authentication: tampered, swapped, or sealed under another data key"
)]
pub struct OpenError {
    /// Split name.
    pub split: String,
    /// Record index.
    pub index: u64,
}

fn aad(split: &str, index: u64) -> Vec<u8> {
    [
        b"goten/data/v1/".as_slice(),
        split.as_bytes(),
        b"/",
        &index.to_le_bytes(),
    ]
    .concat()
}

/// Seals record `index` of `split` (data owner side). The nonce comes from a stream keyed by
/// the data key and the record's position: unique per (key, split, index) without an RNG.
pub fn seal(key: &SecretKey, split: &str, index: u64, record: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    let mut w = [0u32; 3];
    Prg::new(key, &format!("data-nonce/{split}"), 0).fill_u32(index, 0, &mut w);
    for (i, x) in w.iter().enumerate() {
        nonce[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }
    let cipher = key.aes256gcm();
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: record,
                aad: &aad(split, index),
            },
        )
        .expect("AES-GCM encryption of a small record");
    [nonce.as_slice(), &ct].concat()
}

/// Opens record `index` of `split` inside the enclave: (label, pixels).
pub fn open(
    key: &SecretKey,
    split: &str,
    index: u64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let err = || OpenError {
        split: split.into(),
        index,
    };
    if sealed.len() != SEALED_RECORD {
        return Err(err());
    }
    let nonce: [u8; 12] = sealed[..12].try_into().expect("12 bytes");
    let cipher = key.aes256gcm();
    let plain = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &sealed[12..],
                aad: &aad(split, index),
            },
        )
        .map_err(|_| err())?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = SecretKey::from_bytes([1; 32]);
        let rec: Vec<u8> = (0..RECORD).map(|i| (i % 251) as u8).collect();
        let s = seal(&key, "train", 5, &rec);
        assert_eq!(s.len(), SEALED_RECORD);
        assert_eq!(&open(&key, "train", 5, &s).unwrap()[..], &rec[..]);
        assert!(
            open(&key, "train", 6, &s).is_err(),
            "moved to another index"
        );
        assert!(open(&key, "test", 5, &s).is_err(), "moved to another split");
        assert!(
            open(&SecretKey::from_bytes([2; 32]), "train", 5, &s).is_err(),
            "other key"
        );
        let mut t = s.clone();
        t[100] ^= 1;
        assert!(open(&key, "train", 5, &t).is_err(), "flipped bit");
        assert!(open(&key, "train", 5, &s[..50]).is_err(), "truncated");
        assert_ne!(
            seal(&key, "train", 6, &rec)[..12],
            s[..12],
            "fresh nonce per record"
        );
    }
}
