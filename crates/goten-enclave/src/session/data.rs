//! The training and test records a session holds, and the batch order it derives in secret.
//!
//! Where it sits: handed to the session once, when it starts (plaintext images for the plain
//! and synthetic cases, or the data owner's sealed records with the data key). From then on
//! the session alone decides which records form a batch, from its job secret, and opens
//! sealed records inside; the host never learns the order (it stores no index and serves no
//! per-batch request), so it cannot tie a step to a record.

use goten_field::{Prg, SecretKey};
use zeroize::Zeroizing;

use super::SessionError;
use crate::SecretTensor;
use crate::nn::input::{self, InputSpec};
use crate::sealed_data;

/// One split of a dataset as handed to the enclave.
pub enum Split {
    /// Plaintext images (channel-major, [`InputSpec::image_bytes`] each) and labels: data the host
    /// already holds in the clear (synthetic data, a public dataset).
    Plain {
        /// Images, concatenated.
        images: Vec<u8>,
        /// One label per image.
        labels: Vec<u8>,
    },
    /// The data owner's sealed records (`goten seal-data`) and the data key that opens them.
    Sealed {
        /// Split name bound into every record ("train" or "test").
        split: String,
        /// Sealed records in file order.
        records: Vec<Vec<u8>>,
        /// The data key's bytes where the caller is the data owner itself (local plain and
        /// enclave modes); `None` in goten mode, where the owner provisioned the key to the
        /// enclave through its attested service key (`KeyedEnclave::accept_provision`). Wiped
        /// on drop; the session keys its record decryption once, at the start.
        key: Option<Zeroizing<[u8; 32]>>,
    },
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Split::Plain { labels, .. } => write!(f, "Split::Plain({} images)", labels.len()),
            Split::Sealed { split, records, .. } => {
                write!(
                    f,
                    "Split::Sealed({split}, {} records, <key>)",
                    records.len()
                )
            }
        }
    }
}

impl Split {
    /// Number of records.
    pub fn len(&self) -> usize {
        match self {
            Split::Plain { labels, .. } => labels.len(),
            Split::Sealed { records, .. } => records.len(),
        }
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the split and opens every sealed record, once, inside the enclave: a tampered
    /// record or a label out of range stops the run before its first step, instead of at a
    /// step the secret order picks.
    pub(crate) fn open_all(
        self,
        what: &str,
        spec: &InputSpec,
        classes: usize,
        provisioned: Option<&Zeroizing<[u8; 32]>>,
    ) -> Result<Records, SessionError> {
        let image_bytes = spec.image_bytes();
        let (images, labels) = match self {
            Split::Sealed {
                split,
                records,
                key,
            } => {
                let key = key.as_ref().or(provisioned).ok_or_else(|| {
                    SessionError::Config(format!(
                        "the {what} split is sealed and no data key was provisioned to this enclave (the data owner runs goten provision)"
                    ))
                })?;
                let key = SecretKey::from_bytes(**key);
                let mut images = Zeroizing::new(Vec::with_capacity(records.len() * image_bytes));
                let mut labels = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate() {
                    let rec = sealed_data::open(&key, &split, i as u64, r)
                        .map_err(|e| SessionError::Data(e.to_string()))?;
                    labels.push(rec[0]);
                    images.extend_from_slice(&rec[1..]);
                }
                (images, labels)
            }
            Split::Plain { images, labels } => (Zeroizing::new(images), labels),
        };
        if images.len() != labels.len() * image_bytes {
            return Err(SessionError::Data(format!(
                "{what} split: {} image bytes for {} labels of {}x{}x{} images",
                images.len(),
                labels.len(),
                spec.shape[0],
                spec.shape[1],
                spec.shape[2]
            )));
        }
        if let Some(i) = labels.iter().position(|&l| usize::from(l) >= classes) {
            return Err(SessionError::Data(format!(
                "{what} split: label {} of record {i} is outside 0-{}",
                labels[i],
                classes - 1
            )));
        }
        if labels.is_empty() {
            return Err(SessionError::Data(format!("{what} split is empty")));
        }
        Ok(Records {
            images,
            labels,
            spec: spec.clone(),
        })
    }
}

/// A split's records as the session holds them: opened, checked, wiped when dropped.
pub(crate) struct Records {
    images: Zeroizing<Vec<u8>>,
    labels: Vec<u8>,
    spec: InputSpec,
}

impl Records {
    pub(crate) fn len(&self) -> usize {
        self.labels.len()
    }

    /// The normalised (and, with `augment`, cropped and flipped) batch of records `idx`, with
    /// their labels.
    pub(crate) fn batch(
        &self,
        idx: &[usize],
        augment: Option<(&SecretKey, u64)>,
    ) -> (SecretTensor, Vec<u8>) {
        let b = self.spec.image_bytes();
        let imgs: Vec<&[u8]> = idx
            .iter()
            .map(|&i| &self.images[i * b..(i + 1) * b])
            .collect();
        (
            input::batch(&self.spec, &imgs, augment),
            idx.iter().map(|&i| self.labels[i]).collect(),
        )
    }
}

/// A permutation of 0..n for `epoch`, from the session's order key (Fisher-Yates over a PRG).
pub(crate) fn order(key: &SecretKey, n: usize, epoch: u64) -> Vec<usize> {
    let mut r = vec![0u32; n];
    Prg::new(key, "train/order", epoch).fill_u32(0, 0, &mut r);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (r[i] as usize) % (i + 1));
    }
    p
}
