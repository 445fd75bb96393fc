//! Where training images come from: plaintext datasets, or a data owner's sealed records that
//! only enclave code opens.
//!
//! Where it sits: between the dataset readers and the enclave's session, which receives each
//! split once ([`Source::to_split`]) and from then on chooses batches and opens sealed records
//! itself; the host side only ever holds ciphertext (or data that was public to begin with).
//! [`seal_dataset`] is the data owner's tool that makes the sealed files.

use std::path::Path;

use goten_data::{DataFormat, Dataset, SealedMeta, SealedSet};
use goten_enclave::nn::input::InputSpec;
use goten_enclave::sealed_data;
use goten_enclave::session::Split;
use goten_field::SecretKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::RuntimeError;

/// One split of a dataset.
pub enum Source {
    /// Plaintext images and labels.
    Plain(Dataset),
    /// The data owner's sealed records (their key travels apart: [`crate::job::Setup`]).
    Sealed(SealedSet),
}

impl Source {
    /// Records in this split.
    pub fn len(&self) -> usize {
        match self {
            Source::Plain(d) => d.len(),
            Source::Sealed(s) => s.len(),
        }
    }

    /// Whether the split holds no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        match self {
            Source::Plain(d) => d.truncate(n),
            Source::Sealed(s) => s.truncate(n),
        }
    }

    /// Feeds what identifies this data into a job fingerprint.
    pub fn identify(&self, h: &mut Sha256) {
        h.update((self.len() as u64).to_le_bytes());
        match self {
            Source::Plain(d) => {
                h.update(&d.labels);
                h.update(&d.images);
            }
            Source::Sealed(s) => {
                h.update(format!("{:?}", s.meta).as_bytes());
                h.update(s.ciphertext());
            }
        }
    }

    /// A copy of this split as an enclave receives it (once, at the start of a session), with
    /// the data key only where this process is the data owner handing it over directly.
    pub fn to_split(&self, key: Option<&Zeroizing<[u8; 32]>>) -> Split {
        match self {
            Source::Plain(d) => Split::Plain {
                images: d.images.clone(),
                labels: d.labels.clone(),
            },
            Source::Sealed(s) => Split::Sealed {
                split: s.split.clone(),
                version: s.meta.version,
                records: (0..s.len()).map(|i| s.record(i).to_vec()).collect(),
                key: key.cloned(),
            },
        }
    }
}

/// What an input image of `format` is for the model, as `goten train` and `goten predict`
/// prepare it: the format's published statistics, or for formats without any (image folders
/// and arrays) statistics to be computed from the training images inside the enclave, or
/// `normalize` (`"M1,M2,M3/S1,S2,S3"`, one mean and deviation of pixel/255 per channel); the
/// files' image `shape`; crops of 1/8 of the side and flips for colour images.
pub fn input_spec(
    format: DataFormat,
    shape: [usize; 3],
    normalize: Option<&str>,
) -> Result<InputSpec, RuntimeError> {
    let mut spec = match format {
        DataFormat::Cifar10 => InputSpec::cifar10(),
        DataFormat::ImageFolder => InputSpec::cifar10().stats_from_training(),
        DataFormat::Cifar100 | DataFormat::Cifar100Coarse => InputSpec::cifar100(),
        DataFormat::Mnist => InputSpec::mnist(),
        DataFormat::FashionMnist => InputSpec::fashion_mnist(),
        // Colour arrays are augmented like CIFAR, grey ones like MNIST (not at all).
        DataFormat::Npy | DataFormat::Safetensors => match shape[0] {
            1 => InputSpec::mnist(),
            _ => InputSpec::cifar10(),
        }
        .stats_from_training(),
    };
    spec.shape = shape;
    spec.pad = spec.pad.min(shape[1].min(shape[2]) / 8);
    if let Some(n) = normalize {
        let parse = |part: &str| -> Result<Vec<f32>, RuntimeError> {
            part.split(',')
                .map(|v| {
                    v.trim().parse::<f32>().map_err(|_| {
                        RuntimeError::config(format!(
                            "--normalize {n:?}: {v:?} is not a number (expected MEAN,../STD,..)"
                        ))
                    })
                })
                .collect()
        };
        let Some((m, s)) = n.split_once('/') else {
            return Err(RuntimeError::config(format!(
                "--normalize {n:?}: expected MEAN,../STD,.. (one per channel, of pixel/255)"
            )));
        };
        (spec.mean, spec.std) = (parse(m)?, parse(s)?);
        spec.from_training = false;
    }
    spec.check()
        .map_err(|e| RuntimeError::config(format!("input normalisation: {e}")))?;
    Ok(spec)
}

/// Reads a data key file (32 bytes, from `goten seal-data`).
pub fn read_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, RuntimeError> {
    let b = std::fs::read(path).map_err(|e| {
        RuntimeError::storage(format!("cannot read the data key {}", path.display()), e)
    })?;
    let b = Zeroizing::new(b);
    let arr: [u8; 32] = b.as_slice().try_into().map_err(|_| {
        RuntimeError::config(format!(
            "{} is not a data key (expected 32 bytes, found {})",
            path.display(),
            b.len()
        ))
    })?;
    Ok(Zeroizing::new(arr))
}

/// Whether `path` lies inside the folder `dir` (after resolving links and `..`; a path that
/// does not exist yet is judged by its parent folder).
pub fn lies_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return false;
    };
    let resolved = std::fs::canonicalize(path).or_else(|_| {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::canonicalize(parent).map(|p| p.join(path.file_name().unwrap_or_default()))
    });
    resolved.is_ok_and(|p| p.starts_with(&dir))
}

/// The data key must live with the data owner, never beside the sealed data that every host
/// receives: a key inside the data folder would hand the hosts the plaintext.
fn check_key_outside(dir: &Path, key_path: &Path) -> Result<(), RuntimeError> {
    if lies_inside(key_path, dir) {
        return Err(RuntimeError::config(format!(
            "the data key {} lies inside the data folder {}, which the hosts receive: move it out (the data owner keeps it) and pass --data-key",
            key_path.display(),
            dir.display()
        )));
    }
    let stray = dir.join("data.key");
    if stray.exists() {
        return Err(RuntimeError::config(format!(
            "a data key {} lies inside the data folder, which the hosts receive: move it to the data owner's machine (goten seal-data now writes it outside) and pass --data-key",
            stray.display()
        )));
    }
    Ok(())
}

/// Reads the data key at `key_path`, which must lie outside the sealed data folder `dir`.
pub fn read_data_key(dir: &Path, key_path: &Path) -> Result<Zeroizing<[u8; 32]>, RuntimeError> {
    check_key_outside(dir, key_path)?;
    read_key(key_path)
}

/// Loads `train.sealed` and `test.sealed` from `dir`.
pub fn load_sealed(dir: &Path) -> Result<(Source, Source), RuntimeError> {
    let load = |name: &str| {
        let path = dir.join(name);
        goten_data::load_sealed(&path).map_err(|e| RuntimeError::data("sealed dataset", e))
    };
    let (train, test) = (load("train.sealed")?, load("test.sealed")?);
    if train.split != "train" || test.split != "test" {
        return Err(RuntimeError::data(
            dir.display().to_string(),
            "train.sealed / test.sealed hold the wrong splits",
        ));
    }
    if train.meta != test.meta {
        return Err(RuntimeError::data(
            dir.display().to_string(),
            format!(
                "train.sealed and test.sealed were sealed from different data ({:?} and {:?})",
                train.meta, test.meta
            ),
        ));
    }
    Ok((Source::Sealed(train), Source::Sealed(test)))
}

/// What [`seal_dataset`] wrote.
#[derive(Debug)]
pub struct Sealed {
    /// Training records sealed.
    pub train: usize,
    /// Test records sealed.
    pub test: usize,
    /// The sealed files' public header.
    pub meta: SealedMeta,
}

/// The default place of the data key for sealed output `out`: beside it, not inside it
/// (`sealed/` -> `sealed.key`).
pub fn default_key_path(out: &Path) -> std::path::PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "sealed".into());
    name.push(".key");
    out.with_file_name(name)
}

/// The data owner's step (`goten seal-data`): seals every record of the dataset at `data` (of
/// `format`, or the format its file names say; images of an image folder resized to
/// `image_size`) under a fresh data key and writes `train.sealed` and `test.sealed` into `out`
/// and the key to `key_out` (mode 0600, never overwritten), which must lie outside `out` and
/// `data`.
pub fn seal_dataset(
    data: &Path,
    format: Option<DataFormat>,
    image_size: usize,
    out: &Path,
    key_out: &Path,
) -> Result<Sealed, RuntimeError> {
    let refuse_inside = |dir: &Path, what: &str| {
        if lies_inside(key_out, dir) {
            return Err(RuntimeError::config(format!(
                "--key-out {} lies inside {what} {}: the data key must stay with the data owner, apart from the data the hosts receive",
                key_out.display(),
                dir.display()
            )));
        }
        Ok(())
    };
    refuse_inside(data, "the dataset folder")?;
    if key_out.exists() {
        return Err(RuntimeError::config(format!(
            "the data key {} exists already: a new sealing gets a new key (move the old one away or pass another --key-out)",
            key_out.display()
        )));
    }
    let (format, train, test) = goten_data::load(data, format, image_size)
        .map_err(|e| RuntimeError::data("cannot load the dataset", e))?;
    let classes = format.classes().unwrap_or(train.classes);
    let meta = SealedMeta::new(format.name(), train.shape, classes);
    std::fs::create_dir_all(out)
        .map_err(|e| RuntimeError::storage(format!("cannot create {}", out.display()), e))?;
    // After creating it: a folder that does not exist yet cannot be resolved.
    refuse_inside(out, "the sealed output folder")?;
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)
        .map_err(|e| RuntimeError::storage("no entropy", std::io::Error::other(e.to_string())))?;
    let key = SecretKey::from_bytes(k);
    for (split, d) in [("train", &train), ("test", &test)] {
        let binding = sealed_data::Binding {
            version: meta.version,
            split,
            shape: meta.shape,
            classes,
        };
        let recs: Vec<Vec<u8>> = (0..d.len())
            .map(|i| {
                let rec = Zeroizing::new([&[d.labels[i]][..], d.image(i)].concat());
                sealed_data::seal(&key, &binding, i as u64, &rec)
            })
            .collect();
        let path = out.join(format!("{split}.sealed"));
        goten_data::write_sealed(&path, split, &meta, &recs).map_err(|e| {
            RuntimeError::storage(
                format!("cannot write {}", path.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
    }
    crate::keys::write_secret(key_out, &k).map_err(|e| {
        RuntimeError::storage(
            format!(
                "cannot write the data key {} (it must not exist yet)",
                key_out.display()
            ),
            e,
        )
    })?;
    k.fill(0);
    Ok(Sealed {
        train: train.len(),
        test: test.len(),
        meta,
    })
}
