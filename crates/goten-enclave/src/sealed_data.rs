//! The data owner's sealed records: AES-256-GCM per image, opened only inside the enclave.
//!
//! Where it sits: the data owner seals each record (label byte + the image's 8-bit pixels, of
//! any dataset format) once with a data key it provisions to the enclaves; hosts store and
//! forward only ciphertext, and [`open`] runs inside E0/E1 when the session starts. The
//! associated data binds the split ("train" / "test"), the image shape, the class count and
//! the record's index, so a host cannot swap, reorder, replay or mix records, nor make the
//! enclave read them as another shape, undetected; any tag failure is an error. Records of
//! the first layout (version 1, CIFAR-10 only) bind the split and index alone.
//!
//! One sealed record: nonce (12 bytes) || ciphertext (1 + pixels bytes) || tag (16 bytes).

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use goten_field::{Prg, SecretKey};
use zeroize::Zeroizing;

/// What a split's records are, as the job announces them: bound into every record's
/// authentication, so records only open as what they were sealed as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    /// Layout version of the sealed file (1: CIFAR-10 records binding split and index only).
    pub version: u32,
    /// Split name.
    pub split: &'a str,
    /// Channels, height, width.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

impl Binding<'_> {
    /// Plaintext bytes of one record: label, pixels.
    pub fn record_bytes(&self) -> usize {
        1 + self.shape.iter().product::<usize>()
    }

    /// Bytes of one sealed record.
    pub fn sealed_bytes(&self) -> usize {
        12 + self.record_bytes() + 16
    }

    fn aad(&self, index: u64) -> Vec<u8> {
        let mut a = Vec::with_capacity(64);
        if self.version == 1 {
            a.extend_from_slice(b"goten/data/v1/");
            a.extend_from_slice(self.split.as_bytes());
        } else {
            a.extend_from_slice(b"goten/data/v2/");
            a.extend_from_slice(&(self.split.len() as u32).to_le_bytes());
            a.extend_from_slice(self.split.as_bytes());
            for d in self.shape.into_iter().chain([self.classes]) {
                a.extend_from_slice(&(d as u64).to_le_bytes());
            }
        }
        a.push(b'/');
        a.extend_from_slice(&index.to_le_bytes());
        a
    }
}

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

/// Seals record `index` of a split (data owner side). The nonce comes from a stream keyed by
/// the data key and the record's position: unique per (key, split, index) without an RNG
/// (the data key is fresh for every sealing).
pub fn seal(key: &SecretKey, binding: &Binding, index: u64, record: &[u8]) -> Vec<u8> {
    assert_eq!(
        record.len(),
        binding.record_bytes(),
        "record of the bound shape"
    );
    let mut nonce = [0u8; 12];
    let mut w = [0u32; 3];
    Prg::new(key, &format!("data-nonce/{}", binding.split), 0).fill_u32(index, 0, &mut w);
    for (i, x) in w.iter().enumerate() {
        nonce[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
    }
    let cipher = key.aes256gcm();
    let ct = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: record,
                aad: &binding.aad(index),
            },
        )
        .expect("AES-GCM encryption of a small record");
    [nonce.as_slice(), &ct].concat()
}

/// Opens record `index` of a split inside the enclave: (label, pixels).
pub fn open(
    key: &SecretKey,
    binding: &Binding,
    index: u64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let err = || OpenError {
        split: binding.split.into(),
        index,
    };
    if sealed.len() != binding.sealed_bytes() {
        return Err(err());
    }
    let nonce: [u8; 12] = sealed[..12].try_into().expect("12 bytes");
    let cipher = key.aes256gcm();
    let plain = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &sealed[12..],
                aad: &binding.aad(index),
            },
        )
        .map_err(|_| err())?;
    Ok(Zeroizing::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(version: u32, split: &str, shape: [usize; 3], classes: usize) -> Binding<'_> {
        Binding {
            version,
            split,
            shape,
            classes,
        }
    }

    #[test]
    fn round_trip_and_binding() {
        let key = SecretKey::from_bytes([1; 32]);
        for version in [1, 2] {
            let b = bind(version, "train", [3, 32, 32], 10);
            let rec: Vec<u8> = (0..b.record_bytes()).map(|i| (i % 251) as u8).collect();
            let s = seal(&key, &b, 5, &rec);
            assert_eq!(s.len(), b.sealed_bytes());
            assert_eq!(&open(&key, &b, 5, &s).unwrap()[..], &rec[..]);
            assert!(open(&key, &b, 6, &s).is_err(), "moved to another index");
            let test = bind(version, "test", [3, 32, 32], 10);
            assert!(open(&key, &test, 5, &s).is_err(), "moved to another split");
            assert!(
                open(&SecretKey::from_bytes([2; 32]), &b, 5, &s).is_err(),
                "other key"
            );
            let mut t = s.clone();
            t[100] ^= 1;
            assert!(open(&key, &b, 5, &t).is_err(), "flipped bit");
            assert!(open(&key, &b, 5, &s[..50]).is_err(), "truncated");
            assert_ne!(
                seal(&key, &b, 6, &rec)[..12],
                s[..12],
                "fresh nonce per record"
            );
            let other = bind(3 - version, "train", [3, 32, 32], 10);
            assert!(open(&key, &other, 5, &s).is_err(), "other layout version");
        }
    }

    #[test]
    fn version_two_binds_shape_and_classes() {
        let key = SecretKey::from_bytes([3; 32]);
        let b = bind(2, "train", [1, 4, 6], 10);
        let rec = vec![9u8; b.record_bytes()];
        let s = seal(&key, &b, 0, &rec);
        assert!(open(&key, &b, 0, &s).is_ok());
        // Same byte count, another shape: the host cannot make the enclave read 6x4 as 4x6.
        assert!(open(&key, &bind(2, "train", [1, 6, 4], 10), 0, &s).is_err());
        assert!(open(&key, &bind(2, "train", [1, 4, 6], 20), 0, &s).is_err());
    }
}
