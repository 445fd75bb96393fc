//! Where training images come from: plaintext datasets, or a data owner's sealed records that
//! only enclave code opens.
//!
//! Where it sits: between the dataset readers and the enclave's session, which receives each
//! split once ([`Source::to_split`]) and from then on chooses batches and opens sealed records
//! itself; the host side only ever holds ciphertext (or data that was public to begin with).

use std::path::Path;

use anyhow::{Context, Result, bail};
use goten_data::{Dataset, SealedSet};
use goten_enclave::sealed_data;
use goten_enclave::session::Split;
use goten_field::SecretKey;
use sha2::{Digest, Sha256};

/// One split of a dataset.
pub(crate) enum Source {
    /// Plaintext images and labels.
    Plain(Dataset),
    /// Sealed records and the data key provisioned to the enclaves.
    Sealed(SealedSet, SecretKey),
}

impl Source {
    pub(crate) fn len(&self) -> usize {
        match self {
            Source::Plain(d) => d.len(),
            Source::Sealed(s, _) => s.len(),
        }
    }

    pub(crate) fn truncate(&mut self, n: usize) {
        match self {
            Source::Plain(d) => d.truncate(n),
            Source::Sealed(s, _) => s.truncate(n),
        }
    }

    /// Feeds what identifies this data into a job fingerprint.
    pub(crate) fn identify(&self, h: &mut Sha256) {
        h.update((self.len() as u64).to_le_bytes());
        match self {
            Source::Plain(d) => {
                h.update(&d.labels);
                h.update(&d.images);
            }
            Source::Sealed(s, _) => h.update(s.ciphertext()),
        }
    }

    /// A copy of this split as the enclave receives it (once, at the start of a session).
    pub(crate) fn to_split(&self) -> Split {
        match self {
            Source::Plain(d) => Split::Plain {
                images: d.images.clone(),
                labels: d.labels.clone(),
            },
            Source::Sealed(s, key) => Split::Sealed {
                split: s.split.clone(),
                records: (0..s.len()).map(|i| s.record(i).to_vec()).collect(),
                key: key.clone(),
            },
        }
    }
}

fn read_key(path: &Path) -> Result<SecretKey> {
    let b = std::fs::read(path)
        .with_context(|| format!("cannot read the data key {}", path.display()))?;
    let arr: [u8; 32] = b
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a data key (expected 32 bytes)", path.display()))?;
    Ok(SecretKey::from_bytes(arr))
}

/// Loads `train.sealed` and `test.sealed` from `dir` with the data key at `key_path`.
pub(crate) fn load_sealed(dir: &Path, key_path: &Path) -> Result<(Source, Source)> {
    let key = read_key(key_path)?;
    let train = goten_data::load_sealed(&dir.join("train.sealed"))?;
    let test = goten_data::load_sealed(&dir.join("test.sealed"))?;
    if train.split != "train" || test.split != "test" {
        bail!(
            "{}: train.sealed / test.sealed hold the wrong splits",
            dir.display()
        );
    }
    Ok((
        Source::Sealed(train, key.clone()),
        Source::Sealed(test, key),
    ))
}

/// `goten seal-data`: the data owner's step. Seals every record of `data` under a fresh data
/// key and writes `train.sealed`, `test.sealed` and the key (mode 0600) into `out`.
pub(crate) fn seal_data(data: &Path, out: &Path, key_out: &Path) -> Result<()> {
    let (train, test) = goten_data::load_cifar(data).context("cannot load the dataset")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no entropy: {e}"))?;
    let key = SecretKey::from_bytes(k);
    for (split, d) in [("train", &train), ("test", &test)] {
        let recs: Vec<Vec<u8>> = (0..d.len())
            .map(|i| {
                let rec = [&[d.labels[i]][..], d.image(i)].concat();
                sealed_data::seal(&key, split, i as u64, &rec)
            })
            .collect();
        goten_data::write_sealed(&out.join(format!("{split}.sealed")), split, &recs)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(key_out)
        .and_then(|mut f| f.write_all(&k))
        .with_context(|| {
            format!(
                "cannot write the data key {} (it must not exist yet)",
                key_out.display()
            )
        })?;
    eprintln!(
        "sealed {} training and {} test images into {}; data key in {} (provision it to the enclaves, keep it from the hosts)",
        train.len(),
        test.len(),
        out.display(),
        key_out.display()
    );
    Ok(())
}
