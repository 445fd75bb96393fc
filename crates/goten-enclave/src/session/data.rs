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
        /// Layout version of the sealed file (1: CIFAR-10 records binding split and index
        /// only; 2: binding the shape and class count too).
        version: u32,
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
                version,
                records,
                key,
            } => {
                let key = key.as_ref().or(provisioned).ok_or_else(|| {
                    SessionError::Config(format!(
                        "the {what} split is sealed and no data key was provisioned to this enclave (the data owner runs goten provision)"
                    ))
                })?;
                if version == 1 && (spec.shape != [3, 32, 32] || classes != 10) {
                    return Err(SessionError::Data(format!(
                        "the {what} split is sealed in the first layout, which holds CIFAR-10 records only, but the job announces {}x{}x{} images of {classes} classes",
                        spec.shape[0], spec.shape[1], spec.shape[2]
                    )));
                }
                let binding = sealed_data::Binding {
                    version,
                    split: &split,
                    shape: spec.shape,
                    classes,
                };
                let key = SecretKey::from_bytes(**key);
                let mut images = Zeroizing::new(Vec::with_capacity(records.len() * image_bytes));
                let mut labels = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate() {
                    let rec = sealed_data::open(&key, &binding, i as u64, r)
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

/// Opens both splits of a job whose images are `input` and whose labels lie in `0..classes`.
/// Where the job asks for statistics from the training images, they are computed here, inside
/// the enclave, from the opened records: sealed data stays sealed to the host, and the
/// statistics leave only sealed in checkpoints. Returns the input spec in force.
pub(crate) fn open_splits(
    input: &InputSpec,
    classes: usize,
    (train, test): (Split, Split),
    provisioned: Option<&Zeroizing<[u8; 32]>>,
) -> Result<(InputSpec, Records, Records), SessionError> {
    let mut train = train.open_all("training", input, classes, provisioned)?;
    let mut test = test.open_all("test", input, classes, provisioned)?;
    let input = if input.from_training {
        let done = input.clone().with_stats_of(&train.images);
        train.spec = done.clone();
        test.spec = done.clone();
        done
    } else {
        input.clone()
    };
    Ok((input, train, test))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(images: Vec<u8>, n: usize) -> Split {
        Split::Plain {
            images,
            labels: (0..n).map(|i| (i % 2) as u8).collect(),
        }
    }

    #[test]
    fn statistics_from_training_are_computed_from_the_training_split_only() {
        let spec = InputSpec {
            shape: [1, 2, 2],
            ..InputSpec::mnist()
        }
        .stats_from_training();
        // Training pixels 0 and 255 in equal parts: mean 0.5, deviation 0.5; the test split
        // (all 255) must not move them.
        let train = plain([0, 255, 0, 255, 255, 0, 255, 0].to_vec(), 2);
        let test = plain(vec![255; 4], 1);
        let (input, train, test) = open_splits(&spec, 2, (train, test), None).unwrap();
        assert!(!input.from_training);
        assert!((input.mean[0] - 0.5).abs() < 1e-6 && (input.std[0] - 0.5).abs() < 1e-6);
        let (x, _) = train.batch(&[0, 1], None);
        assert!(
            x.expose().iter().all(|v| (v.abs() - 1.0).abs() < 1e-5),
            "{x:?}"
        );
        let (t, _) = test.batch(&[0], None);
        assert!(t.expose().iter().all(|v| (v - 1.0).abs() < 1e-5));
        // Given statistics are kept as they are.
        let given = InputSpec {
            shape: [1, 2, 2],
            ..InputSpec::mnist()
        };
        let (kept, _, _) = open_splits(
            &given,
            2,
            (plain(vec![0; 4], 1), plain(vec![0; 4], 1)),
            None,
        )
        .unwrap();
        assert_eq!(kept, given);
    }

    #[test]
    fn sealed_records_open_only_as_the_shape_they_were_sealed_as() {
        let key = Zeroizing::new([4u8; 32]);
        let sk = SecretKey::from_bytes(*key);
        let b = sealed_data::Binding {
            version: 2,
            split: "train",
            shape: [1, 2, 3],
            classes: 3,
        };
        let rec = [2u8, 1, 2, 3, 4, 5, 6];
        let sealed = || Split::Sealed {
            split: "train".into(),
            version: 2,
            records: vec![sealed_data::seal(&sk, &b, 0, &rec)],
            key: Some(key.clone()),
        };
        let spec = |shape| InputSpec {
            shape,
            ..InputSpec::mnist()
        };
        let r = sealed()
            .open_all("training", &spec([1, 2, 3]), 3, None)
            .unwrap();
        assert_eq!((&r.images[..], &r.labels[..]), (&rec[1..], &rec[..1]));
        let e = sealed()
            .open_all("training", &spec([1, 3, 2]), 3, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("fails authentication"), "{e}");
        let v1 = Split::Sealed {
            split: "train".into(),
            version: 1,
            records: vec![],
            key: Some(key.clone()),
        };
        let e = v1
            .open_all("training", &spec([1, 2, 3]), 3, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("CIFAR-10 records only"), "{e}");
    }
}
