//! Small generated datasets of the formats beyond CIFAR-10 (MNIST IDX files, image folders)
//! for the CLI tests.

use std::io::Write;
use std::path::Path;

/// An IDX file of unsigned bytes with dimensions `sizes`.
pub fn idx(sizes: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, sizes.len() as u8];
    for s in sizes {
        out.extend_from_slice(&s.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `bytes`, gzipped.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` learnable MNIST-shaped images and their labels: class c is a bright bar on rows
/// 2c+4..2c+6, plus noise (`salt` shifts the classes).
pub fn mnist_bars(n: u32, salt: u32) -> (Vec<u8>, Vec<u8>) {
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = (i * 7 + salt) % 10;
        labels.push(c as u8);
        for y in 0..28u32 {
            for x in 0..28u32 {
                let noise = (i.wrapping_mul(2654435761) ^ (y * 28 + x).wrapping_mul(40503)) % 64;
                let bar = if (2 * c + 4..2 * c + 6).contains(&y) {
                    180
                } else {
                    0
                };
                px.push((bar + noise) as u8);
            }
        }
    }
    (px, labels)
}

/// A learnable MNIST folder of [`mnist_bars`] (training split gzipped, test split raw).
pub fn mnist_like(dir: &Path, train: u32, test: u32) {
    let (p, l) = mnist_bars(train, 0);
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx(&[train, 28, 28], &p)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gz(&idx(&[train], &l)),
    )
    .unwrap();
    let (p, l) = mnist_bars(test, 3);
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(&[test, 28, 28], &p)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx(&[test], &l)).unwrap();
}

/// A learnable image folder: class `red` is reddish, `blue` bluish, sizes and formats mixed.
pub fn image_folder(root: &Path, per_class: u32) {
    for (split, n) in [("train", per_class), ("test", per_class / 2)] {
        for (ci, class) in ["blue", "red"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let (w, h) = (24 + (i % 3) * 20, 30 + (i % 2) * 10);
                let img = image::RgbImage::from_fn(w, h, |x, y| {
                    let noise = ((x * 31 + y * 17 + i * 7) % 60) as u8;
                    if ci == 1 {
                        image::Rgb([170 + noise, noise, noise])
                    } else {
                        image::Rgb([noise, noise, 170 + noise])
                    }
                });
                let ext = if i % 2 == 0 { "png" } else { "jpg" };
                img.save(dir.join(format!("{i}.{ext}"))).unwrap();
            }
        }
    }
}

/// A version-1 `.npy` file of unsigned bytes.
pub fn npy(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple}, }}");
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
