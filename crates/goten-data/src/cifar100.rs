//! CIFAR-100 in its binary layout (`train.bin`, `test.bin`): each record is the coarse label
//! (20 superclasses), the fine label (100 classes) and 3x32x32 pixels.
//!
//! Where it sits: a reader of the data owner's side ([`crate::load`]); the caller picks fine or
//! coarse labels.

use std::path::Path;

use crate::{DataError, Dataset};

/// Bytes of one CIFAR-100 record: coarse label, fine label, image.
pub const RECORD: usize = 2 + 3 * 32 * 32;

/// Reads one CIFAR-100 file with fine (`coarse = false`) or coarse labels.
pub(crate) fn load_file(path: &Path, coarse: bool) -> Result<Dataset, DataError> {
    let bytes = crate::read(path)?;
    let malformed = |reason: String| DataError::Malformed {
        path: path.into(),
        reason,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(malformed(format!(
            "is truncated or corrupt: {} bytes is not a whole number of {RECORD}-byte CIFAR-100 records",
            bytes.len()
        )));
    }
    let classes = if coarse { 20 } else { 100 };
    let mut d = Dataset::empty([3, 32, 32], classes);
    d.images.reserve(bytes.len() / RECORD * (RECORD - 2));
    for (i, r) in bytes.chunks_exact(RECORD).enumerate() {
        if r[0] >= 20 || r[1] >= 100 {
            return Err(malformed(format!(
                "record {i} (offset {}) has labels {}/{}, not a CIFAR-100 superclass (0-19) and class (0-99)",
                i * RECORD,
                r[0],
                r[1]
            )));
        }
        d.labels.push(if coarse { r[0] } else { r[1] });
        d.images.extend_from_slice(&r[2..]);
    }
    Ok(d)
}

/// Reads `train.bin` and `test.bin` from a CIFAR-100 binary folder.
pub(crate) fn load_dir(dir: &Path, coarse: bool) -> Result<(Dataset, Dataset), DataError> {
    let get = |name: &str| {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(DataError::Missing {
                path: p,
                reason: "missing: a CIFAR-100 binary folder holds train.bin and test.bin".into(),
            })
        }
    };
    Ok((
        load_file(&get("train.bin")?, coarse)?,
        load_file(&get("test.bin")?, coarse)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fine_and_coarse_labels_and_bad_records() {
        let d = std::env::temp_dir().join(format!("goten-c100-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut recs = Vec::new();
        for (c, f) in [(3u8, 77u8), (19, 99)] {
            recs.push(c);
            recs.push(f);
            recs.extend(std::iter::repeat_n(f, 3072));
        }
        std::fs::write(d.join("train.bin"), &recs).unwrap();
        std::fs::write(d.join("test.bin"), &recs[..RECORD]).unwrap();
        let (tr, te) = load_dir(&d, false).unwrap();
        assert_eq!(
            (tr.labels.clone(), tr.classes, te.len()),
            (vec![77, 99], 100, 1)
        );
        assert_eq!(tr.image(1)[0], 99);
        let (tr, _) = load_dir(&d, true).unwrap();
        assert_eq!((tr.labels, tr.classes), (vec![3, 19], 20));
        recs[RECORD + 1] = 100;
        std::fs::write(d.join("train.bin"), &recs).unwrap();
        let err = load_dir(&d, false).unwrap_err().to_string();
        assert!(
            err.contains("train.bin") && err.contains("record 1"),
            "{err}"
        );
        std::fs::write(d.join("train.bin"), &recs[..RECORD + 5]).unwrap();
        let err = load_dir(&d, false).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
