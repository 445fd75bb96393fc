//! Model files through the real binary: `goten model show FILE`, training a model file's
//! network in plain and goten mode (and resuming it), exporting and predicting with it, and
//! clear errors for a bad file.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::goten;

fn tmp(name: &str) -> PathBuf {
    common::tmp("modelfile", name)
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

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("last line is JSON")
}

/// A small residual network for 3x32x32 images.
const NET: &str = r#"
name = "tiny-res"
input = [3, 32, 32]

[[layers]]
type = "conv"
out = 8
name = "conv1"
[[layers]]
type = "batchnorm"
name = "bn1"
[[layers]]
type = "relu"
[[layers]]
type = "maxpool"
[[layers]]
type = "basic-block"
out = 16
stride = 2
name = "layer1.0"
[[layers]]
type = "residual"
body = [{ type = "conv", out = 16, name = "r.conv" }, { type = "batchnorm", name = "r.bn" }]
[[layers]]
type = "global-avgpool"
[[layers]]
type = "dense"
bias = true
name = "fc"
"#;

fn write_net(dir: &Path) -> PathBuf {
    let p = dir.join("net.toml");
    std::fs::write(&p, NET).unwrap();
    p
}

#[test]
fn show_train_resume_export_and_predict() {
    let root = tmp("run");
    let net = write_net(&root);
    let n = net.to_str().unwrap();
    let out = goten(&["model", "show", n, "--json"]);
    ok(&out);
    let v = last_json(&out);
    assert_eq!(v["model"], "tiny-res");
    // conv1 3*8*9, bn1 16, block: 8*16*9 + 16*16*9 + 2*32 (BNs) + 8*16 + 32 (projection),
    // residual: 16*16*9 + 32, fc 16*10 + 10.
    let want =
        3 * 8 * 9 + 16 + 8 * 16 * 9 + 16 * 16 * 9 + 64 + 8 * 16 + 32 + 16 * 16 * 9 + 32 + 170;
    assert_eq!(v["params"], want);
    let common = [
        "train",
        "--model-file",
        n,
        "--synthetic-train",
        "64",
        "--test-limit",
        "32",
        "--batch",
        "16",
        "--json",
    ];
    let run = |dir: &Path, extra: &[&str]| {
        let mut args: Vec<&str> = common.to_vec();
        args.extend_from_slice(&["--out", dir.to_str().unwrap()]);
        args.extend_from_slice(extra);
        goten(&args)
    };
    // Plain mode, exported and scored again by goten predict.
    let export = root.join("m.safetensors");
    let plain = root.join("plain");
    let out = run(
        &plain,
        &["--mode", "plain", "--export", export.to_str().unwrap()],
    );
    ok(&out);
    assert_eq!(last_json(&out)["model"], "tiny-res");
    // goten predict reads the export with the same model file (20 CIFAR-format records).
    let data = root.join("few.bin");
    let recs: Vec<u8> = (0..20 * 3073).map(|i| (i * 7 % 251) as u8 % 10).collect();
    std::fs::write(&data, recs).unwrap();
    let out = goten(&[
        "predict",
        "--model-file",
        n,
        "--weights",
        export.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    assert_eq!(last_json(&out)["images"], 20);
    // Goten mode: 2 steps, then a resume to 4 from the sealed checkpoint.
    let g = root.join("goten");
    ok(&run(&g, &["--mode", "goten", "--steps", "2"]));
    let out = run(&g, &["--mode", "goten", "--steps", "4", "--resume"]);
    ok(&out);
    assert_eq!(last_json(&out)["steps"], 4);
    // Private prediction from the sealed checkpoints alone: they carry the network's
    // description, so no model file is needed.
    let out = goten(&[
        "predict",
        "--mode",
        "goten",
        "--checkpoint",
        g.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    ok(&out);
    let p = last_json(&out);
    assert_eq!(p["images"], 20);
    assert_eq!(p["predictions"][19]["scores"].as_array().unwrap().len(), 10);
    // A changed model file is another job: the checkpoint is refused.
    std::fs::write(&net, NET.replace("out = 8", "out = 12")).unwrap();
    let out = run(&g, &["--mode", "goten", "--steps", "6", "--resume"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&net, NET).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_model_files_are_clear_errors() {
    let root = tmp("bad");
    let p = root.join("bad.toml");
    std::fs::write(&p, "input = [3, 32, 32]\n[[layers]]\ntype = \"swish\"\n").unwrap();
    let out = goten(&[
        "train",
        "--mode",
        "plain",
        "--model-file",
        p.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("swish"), "{err}");
    // A network that does not fit its input: the layer is named.
    std::fs::write(
        &p,
        "input = [3, 32, 32]\n[[layers]]\ntype = \"dense\"\nout = 4\n",
    )
    .unwrap();
    let out = goten(&["model", "show", p.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer 0") && err.contains("flatten first"),
        "{err}"
    );
    let out = goten(&["model", "show", "nope.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
    let out = goten(&["train", "--model", "vgg11", "--model-file", "x.toml"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--model and --model-file exclude each other"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
