//! Dataset readers: the data owner's side of goten.
//!
//! Where it sits: before the enclaves. It decodes CIFAR-10 from the official binary layout
//! (`data_batch_1.bin` .. `data_batch_5.bin`, any subset, and `test_batch.bin`) or generates a
//! small learnable synthetic dataset, and hands raw 8-bit images and labels onward. Every
//! malformed input is an error naming the file and the byte offset.
//!
//! The official `cifar-10-binary.tar.gz` is read directly too ([`load_cifar`] decides by the
//! path). [`SealedSet`] holds a data owner's sealed records (AES-256-GCM per record, see
//! `goten_enclave::sealed_data`): hosts only ever load and forward their ciphertext.

use std::path::{Path, PathBuf};

use goten_field::{Prg, SecretKey};
use thiserror::Error;

mod arrays;
mod cifar100;
mod folder;
mod format;
mod idx;
mod sealed;

pub use folder::DEFAULT_SIDE;

pub use format::{DataFormat, load};
pub use sealed::{SealedMeta, SealedSet, load_sealed, write_sealed};

/// Bytes of one CIFAR-10 image (3 x 32 x 32, channel-major).
pub const IMAGE_BYTES: usize = 3 * 32 * 32;
/// Bytes of one record: label then image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Number of classes.
pub const CLASSES: usize = 10;

/// Why a dataset could not be read.
#[derive(Debug, Error)]
pub enum DataError {
    /// The folder does not exist or holds no CIFAR-10 batch files.
    #[error("{path}: {reason}")]
    Missing {
        /// Path.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// I/O failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a whole number of records.
    #[error(
        "{path} is truncated or corrupt: {len} bytes is not a whole number of {RECORD_BYTES}-byte records (the last record starts at offset {last_start})"
    )]
    Truncated {
        /// Path.
        path: PathBuf,
        /// File length.
        len: usize,
        /// Offset of the incomplete record.
        last_start: usize,
    },
    /// A label byte outside 0..10.
    #[error(
        "{path} is corrupt: record {record} (offset {offset}) has label {label}, not a CIFAR-10 class (0-9)"
    )]
    BadLabel {
        /// Path.
        path: PathBuf,
        /// Record index.
        record: usize,
        /// Byte offset.
        offset: usize,
        /// The label byte.
        label: u8,
    },
    /// A file that is not what its format says (wrong magic, sizes that disagree, a label out
    /// of range): the message names the file and what is wrong.
    #[error("{path}: {reason}")]
    Malformed {
        /// Path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Images and labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// `len * image_bytes()` bytes, each image channel-major (e.g. R, G, B planes of 32x32).
    pub images: Vec<u8>,
    /// One label per image, `0..classes`.
    pub labels: Vec<u8>,
    /// `[channels, height, width]` of every image.
    pub shape: [usize; 3],
    /// Number of classes of the format (labels are below it).
    pub classes: usize,
    /// Class names where the files carry them (an image folder's subfolders), else empty.
    pub names: Vec<String>,
}

impl Default for Dataset {
    /// An empty CIFAR-10-shaped dataset.
    fn default() -> Self {
        Dataset::empty([3, 32, 32], CLASSES)
    }
}

impl Dataset {
    /// An empty dataset of images of `shape` and `classes` classes.
    pub fn empty(shape: [usize; 3], classes: usize) -> Self {
        Dataset {
            images: Vec::new(),
            labels: Vec::new(),
            shape,
            classes,
            names: Vec::new(),
        }
    }

    /// Bytes of one image.
    pub fn image_bytes(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.images[i * b..(i + 1) * b]
    }

    /// The first `n` images (all when `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.labels.truncate(n);
        self.images.truncate(n * self.image_bytes());
    }

    fn append_records(&mut self, path: &Path, bytes: &[u8]) -> Result<(), DataError> {
        if !bytes.len().is_multiple_of(RECORD_BYTES) || bytes.is_empty() {
            return Err(DataError::Truncated {
                path: path.into(),
                len: bytes.len(),
                last_start: bytes.len() / RECORD_BYTES * RECORD_BYTES,
            });
        }
        for (record, r) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            if usize::from(r[0]) >= CLASSES {
                return Err(DataError::BadLabel {
                    path: path.into(),
                    record,
                    offset: record * RECORD_BYTES,
                    label: r[0],
                });
            }
            self.labels.push(r[0]);
            self.images.extend_from_slice(&r[1..]);
        }
        Ok(())
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })
}

/// Reads CIFAR-10 from a folder in the binary layout or from the official `.tar.gz`.
pub fn load_cifar(path: &Path) -> Result<(Dataset, Dataset), DataError> {
    let name = path.to_string_lossy();
    if path.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        load_cifar_targz(path)
    } else {
        load_cifar_dir(path)
    }
}

/// Reads the official `cifar-10-binary.tar.gz`: its `data_batch_*.bin` and `test_batch.bin`
/// members, wherever they sit in the archive.
pub fn load_cifar_targz(path: &Path) -> Result<(Dataset, Dataset), DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let corrupt = |e: std::io::Error| DataError::Io {
        path: path.into(),
        source: std::io::Error::new(e.kind(), format!("not a valid .tar.gz ({e})")),
    };
    let mut batches: Vec<(usize, PathBuf, Vec<u8>)> = Vec::new();
    let mut test: Option<(PathBuf, Vec<u8>)> = None;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let member = entry.path().map_err(corrupt)?.into_owned();
        let file_name = member
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let inner = path.join(&member);
        let wanted = file_name == "test_batch.bin"
            || (file_name.starts_with("data_batch_") && file_name.ends_with(".bin"));
        if !wanted {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(corrupt)?;
        if file_name == "test_batch.bin" {
            test = Some((inner, bytes));
        } else if let Ok(i) = file_name["data_batch_".len()..file_name.len() - 4].parse::<usize>() {
            batches.push((i, inner, bytes));
        }
    }
    batches.sort_by_key(|b| b.0);
    if batches.is_empty() {
        return Err(DataError::Missing {
            path: path.into(),
            reason: "archive holds no data_batch_*.bin".into(),
        });
    }
    let (tp, tb) = test.ok_or_else(|| DataError::Missing {
        path: path.into(),
        reason: "archive holds no test_batch.bin".into(),
    })?;
    let mut train = Dataset::default();
    for (_, p, b) in &batches {
        train.append_records(p, b)?;
    }
    let mut t = Dataset::default();
    t.append_records(&tp, &tb)?;
    Ok((train, t))
}

/// Reads one file of CIFAR-10 binary records (e.g. `test_batch.bin`).
pub fn load_cifar_file(path: &Path) -> Result<Dataset, DataError> {
    if !path.is_file() {
        return Err(DataError::Missing {
            path: path.into(),
            reason: "no such file".into(),
        });
    }
    let mut d = Dataset::default();
    d.append_records(path, &read(path)?)?;
    Ok(d)
}

/// Reads a CIFAR-10 binary folder: every `data_batch_{1..5}.bin` present (at least one) for
/// training, and `test_batch.bin` for testing.
pub fn load_cifar_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    if !dir.is_dir() {
        return Err(DataError::Missing { path: dir.into(), reason: "no such folder (expected the CIFAR-10 binary layout: data_batch_*.bin, test_batch.bin)".into() });
    }
    let mut train = Dataset::default();
    let mut found = 0;
    for i in 1..=5 {
        let p = dir.join(format!("data_batch_{i}.bin"));
        if p.exists() {
            train.append_records(&p, &read(&p)?)?;
            found += 1;
        }
    }
    if found == 0 {
        return Err(DataError::Missing {
            path: dir.into(),
            reason: "holds no data_batch_1.bin .. data_batch_5.bin".into(),
        });
    }
    let tp = dir.join("test_batch.bin");
    if !tp.exists() {
        return Err(DataError::Missing {
            path: tp,
            reason: "missing: the test set is needed for evaluation".into(),
        });
    }
    let mut test = Dataset::default();
    test.append_records(&tp, &read(&tp)?)?;
    Ok((train, test))
}

/// A small learnable dataset: each class is a fixed smooth colour pattern, each image that
/// pattern plus noise and a random brightness shift. Deterministic in `seed`.
pub fn synthetic(train: usize, test: usize, seed: u64) -> (Dataset, Dataset) {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&seed.to_le_bytes());
    let key = SecretKey::from_bytes(k);
    let mut templates = vec![0f32; CLASSES * IMAGE_BYTES];
    // Low-frequency patterns: a few random sinusoids per class and channel.
    let mut coef = vec![0f32; CLASSES * 3 * 4];
    Prg::new(&key, "synthetic/templates", 0).fill_unit_f32(0, 0, &mut coef);
    for c in 0..CLASSES {
        for ch in 0..3 {
            let f = &coef[(c * 3 + ch) * 4..][..4];
            for y in 0..32 {
                for x in 0..32 {
                    let (fy, fx) = (f[0] * 0.4, f[1] * 0.4);
                    let v = 128.0
                        + 25.0
                            * ((fy * y as f32 + fx * x as f32) + f[2] * std::f32::consts::TAU)
                                .sin()
                        + 12.0 * (f[3] * std::f32::consts::TAU + 0.2 * y as f32).cos();
                    templates[c * IMAGE_BYTES + ch * 1024 + y * 32 + x] = v;
                }
            }
        }
    }
    let make = |n: usize, stream: u64| {
        let mut d = Dataset::default();
        let mut noise = vec![0f32; n * (IMAGE_BYTES + 2)];
        Prg::new(&key, "synthetic/samples", stream).fill_unit_f32(0, 0, &mut noise);
        for i in 0..n {
            let r = &noise[i * (IMAGE_BYTES + 2)..][..IMAGE_BYTES + 2];
            let label = ((r[0] * CLASSES as f32) as usize).min(CLASSES - 1);
            let shift = (r[1] - 0.5) * 40.0;
            d.labels.push(label as u8);
            for (j, &t) in templates[label * IMAGE_BYTES..][..IMAGE_BYTES]
                .iter()
                .enumerate()
            {
                d.images
                    .push((t + shift + (r[2 + j] - 0.5) * 255.0).clamp(0.0, 255.0) as u8);
            }
        }
        d
    };
    (make(train, 1), make(test, 2))
}
