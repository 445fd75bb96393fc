//! MNIST and Fashion-MNIST: the IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-...`), raw or gzipped.
//!
//! Where it sits: a reader of the data owner's side ([`crate::load`]). IDX is big-endian: a
//! magic of two zero bytes, a type byte (0x08: unsigned bytes) and the number of dimensions,
//! then one u32 per dimension, then the data. Everything is checked against the sizes the
//! header announces; a gzip member is inflated with a cap, so a hostile file cannot exhaust
//! memory.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{DataError, Dataset};

/// The most bytes an inflated IDX file may have (60,000 28x28 images are 47 MB).
const MAX_INFLATED: u64 = 1 << 30;

fn malformed(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.into(),
        reason: reason.into(),
    }
}

/// The file `stem` in `dir`, raw or with `.gz` (the raw one first).
pub(crate) fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// The file's bytes, inflated when it is gzipped (by its magic, not its name).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = crate::read(path)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed(path, format!("is not a valid gzip file ({e})")))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(malformed(path, "inflates to more than 1 GiB"));
    }
    Ok(out)
}

/// Parses an IDX file of unsigned bytes with `dims` dimensions: the sizes and the data.
fn parse(path: &Path, bytes: &[u8], dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let head = 4 + 4 * dims;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(malformed(path, "is not an IDX file (bad magic)"));
    }
    if bytes[2] != 0x08 {
        return Err(malformed(
            path,
            format!(
                "holds IDX type 0x{:02x}; only unsigned bytes (0x08) are images and labels",
                bytes[2]
            ),
        ));
    }
    if usize::from(bytes[3]) != dims {
        return Err(malformed(
            path,
            format!(
                "has {} dimensions where {dims} were expected (is it the {} file?)",
                bytes[3],
                if dims == 1 { "images" } else { "labels" }
            ),
        ));
    }
    if bytes.len() < head {
        return Err(malformed(path, "is truncated inside its header"));
    }
    let sizes: Vec<usize> = bytes[4..head]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")) as usize)
        .collect();
    let want = sizes
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| malformed(path, "announces an impossible size"))?;
    let have = bytes.len() - head;
    if have != want {
        return Err(malformed(
            path,
            format!(
                "{} {sizes:?} needs {want} bytes of data, the file has {have}",
                if have < want {
                    "is truncated:"
                } else {
                    "has trailing bytes:"
                }
            ),
        ));
    }
    Ok((sizes, bytes[head..].to_vec()))
}

/// Reads one split from an images file and a labels file.
pub(crate) fn load_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let (isz, pixels) = parse(images, &read_maybe_gz(images)?, 3)?;
    let (lsz, labs) = parse(labels, &read_maybe_gz(labels)?, 1)?;
    if isz[0] != lsz[0] {
        return Err(malformed(
            labels,
            format!(
                "holds {} labels for {} images in {}",
                lsz[0],
                isz[0],
                images.display()
            ),
        ));
    }
    if isz[1] == 0 || isz[2] == 0 {
        return Err(malformed(images, "holds empty images"));
    }
    if let Some(i) = labs.iter().position(|&l| l >= 10) {
        return Err(malformed(
            labels,
            format!("label {} of image {i} is not a class 0-9", labs[i]),
        ));
    }
    let mut d = Dataset::empty([1, isz[1], isz[2]], 10);
    d.images = pixels;
    d.labels = labs;
    Ok(d)
}

/// Reads the training and test splits from a folder of the four IDX files.
pub(crate) fn load_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let get = |stem: &str| {
        find(dir, stem).ok_or_else(|| DataError::Missing {
            path: dir.join(stem),
            reason: "missing (neither raw nor .gz): an MNIST folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte".into(),
        })
    };
    let train = load_pair(
        &get("train-images-idx3-ubyte")?,
        &get("train-labels-idx1-ubyte")?,
    )?;
    let test = load_pair(
        &get("t10k-images-idx3-ubyte")?,
        &get("t10k-labels-idx1-ubyte")?,
    )?;
    if train.shape != test.shape {
        return Err(malformed(
            dir,
            format!(
                "training images are {:?} but test images {:?}",
                train.shape, test.shape
            ),
        ));
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX file of unsigned bytes with the given sizes and data.
    pub(crate) fn idx(sizes: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, sizes.len() as u8];
        for s in sizes {
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("goten-idx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_raw_and_gzipped_folders() {
        let d = tmp("ok");
        let px: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
        write(&d, "train-images-idx3-ubyte", &idx(&[3, 4, 5], &px));
        write(
            &d,
            "train-labels-idx1-ubyte.gz",
            &gz(&idx(&[3], &[7, 0, 9])),
        );
        write(
            &d,
            "t10k-images-idx3-ubyte.gz",
            &gz(&idx(&[1, 4, 5], &px[..20])),
        );
        write(&d, "t10k-labels-idx1-ubyte", &idx(&[1], &[3]));
        let (tr, te) = load_dir(&d).unwrap();
        assert_eq!((tr.shape, tr.len(), tr.classes), ([1, 4, 5], 3, 10));
        assert_eq!(tr.labels, [7, 0, 9]);
        assert_eq!(tr.image(1), &px[20..40]);
        assert_eq!((te.len(), te.labels[0]), (1, 3));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn malformed_files_are_named_with_the_cause() {
        let d = tmp("bad");
        let px = vec![1u8; 2 * 3 * 3];
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
            (
                "magic",
                b"PK\x03\x04....".to_vec(),
                idx(&[2], &[1, 2]),
                "bad magic",
            ),
            (
                "type",
                {
                    let mut b = idx(&[2, 3, 3], &px);
                    b[2] = 0x0d;
                    b
                },
                idx(&[2], &[1, 2]),
                "IDX type 0x0d",
            ),
            (
                "truncated",
                idx(&[2, 3, 3], &px[..10]),
                idx(&[2], &[1, 2]),
                "is truncated",
            ),
            (
                "trailing",
                idx(&[2, 3, 3], &[px.clone(), vec![0]].concat()),
                idx(&[2], &[1, 2]),
                "trailing bytes",
            ),
            (
                "count",
                idx(&[2, 3, 3], &px),
                idx(&[3], &[1, 2, 3]),
                "3 labels for 2 images",
            ),
            (
                "label",
                idx(&[2, 3, 3], &px),
                idx(&[2], &[1, 12]),
                "label 12 of image 1",
            ),
            (
                "swapped",
                idx(&[2], &[1, 2]),
                idx(&[2, 3, 3], &px),
                "dimensions",
            ),
            (
                "gzip",
                vec![0x1f, 0x8b, 0, 1, 2],
                idx(&[2], &[1, 2]),
                "not a valid gzip",
            ),
        ];
        for (name, images, labels, want) in cases {
            let i = write(&d, &format!("{name}-images"), &images);
            let l = write(&d, &format!("{name}-labels"), &labels);
            let err = load_pair(&i, &l).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
            assert!(
                err.contains(&format!("{name}-")),
                "{name}: names the file: {err}"
            );
        }
        let err = load_dir(&d).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
