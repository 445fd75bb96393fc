//! Datasets beyond CIFAR-10 through the real binary: a generated MNIST folder (IDX, gzipped)
//! trains LeNet-5 in plain and goten mode, exports, and `goten predict` reads the folder; a
//! model that does not fit the images and a corrupt file get clear errors; `--init` starts a
//! run from exported weights and lists every name that does not fit.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::datasets::{idx, image_folder, mnist_bars, mnist_like, npy};
use common::goten;

fn tmp(name: &str) -> PathBuf {
    common::tmp("datasets", name)
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("last line is JSON")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lenet5_trains_on_mnist_files_and_predicts() {
    let root = tmp("mnist");
    let data = root.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    mnist_like(&data, 320, 64);
    let d = data.to_str().unwrap();
    let out_plain = root.join("plain");
    let export = root.join("lenet.safetensors");
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--model",
        "lenet5",
        "--data",
        d,
        "--epochs",
        "2",
        "--batch",
        "32",
        "--lr",
        "0.05",
        "--out",
        out_plain.to_str().unwrap(),
        "--export",
        export.to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let v = last_json(&out);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5, "LeNet-5 should learn the bars: {v}");
    // The exported model scores the folder's test split as the run did.
    let out = goten(&[
        "predict",
        "--model",
        "lenet5",
        "--weights",
        export.to_str().unwrap(),
        "--data",
        d,
        "--json",
    ]);
    ok(&out);
    let p = last_json(&out);
    assert_eq!(p["images"], 64);
    assert!(
        (p["accuracy"].as_f64().unwrap() - acc).abs() < 1e-9,
        "{p} vs {v}"
    );
    assert_eq!(
        p["predictions"][0]["name"].as_str().unwrap().len(),
        1,
        "digit names"
    );
    // Goten mode: the same files through the protocol.
    let out = goten(&[
        "train",
        "--mode",
        "goten",
        "--model",
        "lenet5",
        "--data",
        d,
        "--epochs",
        "2",
        "--batch",
        "32",
        "--lr",
        "0.05",
        "--data-format",
        "fashion-mnist",
        "--out",
        root.join("goten").to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let g = last_json(&out);
    assert_eq!(g["steps"], 20);
    // Private prediction of 1x28x28 images: the sealed checkpoints served by a local
    // cluster score the test split as the run's own (goten-mode) evaluation did, up to
    // rounding noise.
    let out = goten(&[
        "predict",
        "--mode",
        "goten",
        "--checkpoint",
        root.join("goten").to_str().unwrap(),
        "--data",
        d,
        "--data-format",
        "fashion-mnist",
        "--json",
    ]);
    ok(&out);
    let p = last_json(&out);
    assert_eq!(p["images"], 64);
    assert_eq!(p["predictions"][0]["scores"].as_array().unwrap().len(), 10);
    let (run_acc, served_acc) = (
        g["test_accuracy"].as_f64().unwrap(),
        p["accuracy"].as_f64().unwrap(),
    );
    assert!(run_acc > 0.5, "{g}");
    assert!(
        (served_acc - run_acc).abs() <= 3.0 / 64.0,
        "{run_acc} vs {served_acc}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn mismatched_models_and_corrupt_files_are_clear_errors() {
    let root = tmp("bad");
    mnist_like(&root, 40, 20);
    let d = root.to_str().unwrap();
    let out = goten(&[
        "train", "--mode", "plain", "--model", "resnet20", "--data", d,
    ]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resnet20 takes 3x32x32") && err.contains("1x28x28"),
        "{err}"
    );
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--data",
        d,
        "--data-format",
        "svhn",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown data format \"svhn\""));
    // A labels file that announces more labels than it holds.
    std::fs::write(root.join("t10k-labels-idx1-ubyte"), idx(&[30], &[1; 20])).unwrap();
    let out = goten(&["train", "--mode", "plain", "--model", "lenet5", "--data", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("t10k-labels-idx1-ubyte") && err.contains("truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

fn tensor(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().to_vec()
}

#[test]
fn init_starts_from_exported_weights_and_lists_misfits() {
    let root = tmp("init");
    let data = root.join("mnist");
    std::fs::create_dir_all(&data).unwrap();
    mnist_like(&data, 64, 16);
    let d = data.to_str().unwrap();
    let a = root.join("a.safetensors");
    let b = root.join("b.safetensors");
    let base = [
        "train", "--mode", "plain", "--model", "lenet5", "--data", d, "--batch", "16",
    ];
    let run = |extra: &[&str]| goten(&[&base[..], extra].concat());
    ok(&run(&[
        "--steps",
        "2",
        "--out",
        root.join("ra").to_str().unwrap(),
        "--export",
        a.to_str().unwrap(),
    ]));
    // With a zero learning rate the weights stay where --init put them.
    let out = run(&[
        "--steps",
        "1",
        "--lr",
        "0",
        "--seed",
        "9",
        "--init",
        a.to_str().unwrap(),
        "--out",
        root.join("rb").to_str().unwrap(),
        "--export",
        b.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--init"),
        "the notice names the flag"
    );
    for name in ["conv1.weight", "conv2.bias", "fc3.weight"] {
        assert_eq!(tensor(&a, name), tensor(&b, name), "{name}");
    }
    // Without --init the seed decides: different weights.
    let c = root.join("c.safetensors");
    ok(&run(&[
        "--steps",
        "1",
        "--lr",
        "0",
        "--seed",
        "9",
        "--out",
        root.join("rc").to_str().unwrap(),
        "--export",
        c.to_str().unwrap(),
    ]));
    assert_ne!(tensor(&a, "conv1.weight"), tensor(&c, "conv1.weight"));
    // A file of another model: every misfit is listed, nothing runs.
    let small = root.join("small.safetensors");
    ok(&goten(&[
        "train",
        "--mode",
        "plain",
        "--steps",
        "1",
        "--synthetic-train",
        "32",
        "--test-limit",
        "16",
        "--out",
        root.join("rs").to_str().unwrap(),
        "--export",
        small.to_str().unwrap(),
    ]));
    let out = run(&[
        "--init",
        small.to_str().unwrap(),
        "--out",
        root.join("rd").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10 tensor(s) do not fit")
            && err.contains("lacks conv1.weight")
            && err.contains("lacks fc3.bias"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn image_folders_train_and_predict_with_their_class_names() {
    let root = tmp("folder");
    let data = root.join("pets");
    image_folder(&data, 24);
    let d = data.to_str().unwrap();
    let export = root.join("m.safetensors");
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--data",
        d,
        "--epochs",
        "3",
        "--batch",
        "8",
        "--lr",
        "0.05",
        "--out",
        root.join("run").to_str().unwrap(),
        "--export",
        export.to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("image-folder data: 2 classes") && err.contains("computed"),
        "{err}"
    );
    let v = last_json(&out);
    assert!(
        v["test_accuracy"].as_f64().unwrap() > 0.9,
        "colours are easy: {v}"
    );
    let out = goten(&[
        "predict",
        "--weights",
        export.to_str().unwrap(),
        "--data",
        d,
        "--json",
    ]);
    ok(&out);
    let p = last_json(&out);
    assert_eq!(p["images"], 24);
    assert_eq!(
        p["accuracy"], v["test_accuracy"],
        "same statistics, same answers"
    );
    let names: Vec<&str> = p["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| *n == "blue" || *n == "red"),
        "{names:?}"
    );
    // Bad statistics and a file that will not decode are clear errors.
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--data",
        d,
        "--normalize",
        "0.5,0.5/0.2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 channels need 3 means"));
    std::fs::write(data.join("train/red/zz.png"), b"\x89PNG broken").unwrap();
    let out = goten(&["train", "--mode", "plain", "--data", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("zz.png") && err.contains("does not decode"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn npy_arrays_train_lenet5() {
    let root = tmp("npy");
    // The MNIST-like bars as arrays: (N, 28, 28) images, (N,) labels.
    let data = root.join("arrays");
    std::fs::create_dir_all(&data).unwrap();
    for (split, n, salt) in [("train", 160, 0), ("test", 40, 3)] {
        let (px, labels) = mnist_bars(n, salt);
        let n = n as usize;
        std::fs::write(
            data.join(format!("{split}_images.npy")),
            npy(&[n, 28, 28], &px),
        )
        .unwrap();
        std::fs::write(data.join(format!("{split}_labels.npy")), npy(&[n], &labels)).unwrap();
    }
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--model",
        "lenet5",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "3",
        "--batch",
        "16",
        "--lr",
        "0.05",
        "--out",
        root.join("run").to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("npy data: 10 classes"), "{err}");
    let v = last_json(&out);
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.5, "{v}");
    std::fs::remove_dir_all(&root).unwrap();
}
