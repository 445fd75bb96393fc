//! End-to-end tests of the real `goten` binary: help, bad flags, and the benchmark's JSON.

use std::process::Command;

fn goten(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_goten"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("run goten")
}

#[test]
fn help_lists_the_commands() {
    let out = goten(&["--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("bench"), "{s}");
    let out = goten(&["bench", "kernels", "--help"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("--json") && s.contains("--ring-bits"), "{s}");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = goten(&["bench", "kernels", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = goten(&["bench", "kernels", "--ring-bits", "40"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ring width 40 bits is unsupported"), "{err}");
    let out = goten(&["bench", "kernels", "--filter", "nothing-matches"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("selects no kernel"));
}

#[test]
fn kernel_bench_json_has_the_promised_fields() {
    let out = goten(&[
        "bench", "kernels", "--json", "--batch", "2", "--reps", "1", "--filter", "conv8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    let kernels: Vec<&serde_json::Value> =
        lines.iter().filter(|v| v["kernel"] != "summary").collect();
    assert_eq!(kernels.len(), 3, "conv8 forward, input and weight gradient");
    for v in kernels {
        for f in [
            "kernel",
            "shape",
            "secs",
            "mod_macs_per_s",
            "ref_f32_macs_per_s",
            "ref_f64_macs_per_s",
        ] {
            assert!(v.get(f).is_some(), "missing {f} in {v}");
        }
        assert!(v["mod_macs_per_s"].as_f64().unwrap() > 0.0);
        // macs of conv8 at batch 2: 2 * 512 * 2 * 2 * 512 * 9.
        assert_eq!(v["macs"].as_u64().unwrap(), 2 * 512 * 4 * 512 * 9);
    }
    assert!(lines.iter().any(|v| v["kernel"] == "summary"));
    let out = goten(&[
        "bench", "kernels", "--json", "--reps", "1", "--filter", "prg",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kernel"], "prg");
    assert!(v["elems_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn op_bench_json_has_the_promised_fields_and_says_simulation() {
    let out = goten(&[
        "bench", "op", "--json", "--batch", "2", "--reps", "1", "--filter", "fc3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIMULATION"),
        "runs must say they are simulated"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&serde_json::Value> = lines.iter().filter(|v| v["op"] != "summary").collect();
    assert_eq!(ops.len(), 3);
    for v in ops {
        for f in [
            "op",
            "shape",
            "secure_secs",
            "device_products",
            "ref_f64_product_secs",
            "ref_f32_secs",
            "overhead",
        ] {
            assert!(v.get(f).is_some(), "missing {f} in {v}");
        }
        let want = v["secure_secs"].as_f64().unwrap()
            / (v["device_products"].as_f64().unwrap()
                * v["ref_f64_product_secs"].as_f64().unwrap());
        assert!((v["overhead"].as_f64().unwrap() - want).abs() < 1e-9 * want.max(1.0));
        assert!(v["s0"]["device_secs"].as_f64().unwrap() > 0.0);
    }
    let summary = lines
        .iter()
        .find(|v| v["op"] == "summary")
        .expect("summary line");
    assert_eq!(summary["parties"].as_array().unwrap().len(), 3);
}

#[test]
fn train_bench_reports_every_mode_with_a_time_split() {
    let out = goten(&[
        "bench", "train", "--model", "small", "--batch", "8", "--steps", "1", "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let modes: Vec<&str> = lines.iter().map(|v| v["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["plain", "enclave", "goten"]);
    for v in &lines {
        assert!(v["img_per_s"].as_f64().unwrap() > 0.0);
        for f in [
            "linear_secs_per_step",
            "nonlinear_secs_per_step",
            "quant_prg_secs_per_step",
            "transport_secs_per_step",
        ] {
            assert!(v[f].as_f64().is_some(), "missing {f} in {v}");
        }
    }
    assert!(
        lines[2]["quant_prg_secs_per_step"].as_f64().unwrap() > 0.0,
        "goten mode spends time on quantization and masks"
    );
    let out = goten(&[
        "bench",
        "train",
        "--modes",
        "plain,turbo",
        "--model",
        "small",
        "--steps",
        "1",
    ]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("unknown mode \"turbo\"")
    );
}
