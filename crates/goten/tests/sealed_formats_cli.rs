//! `goten seal-data` for the formats beyond CIFAR-10, through the real binary: MNIST IDX files
//! and an image folder are sealed, the sealed files hold no plaintext image, training on them
//! gives the same steps as training on the plaintext files (the statistics of the image folder
//! computed inside the enclave from the opened records), and a header edited by a host makes
//! every record fail to open.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::datasets::{image_folder, mnist_like};
use common::{goten, losses, text};

fn tmp(name: &str) -> PathBuf {
    common::tmp("sealed-formats", name)
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", text(out));
}

fn seal(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "seal-data",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    goten(&args)
}

/// Trains 4 plain-mode steps on `data` (with `extra` options) into `out`.
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--mode",
        "plain",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "4",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--test-limit",
        "16",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    goten(&args)
}

#[test]
fn mnist_files_seal_train_like_the_plaintext_and_reject_an_edited_header() {
    let root = tmp("mnist");
    let data = root.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    mnist_like(&data, 48, 16);
    let sealed = root.join("sealed");
    let out = seal(&data, &sealed, &[]);
    ok(&out);
    assert!(
        text(&out).contains("1x28x28 images of 10 classes (mnist data)"),
        "{}",
        text(&out)
    );
    let key = root.join("sealed.key");
    let k = key.to_str().unwrap();
    // No 64-byte run of any test image (stored raw) appears in the sealed file.
    let raw = std::fs::read(data.join("t10k-images-idx3-ubyte")).unwrap();
    let enc = std::fs::read(sealed.join("test.sealed")).unwrap();
    for img in raw[16..].chunks(784) {
        assert!(
            !enc.windows(64).any(|w| w == &img[300..364]),
            "plaintext visible in the sealed file"
        );
    }
    let lenet = ["--model", "lenet5"];
    let a = root.join("a");
    let b = root.join("b");
    ok(&train(&data, &a, &lenet));
    ok(&train(
        &sealed,
        &b,
        &[&lenet[..], &["--data-key", k]].concat(),
    ));
    assert_eq!(losses(&a).len(), 4);
    assert_eq!(
        losses(&a),
        losses(&b),
        "sealed and plaintext files train alike"
    );
    // Goten mode on the sealed files: the key reaches the enclaves through their service key.
    let g = goten(&[
        "train",
        "--mode",
        "goten",
        "--model",
        "lenet5",
        "--data",
        sealed.to_str().unwrap(),
        "--data-key",
        k,
        "--steps",
        "2",
        "--batch",
        "8",
        "--test-limit",
        "16",
        "--out",
        root.join("g").to_str().unwrap(),
        "--json",
    ]);
    ok(&g);
    // A host that names another format for sealed files is told what they hold.
    let wrong = train(
        &sealed,
        &root.join("w"),
        &[
            &lenet[..],
            &["--data-key", k, "--data-format", "fashion-mnist"],
        ]
        .concat(),
    );
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong));
    assert!(text(&wrong).contains("was sealed from mnist data"));
    // A host edits the public header (10 classes -> 12): every record's authentication binds
    // the class count, so the first record opened fails.
    let mut t = std::fs::read(sealed.join("train.sealed")).unwrap();
    // magic 8, version 4, "train" 4+5, "mnist" 4+5, shape 3x4: the class count follows.
    let at = 8 + 4 + 9 + 9 + 12;
    assert_eq!(t[at..at + 4], 10u32.to_le_bytes());
    t[at..at + 4].copy_from_slice(&12u32.to_le_bytes());
    std::fs::write(sealed.join("train.sealed"), &t).unwrap();
    let mut test = std::fs::read(sealed.join("test.sealed")).unwrap();
    let at = at - 1; // "test" is one byte shorter than "train"
    test[at..at + 4].copy_from_slice(&12u32.to_le_bytes());
    std::fs::write(sealed.join("test.sealed"), &test).unwrap();
    let c = train(
        &sealed,
        &root.join("c"),
        &[&lenet[..], &["--data-key", k]].concat(),
    );
    assert_eq!(c.status.code(), Some(5), "{}", text(&c));
    assert!(text(&c).contains("fails authentication"), "{}", text(&c));
    // Resealing never reuses or overwrites the key.
    let again = seal(&data, &root.join("sealed2"), &["--key-out", k]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("exists already"), "{}", text(&again));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn image_folders_seal_and_their_statistics_are_computed_inside_the_enclave() {
    let root = tmp("folder");
    let data = root.join("pets");
    image_folder(&data, 12);
    let sealed = root.join("sealed");
    let out = seal(&data, &sealed, &["--data-format", "image-folder"]);
    ok(&out);
    assert!(
        text(&out).contains("3x32x32 images of 2 classes (image-folder data)"),
        "{}",
        text(&out)
    );
    let k = root.join("sealed.key");
    let a = root.join("a");
    let b = root.join("b");
    let plain = train(&data, &a, &["--model", "small"]);
    ok(&plain);
    let enc = train(
        &sealed,
        &b,
        &["--model", "small", "--data-key", k.to_str().unwrap()],
    );
    ok(&enc);
    // The host never saw the sealed images, so equal steps mean the enclave computed the same
    // statistics from the records it opened.
    assert!(
        text(&enc).contains("computed inside the enclave"),
        "{}",
        text(&enc)
    );
    assert_eq!(losses(&a).len(), 4);
    assert_eq!(losses(&a), losses(&b));
    // Given statistics change the steps: they are used, not ignored.
    let c = root.join("c");
    ok(&train(
        &sealed,
        &c,
        &[
            "--model",
            "small",
            "--data-key",
            k.to_str().unwrap(),
            "--normalize",
            "0.5,0.5,0.5/0.25,0.25,0.25",
        ],
    ));
    assert_ne!(losses(&b), losses(&c));
    std::fs::remove_dir_all(&root).unwrap();
}
