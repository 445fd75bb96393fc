//! The data owner's sealed splits on disk: what hosts store and forward, ciphertext only.
//!
//! Where it sits: `goten seal-data` writes one file per split from any dataset format; the
//! runtime loads it and hands the records, unopened, to the enclaves (which open them with
//! `goten_enclave::sealed_data`). The header is public: the split's name, the source format,
//! the image shape and the class count. All but the format are also bound into every
//! record's authentication, so a host that edits the header makes every record fail to open.
//!
//! Layout: `GOTENSDS`, version u32, split name (u32 length + bytes), then in version 2 the
//! format name (u32 length + bytes), channels, height and width (u32 each) and the class
//! count (u32); then the record count (u64) and the records, each a nonce (12 bytes), the
//! ciphertext of label byte + pixels, and a tag (16 bytes). Version 1 (CIFAR-10 only, no
//! format, shape or class fields) is still read.

use std::path::Path;

use crate::{CLASSES, DataError};

const MAGIC: &[u8; 8] = b"GOTENSDS";
/// The largest image a sealed record may hold (bytes): far above any model here, small enough
/// that a corrupt header cannot announce absurd records.
const MAX_IMAGE_BYTES: usize = 1 << 24;

/// What a sealed split's records are (the public header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedMeta {
    /// File version: 1 (CIFAR-10 records, the first layout) or 2.
    pub version: u32,
    /// The dataset format the records were sealed from (`DataFormat::name`).
    pub format: String,
    /// Channels, height, width of every image.
    pub shape: [usize; 3],
    /// Number of classes (labels lie in `0..classes`).
    pub classes: usize,
}

impl SealedMeta {
    /// A version-2 header.
    pub fn new(format: &str, shape: [usize; 3], classes: usize) -> Self {
        SealedMeta {
            version: 2,
            format: format.into(),
            shape,
            classes,
        }
    }

    /// Bytes of one sealed record: nonce, label byte, pixels, tag.
    pub fn record_bytes(&self) -> usize {
        12 + 1 + self.shape.iter().product::<usize>() + 16
    }

    fn v1() -> Self {
        SealedMeta {
            version: 1,
            format: "cifar10".into(),
            shape: [3, 32, 32],
            classes: CLASSES,
        }
    }
}

/// A split of sealed records as stored by the data owner.
#[derive(Clone, Debug)]
pub struct SealedSet {
    /// "train" or "test" (bound into every record's authentication).
    pub split: String,
    /// The public header.
    pub meta: SealedMeta,
    bytes: Vec<u8>,
}

impl SealedSet {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.meta.record_bytes()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Sealed record `i` (ciphertext only).
    pub fn record(&self, i: usize) -> &[u8] {
        let r = self.meta.record_bytes();
        &self.bytes[i * r..(i + 1) * r]
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.bytes.truncate(n * self.meta.record_bytes());
    }

    /// All ciphertext (for fingerprints).
    pub fn ciphertext(&self) -> &[u8] {
        &self.bytes
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes sealed records of `split` to `path` under a version-2 header `meta`.
pub fn write_sealed(
    path: &Path,
    split: &str,
    meta: &SealedMeta,
    records: &[Vec<u8>],
) -> Result<(), DataError> {
    let rb = meta.record_bytes();
    let mut out = Vec::with_capacity(64 + records.len() * rb);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    put_str(&mut out, split);
    put_str(&mut out, &meta.format);
    for d in meta.shape.into_iter().chain([meta.classes]) {
        out.extend_from_slice(&(d as u32).to_le_bytes());
    }
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        assert_eq!(r.len(), rb, "every sealed record of a split has one size");
        out.extend_from_slice(r);
    }
    std::fs::write(path, out).map_err(|source| DataError::Io {
        path: path.into(),
        source,
    })
}

/// A cursor over a header that names what is wrong instead of reading past the end.
struct Header<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Header<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        if n > 64 {
            return None;
        }
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Reads a sealed split, checking the header and that the size matches the record count.
pub fn load_sealed(path: &Path) -> Result<SealedSet, DataError> {
    let bytes = crate::read(path)?;
    let bad = |reason: String| DataError::Missing {
        path: path.into(),
        reason,
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(bad("is not a goten sealed dataset (bad magic)".into()));
    }
    let mut h = Header {
        bytes: &bytes,
        at: 8,
    };
    let version = h.u32().expect("12 bytes checked");
    let corrupt = || bad("has a corrupt or truncated header".into());
    let split = h.string().ok_or_else(corrupt)?;
    let meta = match version {
        1 => SealedMeta::v1(),
        2 => {
            let format = h.string().ok_or_else(corrupt)?;
            let mut dims = [0usize; 4];
            for d in &mut dims {
                *d = h.u32().ok_or_else(corrupt)? as usize;
            }
            let [c, hh, w, classes] = dims;
            let pixels = c.checked_mul(hh).and_then(|p| p.checked_mul(w));
            if !pixels.is_some_and(|p| (1..=MAX_IMAGE_BYTES).contains(&p)) {
                return Err(bad(format!(
                    "announces {c}x{hh}x{w} images, outside 1 to {MAX_IMAGE_BYTES} bytes"
                )));
            }
            if !(1..=256).contains(&classes) {
                return Err(bad(format!(
                    "announces {classes} classes; one-byte labels allow 1 to 256"
                )));
            }
            SealedMeta::new(&format, [c, hh, w], classes)
        }
        v => {
            return Err(bad(format!(
                "has sealed-dataset version {v}; this goten reads versions 1 and 2 (seal it again with this goten)"
            )));
        }
    };
    let count = h.u64().ok_or_else(corrupt)?;
    let body = &bytes[h.at..];
    let rb = meta.record_bytes();
    if count.checked_mul(rb as u64) != Some(body.len() as u64) {
        return Err(bad(format!(
            "is truncated or corrupt: {} bytes of records where {count} sealed records of {rb} bytes were announced",
            body.len()
        )));
    }
    Ok(SealedSet {
        split,
        meta,
        bytes: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("goten-sealed-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join("x.sealed")
    }

    #[test]
    fn round_trip_and_header_errors() {
        let meta = SealedMeta::new("mnist", [1, 28, 28], 10);
        let recs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; meta.record_bytes()]).collect();
        let p = tmp("rt");
        write_sealed(&p, "train", &meta, &recs).unwrap();
        let s = load_sealed(&p).unwrap();
        assert_eq!((s.split.as_str(), &s.meta, s.len()), ("train", &meta, 3));
        assert_eq!(s.record(2), &recs[2][..]);
        let full = std::fs::read(&p).unwrap();
        let err = |b: &[u8]| {
            std::fs::write(&p, b).unwrap();
            load_sealed(&p).unwrap_err().to_string()
        };
        assert!(err(&full[..full.len() - 1]).contains("truncated or corrupt"));
        assert!(err(&full[..30]).contains("corrupt or truncated header"));
        assert!(err(b"NOTSEALD\x02\0\0\0").contains("bad magic"));
        let mut v = full.clone();
        v[8] = 9;
        assert!(err(&v).contains("version 9"));
        // Header fields: "train" (4+5) and "mnist" (4+5) follow the version.
        let dims = 12 + 9 + 9;
        let mut z = full.clone();
        z[dims..dims + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(err(&z).contains("0x28x28 images"));
        let mut c = full.clone();
        c[dims + 12..dims + 16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(err(&c).contains("1000 classes"));
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }

    #[test]
    fn version_one_files_still_read_as_cifar10() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(b"test");
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend(vec![7u8; 2 * (12 + 3073 + 16)]);
        let p = tmp("v1");
        std::fs::write(&p, &b).unwrap();
        let s = load_sealed(&p).unwrap();
        assert_eq!((s.meta.version, s.meta.shape, s.len()), (1, [3, 32, 32], 2));
        drop(s);
        std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
    }
}
