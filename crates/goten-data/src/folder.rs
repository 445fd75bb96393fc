//! A folder of images in class subfolders (torchvision's `ImageFolder` layout): `ROOT/train/CLASS/*`
//! and `ROOT/test/CLASS/*` (or `val/`), PNG and JPEG, decoded by the `image` crate.
//!
//! Where it sits: a reader of the data owner's side ([`crate::load`]). Class indices are the
//! training subfolders' names in sorted order; the test split must use the same names. Every
//! image is converted to RGB, its shorter side resized to the stated size (triangle filter) and
//! the centre cropped square, so images of any size and mode mix. A file that will not decode
//! is an error naming it; files with other extensions and hidden files are skipped.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::{DataError, Dataset};

/// Image side used when none is stated.
pub const DEFAULT_SIDE: usize = 32;

fn malformed(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.into(),
        reason: reason.into(),
    }
}

fn io(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.into(),
        source,
    }
}

/// Whether `root` looks like an image folder (a `train/` subfolder holding subfolders).
pub(crate) fn looks_like(root: &Path) -> bool {
    subdirs(&root.join("train")).is_ok_and(|d| !d.is_empty())
}

/// Sorted names of the visible subfolders of `dir`.
fn subdirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let e = e.map_err(|e| io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Sorted image files (`.png`, `.jpg`, `.jpeg`, any case) of `dir`.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let p = e.map_err(|e| io(dir, e))?.path();
        let ext = p
            .extension()
            .map(|x| x.to_string_lossy().to_ascii_lowercase());
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_file() && !hidden && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Decodes one image to `side x side` RGB, channel-major.
fn decode(path: &Path, side: usize) -> Result<Vec<u8>, DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| io(path, e))?
        .with_guessed_format()
        .map_err(|e| io(path, e))?
        .decode()
        .map_err(|e| malformed(path, format!("does not decode as an image: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(malformed(path, "is an empty image"));
    }
    // Shorter side to `side`, then the centre square.
    let s = side as u32;
    let (nw, nh) = if w <= h {
        (
            s,
            ((u64::from(h) * u64::from(s)).div_ceil(u64::from(w))) as u32,
        )
    } else {
        (
            ((u64::from(w) * u64::from(s)).div_ceil(u64::from(h))) as u32,
            s,
        )
    };
    let resized = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    let (x0, y0) = ((nw - s) / 2, (nh - s) / 2);
    let mut out = vec![0u8; 3 * side * side];
    for y in 0..side {
        for x in 0..side {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                out[c * side * side + y * side + x] = p[c];
            }
        }
    }
    Ok(out)
}

/// Reads one split (`dir/CLASS/*`) with the classes `names`.
fn load_split(dir: &Path, names: &[String], side: usize) -> Result<Dataset, DataError> {
    let found = subdirs(dir)?;
    if let Some(extra) = found.iter().find(|n| !names.contains(n)) {
        return Err(malformed(
            &dir.join(extra),
            "is a class the training split does not have",
        ));
    }
    let mut d = Dataset::empty([3, side, side], names.len());
    d.names = names.to_vec();
    for (label, name) in names.iter().enumerate() {
        let class_dir = dir.join(name);
        if !class_dir.is_dir() {
            continue;
        }
        for p in images_in(&class_dir)? {
            d.images.extend_from_slice(&decode(&p, side)?);
            d.labels.push(label as u8);
        }
    }
    if d.is_empty() {
        return Err(malformed(dir, "holds no PNG or JPEG images"));
    }
    Ok(d)
}

/// Reads `root/train` and `root/test` (or `root/val`) at `side x side` pixels.
pub(crate) fn load_dir(root: &Path, side: usize) -> Result<(Dataset, Dataset), DataError> {
    if !(4..=1024).contains(&side) {
        return Err(malformed(
            root,
            format!("image size {side} is not in 4..=1024"),
        ));
    }
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::Missing {
            path: train_dir,
            reason:
                "missing: an image folder holds train/CLASS/*.png|jpg and test/CLASS/* (or val/)"
                    .into(),
        });
    }
    let names = subdirs(&train_dir)?;
    if names.is_empty() {
        return Err(malformed(&train_dir, "holds no class subfolders"));
    }
    if names.len() > 256 {
        return Err(malformed(
            &train_dir,
            format!("holds {} classes; at most 256 are supported", names.len()),
        ));
    }
    for n in &names {
        if images_in(&train_dir.join(n))?.is_empty() {
            return Err(malformed(&train_dir.join(n), "holds no PNG or JPEG images"));
        }
    }
    let test_dir = ["test", "val"]
        .into_iter()
        .map(|s| root.join(s))
        .find(|p| p.is_dir())
        .ok_or_else(|| DataError::Missing {
            path: root.join("test"),
            reason: "missing: the test split (test/ or val/) is needed for evaluation".into(),
        })?;
    Ok((
        load_split(&train_dir, &names, side)?,
        load_split(&test_dir, &names, side)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("goten-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn save(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn classes_sizes_and_formats() {
        let r = tmp("ok");
        save(&r.join("train/cat/a.png"), 40, 64, [200, 10, 10]);
        save(&r.join("train/cat/b.jpg"), 32, 32, [190, 20, 20]);
        save(&r.join("train/dog/c.png"), 100, 20, [10, 10, 200]);
        std::fs::write(r.join("train/dog/notes.txt"), "skipped").unwrap();
        save(&r.join("val/dog/d.png"), 8, 8, [0, 255, 0]);
        let (tr, te) = load_dir(&r, 16).unwrap();
        assert_eq!((tr.shape, tr.len(), tr.classes), ([3, 16, 16], 3, 2));
        assert_eq!(tr.names, ["cat", "dog"]);
        assert_eq!(tr.labels, [0, 0, 1]);
        assert_eq!(te.labels, [1]);
        // Solid colours survive resizing: red plane first, channel-major.
        assert_eq!(tr.image(0)[0], 200);
        assert_eq!(tr.image(2)[2 * 256], 200);
        assert_eq!(te.image(0)[256], 255);
        std::fs::remove_dir_all(&r).unwrap();
    }

    #[test]
    fn bad_folders_and_files_are_named() {
        let r = tmp("bad");
        let err = load_dir(&r, 32).unwrap_err().to_string();
        assert!(err.contains("train") && err.contains("missing"), "{err}");
        save(&r.join("train/a/x.png"), 4, 4, [1, 2, 3]);
        let err = load_dir(&r, 32).unwrap_err().to_string();
        assert!(err.contains("test split"), "{err}");
        save(&r.join("test/b/y.png"), 4, 4, [1, 2, 3]);
        let err = load_dir(&r, 32).unwrap_err().to_string();
        assert!(
            err.contains("test/b") && err.contains("class the training split"),
            "{err}"
        );
        std::fs::remove_dir_all(r.join("test/b")).unwrap();
        save(&r.join("test/a/y.png"), 4, 4, [1, 2, 3]);
        std::fs::write(
            r.join("train/a/broken.jpg"),
            b"\xff\xd8\xff not really a jpeg",
        )
        .unwrap();
        let err = load_dir(&r, 32).unwrap_err().to_string();
        assert!(
            err.contains("broken.jpg") && err.contains("does not decode"),
            "{err}"
        );
        assert!(load_dir(&r, 2).is_err(), "image size below 4");
        std::fs::remove_dir_all(&r).unwrap();
    }
}
