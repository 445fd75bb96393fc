//! `goten model show`: the table and JSON shapes scripts rely on, and a clear error for an
//! unknown model.

use std::process::Command;

fn goten(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_goten"))
        .args(args)
        .output()
        .expect("run goten")
}

#[test]
fn show_prints_layers_and_totals() {
    let out = goten(&["model", "show", "vgg11", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["model"], "vgg11");
    assert_eq!(v["input"], serde_json::json!([3, 32, 32]));
    // Hand counts (see goten_enclave::nn::summary's test).
    assert_eq!(v["params"], 9_752_640);
    assert_eq!(v["macs_per_image"], 153_293_824u64);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.last().unwrap()["output"], serde_json::json!([10]));

    let out = goten(&["model", "show", "small", "--classes", "7"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("model small: input 3x32x32, 7 classes"),
        "{text}"
    );
    assert!(
        text.contains("conv 3x3 s1 p1") && text.contains("total: "),
        "{text}"
    );
}

#[test]
fn unknown_model_is_a_usage_error() {
    let out = goten(&["model", "show", "resnet99"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown model") && err.contains("vgg11"),
        "{err}"
    );
}
