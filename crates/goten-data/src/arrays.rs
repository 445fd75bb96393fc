//! Arrays of images and labels: NumPy `.npy` files (`train_images.npy`, `train_labels.npy`,
//! `test_images.npy`, `test_labels.npy`) or safetensors files (`train.safetensors`,
//! `test.safetensors`, each with tensors `images` and `labels`).
//!
//! Where it sits: a reader of the data owner's side ([`crate::load`]), for data that already
//! lives in Python. Images are unsigned bytes shaped `(N, H, W)` (grey), `(N, H, W, C)` or
//! `(N, C, H, W)` with C = 1 or 3 (the last axis wins when both could be channels); labels are
//! integers of any width, each below 256. The number of classes is the largest training label
//! plus one. Everything is checked against the header before it is used.

use std::path::Path;

use crate::{DataError, Dataset};

fn malformed(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A parsed array: element type (`u1`, `i8`, ...), shape, little-endian data.
struct Array {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Parses a `.npy` file (format versions 1 to 3, C order, little-endian or byte types).
fn parse_npy(path: &Path, bytes: &[u8]) -> Result<Array, DataError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(malformed(path, "is not a .npy file (bad magic)"));
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        v => return Err(malformed(path, format!("has .npy format version {v}"))),
    };
    let header = bytes
        .get(start..start + len)
        .ok_or_else(|| malformed(path, "is truncated inside its header"))?;
    let header =
        std::str::from_utf8(header).map_err(|_| malformed(path, "has a non-text header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| malformed(path, "has no 'descr' in its header"))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(malformed(
            path,
            "is in Fortran order; save it in C order (numpy.ascontiguousarray)",
        ));
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| malformed(path, "has no 'shape' in its header"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| malformed(path, format!("has an unreadable shape ({shape_text})")))?;
    let (order, dtype) = descr.split_at(1);
    if order == ">" && !dtype.ends_with('1') {
        return Err(malformed(
            path,
            format!("is big-endian ({descr}); save it little-endian"),
        ));
    }
    let data = bytes[start + len..].to_vec();
    let width = dtype[1..]
        .parse::<usize>()
        .map_err(|_| malformed(path, format!("has element type {descr}")))?;
    let want = shape
        .iter()
        .try_fold(width, |a, &d| a.checked_mul(d))
        .ok_or_else(|| malformed(path, "announces an impossible size"))?;
    if data.len() != want {
        return Err(malformed(
            path,
            format!(
                "{shape:?} of {descr} needs {want} bytes of data, the file has {}",
                data.len()
            ),
        ));
    }
    Ok(Array {
        dtype: dtype.to_string(),
        shape,
        data,
    })
}

/// The labels of `a` as bytes (each must be a non-negative integer below 256).
fn labels(path: &Path, a: &Array) -> Result<Vec<u8>, DataError> {
    if a.shape.len() != 1 {
        return Err(malformed(
            path,
            format!("labels have shape {:?}; expected (N,)", a.shape),
        ));
    }
    let (kind, width) = a.dtype.split_at(1);
    let width: usize = width.parse().unwrap_or(0);
    if !matches!(kind, "u" | "i") || !matches!(width, 1 | 2 | 4 | 8) {
        return Err(malformed(
            path,
            format!("labels of type {}: use integers", a.dtype),
        ));
    }
    a.data
        .chunks_exact(width)
        .enumerate()
        .map(|(i, c)| {
            let mut b = [0u8; 8];
            b[..width].copy_from_slice(c);
            let negative = kind == "i" && c[width - 1] & 0x80 != 0;
            let v = u64::from_le_bytes(b);
            if negative || v > 255 {
                Err(malformed(path, format!("label {i} is out of range 0-255")))
            } else {
                Ok(v as u8)
            }
        })
        .collect()
}

/// Images of `a` as channel-major bytes and their `[c, h, w]`.
fn images(path: &Path, a: Array) -> Result<(usize, [usize; 3], Vec<u8>), DataError> {
    if a.dtype != "u1" {
        return Err(malformed(
            path,
            format!("images of type {}: use unsigned bytes (uint8)", a.dtype),
        ));
    }
    let s = &a.shape;
    let (n, c, h, w, channels_last) = match *s.as_slice() {
        [n, h, w] => (n, 1, h, w, true),
        [n, h, w, c] if c == 1 || c == 3 => (n, c, h, w, true),
        [n, c, h, w] if c == 1 || c == 3 => (n, c, h, w, false),
        _ => {
            return Err(malformed(
                path,
                format!(
                    "images have shape {s:?}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3"
                ),
            ));
        }
    };
    if h == 0 || w == 0 {
        return Err(malformed(path, "holds empty images"));
    }
    let data = if channels_last && c > 1 {
        let mut out = vec![0u8; a.data.len()];
        for (i, img) in a.data.chunks_exact(h * w * c).enumerate() {
            let o = &mut out[i * c * h * w..][..c * h * w];
            for (p, px) in img.chunks_exact(c).enumerate() {
                for ch in 0..c {
                    o[ch * h * w + p] = px[ch];
                }
            }
        }
        out
    } else {
        a.data
    };
    Ok((n, [c, h, w], data))
}

fn dataset((ipath, ia): (&Path, Array), (lpath, la): (&Path, Array)) -> Result<Dataset, DataError> {
    let labels = labels(lpath, &la)?;
    let (n, shape, pixels) = images(ipath, ia)?;
    if n != labels.len() {
        return Err(malformed(
            lpath,
            format!(
                "holds {} labels for {n} images in {}",
                labels.len(),
                ipath.display()
            ),
        ));
    }
    let mut d = Dataset::empty(shape, 0);
    d.images = pixels;
    d.labels = labels;
    Ok(d)
}

/// Both splits, with the classes from the training labels and the test split checked against
/// them and the training images' shape.
fn splits(
    mut train: Dataset,
    mut test: Dataset,
    dir: &Path,
) -> Result<(Dataset, Dataset), DataError> {
    if train.is_empty() {
        return Err(malformed(dir, "the training split is empty"));
    }
    if train.shape != test.shape {
        return Err(malformed(
            dir,
            format!(
                "training images are {:?}, test images {:?}",
                train.shape, test.shape
            ),
        ));
    }
    let classes = usize::from(*train.labels.iter().max().expect("not empty")) + 1;
    if let Some(i) = test.labels.iter().position(|&l| usize::from(l) >= classes) {
        return Err(malformed(
            dir,
            format!(
                "test label {} (image {i}) is not among the training classes 0-{}",
                test.labels[i],
                classes - 1
            ),
        ));
    }
    train.classes = classes;
    test.classes = classes;
    Ok((train, test))
}

/// Reads the four `.npy` files of a folder.
pub(crate) fn load_npy(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let get = |name: &str| -> Result<(std::path::PathBuf, Array), DataError> {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(DataError::Missing {
                path: p,
                reason: "missing: an array folder holds train_images.npy, train_labels.npy, test_images.npy and test_labels.npy".into(),
            });
        }
        let a = parse_npy(&p, &crate::read(&p)?)?;
        Ok((p, a))
    };
    let split = |s: &str| -> Result<Dataset, DataError> {
        let (ip, ia) = get(&format!("{s}_images.npy"))?;
        let (lp, la) = get(&format!("{s}_labels.npy"))?;
        dataset((&ip, ia), (&lp, la))
    };
    splits(split("train")?, split("test")?, dir)
}

/// Reads `train.safetensors` and `test.safetensors` (tensors `images` and `labels`).
pub(crate) fn load_safetensors(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let split = |s: &str| -> Result<Dataset, DataError> {
        let p = dir.join(format!("{s}.safetensors"));
        if !p.is_file() {
            return Err(DataError::Missing {
                path: p,
                reason: "missing: an array folder holds train.safetensors and test.safetensors with tensors `images` and `labels`".into(),
            });
        }
        let bytes = crate::read(&p)?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| malformed(&p, format!("is not a valid safetensors file ({e})")))?;
        let get = |name: &str| -> Result<Array, DataError> {
            let t = st
                .tensor(name)
                .map_err(|_| malformed(&p, format!("has no tensor `{name}`")))?;
            use safetensors::Dtype as D;
            let dtype = match t.dtype() {
                D::U8 => "u1",
                D::I8 => "i1",
                D::U16 => "u2",
                D::I16 => "i2",
                D::U32 => "u4",
                D::I32 => "i4",
                D::U64 => "u8",
                D::I64 => "i8",
                other => {
                    return Err(malformed(&p, format!("tensor `{name}` is {other:?}")));
                }
            };
            Ok(Array {
                dtype: dtype.into(),
                shape: t.shape().to_vec(),
                data: t.data().to_vec(),
            })
        };
        dataset((&p, get("images")?), (&p, get("labels")?))
    };
    splits(split("train")?, split("test")?, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.npy` file (version 1) of `descr` with `shape` and raw `data`.
    fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let tuple = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("goten-arrays-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn npy_channels_last_and_wide_labels() {
        let d = tmp("npy");
        // Two 2x2 RGB images, channels last: pixel p of image i is (10i+p, 100+p, 200+p).
        let mut px = Vec::new();
        for i in 0..2u8 {
            for p in 0..4u8 {
                px.extend_from_slice(&[10 * i + p, 100 + p, 200 + p]);
            }
        }
        std::fs::write(d.join("train_images.npy"), npy("|u1", &[2, 2, 2, 3], &px)).unwrap();
        let labs: Vec<u8> = [3i64, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(d.join("train_labels.npy"), npy("<i8", &[2], &labs)).unwrap();
        std::fs::write(
            d.join("test_images.npy"),
            npy("|u1", &[1, 3, 2, 2], &px[..12]),
        )
        .unwrap();
        std::fs::write(d.join("test_labels.npy"), npy("|u1", &[1], &[2])).unwrap();
        let (tr, te) = load_npy(&d).unwrap();
        assert_eq!(
            (tr.shape, tr.classes, tr.labels.clone()),
            ([3, 2, 2], 4, vec![3, 1])
        );
        assert_eq!(
            tr.image(1),
            &[10, 11, 12, 13, 100, 101, 102, 103, 200, 201, 202, 203]
        );
        assert_eq!(te.image(0), &px[..12], "channels first stays as it is");
        // Errors name the file and the cause.
        let labs: Vec<u8> = [3i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(d.join("train_labels.npy"), npy("<i8", &[2], &labs)).unwrap();
        let err = load_npy(&d).unwrap_err().to_string();
        assert!(
            err.contains("train_labels.npy") && err.contains("label 1"),
            "{err}"
        );
        std::fs::write(d.join("train_labels.npy"), npy("<f4", &[2], &[0; 8])).unwrap();
        assert!(
            load_npy(&d)
                .unwrap_err()
                .to_string()
                .contains("use integers")
        );
        std::fs::write(d.join("train_labels.npy"), npy("|u1", &[3], &[0, 1, 2])).unwrap();
        assert!(
            load_npy(&d)
                .unwrap_err()
                .to_string()
                .contains("3 labels for 2 images")
        );
        std::fs::write(
            d.join("train_images.npy"),
            npy("|u1", &[2, 2, 2, 3], &px[..20]),
        )
        .unwrap();
        assert!(
            load_npy(&d)
                .unwrap_err()
                .to_string()
                .contains("needs 24 bytes")
        );
        std::fs::write(d.join("train_images.npy"), b"PK not numpy").unwrap();
        assert!(load_npy(&d).unwrap_err().to_string().contains("bad magic"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn safetensors_splits() {
        use safetensors::tensor::{Dtype, TensorView};
        let d = tmp("st");
        let px = vec![7u8; 2 * 4 * 4];
        for (split, labels) in [("train", vec![0u8, 1]), ("test", vec![1u8, 1])] {
            let views = vec![
                (
                    "images",
                    TensorView::new(Dtype::U8, vec![2, 4, 4], &px).unwrap(),
                ),
                (
                    "labels",
                    TensorView::new(Dtype::U8, vec![2], &labels).unwrap(),
                ),
            ];
            let bytes = safetensors::tensor::serialize(views, None).unwrap();
            std::fs::write(d.join(format!("{split}.safetensors")), bytes).unwrap();
        }
        let (tr, te) = load_safetensors(&d).unwrap();
        assert_eq!((tr.shape, tr.classes, te.len()), ([1, 4, 4], 2, 2));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
