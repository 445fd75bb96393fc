//! The CIFAR-10 reader on the shared data and on corrupt files.

use std::path::PathBuf;

use goten_data::{DataError, RECORD_BYTES, load_cifar, load_cifar_dir, synthetic};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar-10-batches-bin")
}

#[test]
fn reads_the_shared_subset() {
    let dir = shared();
    if !dir.exists() {
        // CI sets GOTEN_REQUIRE_DATA: there a missing folder is a failure, not a skip.
        assert!(
            std::env::var_os("GOTEN_REQUIRE_DATA").is_none(),
            "{} is missing but GOTEN_REQUIRE_DATA is set",
            dir.display()
        );
        eprintln!("skipped: {} not present", dir.display());
        return;
    }
    let (train, test) = load_cifar_dir(&dir).unwrap();
    assert_eq!(train.len(), 10_000);
    assert_eq!(test.len(), 10_000);
    let mut per_class = [0usize; 10];
    test.labels
        .iter()
        .for_each(|&l| per_class[usize::from(l)] += 1);
    assert_eq!(
        per_class, [1000; 10],
        "the official test set has 1,000 images per class"
    );
}

/// A fresh scratch folder under Cargo's `target/tmp` (a rerun replaces it; nothing in /tmp).
fn temp_dir(name: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("goten-data-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn corrupt_files_are_named_with_the_offset() {
    let d = temp_dir("corrupt");
    let mut rec = vec![0u8; 2 * RECORD_BYTES + 100];
    rec[0] = 3;
    std::fs::write(d.join("data_batch_2.bin"), &rec).unwrap();
    std::fs::write(d.join("test_batch.bin"), vec![1u8; RECORD_BYTES]).unwrap();
    let e = load_cifar_dir(&d).unwrap_err();
    assert!(
        matches!(e, DataError::Truncated { last_start, .. } if last_start == 2 * RECORD_BYTES),
        "{e}"
    );
    assert!(
        e.to_string().contains("data_batch_2.bin") && e.to_string().contains("offset 6146"),
        "{e}"
    );
    rec.truncate(2 * RECORD_BYTES);
    rec[RECORD_BYTES] = 42;
    std::fs::write(d.join("data_batch_2.bin"), &rec).unwrap();
    let e = load_cifar_dir(&d).unwrap_err().to_string();
    assert!(e.contains("record 1 (offset 3073) has label 42"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_pieces_are_explained() {
    let e = load_cifar_dir(&PathBuf::from("/no/such/dir"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such folder"), "{e}");
    let d = temp_dir("empty");
    assert!(
        load_cifar_dir(&d)
            .unwrap_err()
            .to_string()
            .contains("holds no data_batch")
    );
    std::fs::write(d.join("data_batch_1.bin"), vec![1u8; RECORD_BYTES]).unwrap();
    assert!(
        load_cifar_dir(&d)
            .unwrap_err()
            .to_string()
            .contains("test_batch.bin")
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn synthetic_is_deterministic_and_balanced_enough() {
    let (a, _) = synthetic(500, 100, 3);
    let (b, t) = synthetic(500, 100, 3);
    assert_eq!(a.images, b.images);
    assert_eq!(t.len(), 100);
    let mut per = [0; 10];
    a.labels.iter().for_each(|&l| per[usize::from(l)] += 1);
    assert!(per.iter().all(|&c| c > 20), "{per:?}");
}

/// Builds a small `.tar.gz` in the official layout with the system `tar` (skips without it).
#[test]
fn reads_the_official_archive_layout() {
    let d = temp_dir("targz");
    let inner = d.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&inner).unwrap();
    let mut train = vec![0u8; 3 * RECORD_BYTES];
    train[RECORD_BYTES] = 7;
    std::fs::write(inner.join("data_batch_2.bin"), &train).unwrap();
    std::fs::write(inner.join("data_batch_1.bin"), vec![1u8; RECORD_BYTES]).unwrap();
    std::fs::write(inner.join("test_batch.bin"), vec![2u8; 2 * RECORD_BYTES]).unwrap();
    std::fs::write(inner.join("batches.meta.txt"), "airplane\n").unwrap();
    let archive = d.join("cifar-10-binary.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&d)
        .arg("cifar-10-batches-bin")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: no tar command");
        return;
    }
    let (tr, te) = load_cifar(&archive).unwrap();
    assert_eq!(tr.len(), 4);
    assert_eq!(tr.labels, vec![1, 0, 7, 0], "batches in numeric order");
    assert_eq!(te.len(), 2);
    // A truncated archive is an error naming the file.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = d.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_cifar(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.tar.gz"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
