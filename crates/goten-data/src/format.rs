//! Which dataset format a path holds, and loading it: CIFAR-10 (binary folder or the official
//! `.tar.gz`), CIFAR-100 (fine or coarse labels), MNIST and Fashion-MNIST (IDX, raw or `.gz`),
//! folders of PNG/JPEG images in class subfolders, and `.npy` / safetensors arrays.
//!
//! Where it sits: the entry point of the data owner's side. `goten train --data PATH` detects
//! the format from the files it finds; `--data-format NAME` names it (needed to tell
//! Fashion-MNIST from MNIST, whose files are named alike, and for CIFAR-100's coarse labels).

use std::path::Path;

use crate::{DataError, Dataset, arrays, cifar100, folder, idx};

/// A dataset format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// CIFAR-10 binary (`data_batch_*.bin`, `test_batch.bin`, or `cifar-10-binary.tar.gz`).
    Cifar10,
    /// CIFAR-100 binary (`train.bin`, `test.bin`) with its 100 fine labels.
    Cifar100,
    /// CIFAR-100 with its 20 coarse labels (superclasses).
    Cifar100Coarse,
    /// MNIST IDX files.
    Mnist,
    /// Fashion-MNIST IDX files (same layout as MNIST).
    FashionMnist,
    /// PNG/JPEG images in `train/CLASS/` and `test/CLASS/` (or `val/`) subfolders.
    ImageFolder,
    /// NumPy arrays: `train_images.npy`, `train_labels.npy`, `test_images.npy`,
    /// `test_labels.npy`.
    Npy,
    /// `train.safetensors` and `test.safetensors`, each with tensors `images` and `labels`.
    Safetensors,
}

/// Every format, in the order help texts list them.
pub const FORMATS: [DataFormat; 8] = [
    DataFormat::Cifar10,
    DataFormat::Cifar100,
    DataFormat::Cifar100Coarse,
    DataFormat::Mnist,
    DataFormat::FashionMnist,
    DataFormat::ImageFolder,
    DataFormat::Npy,
    DataFormat::Safetensors,
];

impl DataFormat {
    /// The name `--data-format` takes.
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Cifar10 => "cifar10",
            DataFormat::Cifar100 => "cifar100",
            DataFormat::Cifar100Coarse => "cifar100-coarse",
            DataFormat::Mnist => "mnist",
            DataFormat::FashionMnist => "fashion-mnist",
            DataFormat::ImageFolder => "image-folder",
            DataFormat::Npy => "npy",
            DataFormat::Safetensors => "safetensors",
        }
    }

    /// Parses a `--data-format` name.
    pub fn parse(s: &str) -> Option<Self> {
        FORMATS.into_iter().find(|f| f.name() == s)
    }

    /// The names, comma-separated.
    pub fn names() -> String {
        FORMATS.map(DataFormat::name).join(", ")
    }

    /// The format of the files at `path`, from their names.
    pub fn detect(path: &Path) -> Result<Self, DataError> {
        let name = path.to_string_lossy();
        if path.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
            return Ok(DataFormat::Cifar10);
        }
        if !path.is_dir() {
            return Err(DataError::Missing {
                path: path.into(),
                reason: "no such folder (a dataset is a folder of CIFAR-10, CIFAR-100 or MNIST files, or cifar-10-binary.tar.gz)".into(),
            });
        }
        let has = |f: &str| path.join(f).is_file();
        if has("test_batch.bin") || (1..=5).any(|i| has(&format!("data_batch_{i}.bin"))) {
            Ok(DataFormat::Cifar10)
        } else if has("train.bin") || has("test.bin") {
            Ok(DataFormat::Cifar100)
        } else if idx::find(path, "train-images-idx3-ubyte").is_some()
            || idx::find(path, "t10k-images-idx3-ubyte").is_some()
        {
            Ok(DataFormat::Mnist)
        } else if has("train_images.npy") || has("test_images.npy") {
            Ok(DataFormat::Npy)
        } else if has("train.safetensors") || has("test.safetensors") {
            Ok(DataFormat::Safetensors)
        } else if folder::looks_like(path) {
            Ok(DataFormat::ImageFolder)
        } else {
            Err(DataError::Missing {
                path: path.into(),
                reason: format!(
                    "holds no dataset goten knows: looked for CIFAR-10 (data_batch_*.bin, test_batch.bin), CIFAR-100 (train.bin, test.bin), MNIST IDX files (train-images-idx3-ubyte[.gz], ...), arrays (train_images.npy, train.safetensors) and an image folder (train/CLASS/*.png|jpg); formats: {}",
                    DataFormat::names()
                ),
            })
        }
    }

    /// Number of classes where the format fixes it (an image folder's come from its files).
    pub fn classes(self) -> Option<usize> {
        match self {
            DataFormat::Cifar100 => Some(100),
            DataFormat::Cifar100Coarse => Some(20),
            DataFormat::ImageFolder | DataFormat::Npy | DataFormat::Safetensors => None,
            _ => Some(10),
        }
    }

    /// Class names, where the format has well-known ones (CIFAR-10, MNIST, Fashion-MNIST).
    pub fn class_names(self) -> Option<&'static [&'static str]> {
        match self {
            DataFormat::Cifar10 => Some(&[
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ]),
            DataFormat::Mnist => Some(&["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
            DataFormat::FashionMnist => Some(&[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]),
            _ => None,
        }
    }
}

/// Loads the training and test splits at `path`, in `format` (detected when `None`); an image
/// folder's images come out `image_size` pixels square.
pub fn load(
    path: &Path,
    format: Option<DataFormat>,
    image_size: usize,
) -> Result<(DataFormat, Dataset, Dataset), DataError> {
    let format = match format {
        Some(f) => f,
        None => DataFormat::detect(path)?,
    };
    let (train, test) = match format {
        DataFormat::Cifar10 => crate::load_cifar(path)?,
        DataFormat::Cifar100 => cifar100::load_dir(path, false)?,
        DataFormat::Cifar100Coarse => cifar100::load_dir(path, true)?,
        DataFormat::Mnist | DataFormat::FashionMnist => idx::load_dir(path)?,
        DataFormat::ImageFolder => folder::load_dir(path, image_size)?,
        DataFormat::Npy => arrays::load_npy(path)?,
        DataFormat::Safetensors => arrays::load_safetensors(path)?,
    };
    Ok((format, train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_by_file_names() {
        let d = std::env::temp_dir().join(format!("goten-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let err = DataFormat::detect(&d).unwrap_err().to_string();
        assert!(
            err.contains("holds no dataset") && err.contains("cifar100-coarse"),
            "{err}"
        );
        std::fs::write(d.join("t10k-images-idx3-ubyte.gz"), b"").unwrap();
        assert_eq!(DataFormat::detect(&d).unwrap(), DataFormat::Mnist);
        std::fs::write(d.join("train.bin"), b"").unwrap();
        assert_eq!(DataFormat::detect(&d).unwrap(), DataFormat::Cifar100);
        std::fs::write(d.join("test_batch.bin"), b"").unwrap();
        assert_eq!(DataFormat::detect(&d).unwrap(), DataFormat::Cifar10);
        assert!(DataFormat::detect(&d.join("nope")).is_err());
        for f in FORMATS {
            assert_eq!(DataFormat::parse(f.name()), Some(f));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
