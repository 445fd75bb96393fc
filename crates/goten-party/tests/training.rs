//! One training step in goten mode against plain mode from identical weights and batch.
//!
//! What is bounded: each outsourced product is within the per-op quantization bound
//! (`fidelity.rs`, DESIGN.md section 8). Through a whole backward pass the weight gradients
//! also differ because forward quantization flips some ReLU signs and max-pool choices, which
//! reroutes gradient; that part has no useful closed-form bound, so this test pins measured
//! behaviour: at 8 bits the last layer's gradient (one quantized product away from the loss)
//! is within 20 % and every layer within 80 % (a wrong protocol gives errors of 100 % or more);
//! and the errors are quantization errors: at 12 bits every layer's error at least halves and the
//! last layer's falls below 2 %. Measured at this fixed seed: 8 bits 0.11-0.45, last layer
//! 0.11; 12 bits 0.035-0.10, last layer 0.0065.

mod common;

use common::{chi2_top6, devices, mesh, values};
use goten_enclave::SecretTensor;
use goten_enclave::nn::init::normal;
use goten_enclave::nn::layers::Layer;
use goten_enclave::nn::loss::cross_entropy;
use goten_enclave::nn::{FloatBackend, LinearBackend, Model, ModelKind, ProtocolBackend};
use goten_enclave::quant::QuantConfig;
use goten_field::Ring;
use goten_party::{ClusterConfig, Trusts, run_local};

fn grads(
    m: &mut Model,
    be: &mut dyn LinearBackend,
    x: &SecretTensor,
    labels: &[u8],
) -> Vec<Vec<f32>> {
    let logits = m.forward(x.clone(), true, be).unwrap();
    let (_, _, d) = cross_entropy(&logits, labels).unwrap();
    m.backward(d, be).unwrap();
    m.layers_mut()
        .iter_mut()
        .filter(|l| {
            matches!(
                l,
                Layer::Conv { .. } | Layer::Dense { .. } | Layer::BatchNorm { .. }
            )
        })
        .flat_map(|l| {
            l.params_mut()
                .into_iter()
                .map(|p| p.grad.expose().to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Relative L2 error of goten-mode gradients against plain, per parameter, at `bits`.
fn errors(bits: u32, x: &SecretTensor, labels: &[u8], plain: &[Vec<f32>]) -> Vec<f64> {
    errors_of(
        &|| ModelKind::Small.build(7, 10).unwrap(),
        bits,
        x,
        labels,
        plain,
    )
}

/// [`errors`] for the model `build` makes.
fn errors_of(
    build: &(dyn Fn() -> Model + Sync),
    bits: u32,
    x: &SecretTensor,
    labels: &[u8],
    plain: &[Vec<f32>],
) -> Vec<f64> {
    let mut cfg = ClusterConfig::default();
    cfg.enclave.quant = QuantConfig {
        bits,
        ..QuantConfig::default()
    };
    cfg.enclave.ring = Ring::new(if bits > 8 { 26 } else { 21 }).unwrap();
    let out = run_local(
        &cfg,
        &Trusts::danger_deterministic(1),
        devices(),
        mesh(),
        &|p| {
            let mut m = build();
            let mut be = ProtocolBackend::new(&p.enclave, &mut p.host, 0);
            Ok(grads(&mut m, &mut be, x, labels))
        },
    )
    .unwrap();
    assert_eq!(
        out.results.0, out.results.1,
        "E0 and E1 compute identical gradients"
    );
    let secure = out.results.0;
    assert_eq!(secure.len(), plain.len());
    let errs: Vec<f64> = secure
        .iter()
        .zip(plain)
        .map(|(g, p)| {
            let diff: f64 = g
                .iter()
                .zip(p)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = p.iter().map(|&b| f64::from(b).powi(2)).sum::<f64>().sqrt();
            diff / norm.max(1e-12)
        })
        .collect();
    eprintln!("{bits} bits: relative gradient errors per parameter: {errs:.4?}");
    errs
}

#[test]
fn goten_gradients_match_plain_up_to_quantization() {
    let mut x = SecretTensor::zeros(&[8, 3, 32, 32]);
    normal(5, 0, x.expose_mut(), 1.0);
    let labels: Vec<u8> = (0..8).map(|i| (i * 3 % 10) as u8).collect();
    let plain = grads(
        &mut ModelKind::Small.build(7, 10).unwrap(),
        &mut FloatBackend::new(1),
        &x,
        &labels,
    );
    let e8 = errors(8, &x, &labels, &plain);
    let e12 = errors(12, &x, &labels, &plain);
    let last = e8.len() - 1;
    assert!(e8[last] < 0.2, "last layer at 8 bits: {}", e8[last]);
    assert!(e8.iter().all(|&e| e < 0.8), "8 bits: {e8:?}");
    assert!(e12[last] < 0.02, "last layer at 12 bits: {}", e12[last]);
    for (i, (a, b)) in e8.iter().zip(&e12).enumerate() {
        assert!(
            *b < a / 2.0,
            "parameter {i}: error {a} at 8 bits, {b} at 12 bits"
        );
    }
}

/// The same for a residual network (identity and projection shortcuts, global average pooling,
/// fc with bias): every conv and linear product of the blocks and shortcuts goes through the
/// protocol unchanged; the adds, pooling and bias stay in the enclave.
#[test]
fn residual_network_gradients_match_plain_up_to_quantization() {
    let build = || {
        goten_enclave::nn::Builder::new([3, 16, 16], 9)
            .conv(8)
            .named("conv1")
            .bn()
            .named("bn1")
            .relu()
            .basic_block(8, 1, "layer1.0")
            .basic_block(16, 2, "layer2.0")
            .global_avgpool()
            .dense(10)
            .bias()
            .named("fc")
            .build(ModelKind::Resnet20)
            .unwrap()
    };
    let mut x = SecretTensor::zeros(&[8, 3, 16, 16]);
    normal(8, 0, x.expose_mut(), 1.0);
    let labels: Vec<u8> = (0..8).map(|i| (i * 7 % 10) as u8).collect();
    let plain = grads(&mut build(), &mut FloatBackend::new(1), &x, &labels);
    // conv1, bn1 (2), two blocks of 2 convs + 2 BNs (6 each), the projection (3), fc (2).
    assert_eq!(plain.len(), 1 + 2 + 12 + 3 + 2);
    let e8 = errors_of(&build, 8, &x, &labels, &plain);
    let fc_weight = e8.len() - 2;
    assert!(e8[fc_weight] < 0.2, "fc at 8 bits: {}", e8[fc_weight]);
    assert!(e8.iter().all(|&e| e < 0.8), "8 bits: {e8:?}");
}

/// The uniformity threshold of the privacy audit below: chi2 with 63 degrees of freedom at its
/// 1e-7 tail.
const UNIFORM_CHI2: f64 = 140.0;

/// The audit below can fail: quantized plaintext (an activation at 8 bits) scores far above the
/// threshold, a one-time-padded copy of it far below.
#[test]
fn the_uniformity_score_rejects_quantized_plaintext() {
    let ring = Ring::DEFAULT;
    let plain: Vec<i32> = values(8192, 3, -128, 127)
        .into_iter()
        .map(|v| ring.reduce_i64(v as i64))
        .collect();
    let plaintext = chi2_top6(ring, &plain);
    assert!(
        plaintext > 100.0 * UNIFORM_CHI2,
        "plaintext scored {plaintext:.1}"
    );
    let pad = values(8192, 4, 0, (1 << ring.bits()) - 1);
    let masked: Vec<i32> = plain
        .iter()
        .zip(&pad)
        .map(|(&p, &m)| ring.reduce_i64(p as i64 + m as i64))
        .collect();
    let padded = chi2_top6(ring, &masked);
    assert!(padded < UNIFORM_CHI2, "a padded buffer scored {padded:.1}");
}

/// A whole training step in goten mode with every device input and received product recorded:
/// every recorded buffer of useful size must look uniform (a plaintext activation, gradient or
/// weight tensor, all small integers after quantization, would fail at once).
#[test]
fn a_training_step_shows_hosts_only_uniform_buffers() {
    use goten_device::Device;
    use goten_enclave::Role;
    use goten_enclave::nn::optim::Sgd;
    use goten_party::Transport;
    use goten_party::record::{Recorder, RecordingDevice, RecordingTransport};

    let mut x = SecretTensor::zeros(&[4, 3, 32, 32]);
    normal(6, 0, x.expose_mut(), 1.0);
    let labels = [1u8, 2, 3, 4];
    let rec = Recorder::default();
    let [d0, d1, d2] = devices();
    let devs: [Box<dyn Device>; 3] = [
        Box::new(RecordingDevice::new(d0, Role::S0, rec.clone())),
        Box::new(RecordingDevice::new(d1, Role::S1, rec.clone())),
        Box::new(RecordingDevice::new(d2, Role::S2, rec.clone())),
    ];
    let nets =
        mesh().map(|t| Box::new(RecordingTransport::new(t, rec.clone())) as Box<dyn Transport>);
    run_local(
        &ClusterConfig::default(),
        &Trusts::danger_deterministic(2),
        devs,
        nets,
        &|p| {
            let mut m = ModelKind::Small.build(3, 10).unwrap();
            let mut be = ProtocolBackend::new(&p.enclave, &mut p.host, 0);
            Ok(
                m.train_step(&mut be, x.clone(), &labels, &Sgd::default(), 0.02)
                    .unwrap()
                    .loss,
            )
        },
    )
    .unwrap();
    let records = rec.records();
    let mut checked = 0;
    for r in &records {
        if r.tensor.len() < 4096 {
            continue;
        }
        let chi2 = chi2_top6(r.tensor.ring(), r.tensor.data());
        // 63 degrees of freedom. The seed is fixed, but the session keys also bind the
        // simulated measurement, the hash of this test binary, so every build draws fresh masks
        // over about 190 records: at the 99.99th percentile (~112) about one build in fifty
        // failed (one did, at 120.2). The 1e-7 tail (~140) makes that one in fifty thousand; a
        // plaintext tensor (small integers after quantization, in the top and bottom buckets)
        // scores in the thousands (`the_uniformity_score_rejects_quantized_plaintext`). The
        // record count tells a failure whether the run took another path (a recomputation adds
        // records).
        assert!(
            chi2 < UNIFORM_CHI2,
            "{} received a non-uniform {} {:?}: chi2 {chi2:.1} (record {checked} of {})",
            r.party,
            r.source,
            r.tensor.shape(),
            records.len()
        );
        checked += 1;
    }
    assert!(
        checked > 50,
        "only {checked} buffers were large enough to test"
    );
}
