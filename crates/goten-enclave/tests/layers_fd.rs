//! Every float layer's backward pass against central finite differences of its forward pass
//! (loss = sum(y * r) for a fixed random r, so dL/dy = r), and a whole model through the
//! cross-entropy loss.

use goten_enclave::SecretTensor;
use goten_enclave::nn::init::normal;
use goten_enclave::nn::layers::{GradStack, Layer, Param, Pass};
use goten_enclave::nn::loss::cross_entropy;
use goten_enclave::nn::model::{Builder, ModelKind};
use goten_enclave::nn::{FloatBackend, LinearBackend};
use goten_field::Conv2dParams;

fn rand(shape: &[usize], seed: u64, std: f32) -> SecretTensor {
    let mut t = SecretTensor::zeros(shape);
    normal(seed, 0, t.expose_mut(), std);
    t
}

fn dot(a: &SecretTensor, b: &SecretTensor) -> f64 {
    a.expose()
        .iter()
        .zip(b.expose())
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn key() -> goten_field::SecretKey {
    goten_field::SecretKey::from_bytes([7; 32])
}

/// A training pass with a fixed dropout stream (the same mask on every call).
fn pass(k: &goten_field::SecretKey) -> Pass<'_> {
    Pass::with_noise(true, k, 3)
}

/// Backward of a single (non-structural) layer.
fn back(layer: &mut Layer, dy: SecretTensor, be: &mut dyn LinearBackend) -> Option<SecretTensor> {
    layer
        .backward(Some(dy), &mut GradStack::new(), be, 0, 0)
        .unwrap()
}

/// Checks d(sum(layer(x) * r))/dx and /dparams of a layer against finite differences.
fn check_layer(make: &dyn Fn() -> Layer, x: &SecretTensor, eps: f32, tol: f64) {
    let be = &mut FloatBackend::new(1) as &mut dyn LinearBackend;
    let k = key();
    let mut layer = make();
    let y = layer.forward(x.clone(), &mut pass(&k), be, 0).unwrap();
    let r = rand(y.shape(), 99, 1.0);
    let dx = back(&mut layer, r.clone(), be).expect("input gradient");
    let mut loss = |layer: &mut Layer, x: &SecretTensor| {
        dot(&layer.forward(x.clone(), &mut pass(&k), be, 0).unwrap(), &r)
    };
    let n = x.len();
    for i in (0..n).step_by((n / 17).max(1)) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.expose_mut()[i] += eps;
        xm.expose_mut()[i] -= eps;
        let fd = (loss(&mut make(), &xp) - loss(&mut make(), &xm)) / (2.0 * f64::from(eps));
        let an = f64::from(dx.expose()[i]);
        assert!(
            (fd - an).abs() <= tol * (1.0 + fd.abs()),
            "{} dx[{i}]: analytic {an} vs numeric {fd}",
            layer.name()
        );
    }
    // Parameter gradients.
    let grads: Vec<Vec<f32>> = layer
        .params_mut()
        .iter()
        .map(|p| p.grad.expose().to_vec())
        .collect();
    for (pi, g) in grads.iter().enumerate() {
        for j in (0..g.len()).step_by((g.len() / 11).max(1)) {
            let mut bump = |d: f32| {
                let mut l = make();
                l.params_mut()[pi].value.expose_mut()[j] += d;
                let y = l.forward(x.clone(), &mut pass(&k), be, 0).unwrap();
                dot(&y, &r)
            };
            let fd = (bump(eps) - bump(-eps)) / (2.0 * f64::from(eps));
            let an = f64::from(g[j]);
            assert!(
                (fd - an).abs() <= tol * (1.0 + fd.abs()),
                "{} param {pi}[{j}]: analytic {an} vs numeric {fd}",
                layer.name()
            );
        }
    }
}

#[test]
fn conv_stride_and_padding() {
    let x = rand(&[2, 3, 7, 6], 1, 1.0);
    for p in [
        Conv2dParams::new(1, 1),
        Conv2dParams::new(2, 0),
        Conv2dParams {
            stride: (2, 1),
            padding: (1, 2),
        },
    ] {
        let make = || Layer::Conv {
            w: Param::new(rand(&[4, 3, 3, 3], 2, 0.3)),
            b: Some(Param::new(rand(&[4], 13, 0.3))),
            params: p,
            input_grad: true,
            cache: None,
        };
        check_layer(&make, &x, 1e-2, 2e-2);
    }
}

#[test]
fn dense() {
    let x = rand(&[5, 12], 3, 1.0);
    let make = || Layer::Dense {
        w: Param::new(rand(&[7, 12], 4, 0.3)),
        b: Some(Param::new(rand(&[7], 14, 0.3))),
        input_grad: true,
        cache: None,
    };
    check_layer(&make, &x, 1e-2, 2e-2);
}

#[test]
fn relu_away_from_the_kink() {
    let mut x = rand(&[3, 40], 5, 1.0);
    x.expose_mut()
        .iter_mut()
        .for_each(|v| *v += v.signum() * 0.1);
    check_layer(&|| Layer::Relu { mask: None }, &x, 1e-2, 1e-3);
}

#[test]
fn maxpool_without_ties() {
    let x = rand(&[2, 3, 6, 7], 6, 1.0);
    check_layer(
        &|| Layer::MaxPool {
            k: 2,
            s: 2,
            p: 0,
            cache: None,
        },
        &x,
        1e-3,
        1e-2,
    );
    check_layer(
        &|| Layer::MaxPool {
            k: 3,
            s: 2,
            p: 0,
            cache: None,
        },
        &x,
        1e-3,
        1e-2,
    );
    check_layer(
        &|| Layer::MaxPool {
            k: 3,
            s: 2,
            p: 1,
            cache: None,
        },
        &x,
        1e-3,
        1e-2,
    );
}

#[test]
fn batchnorm_training_mode() {
    let mut x = rand(&[4, 3, 5, 5], 7, 2.0);
    x.expose_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v += (i % 3) as f32);
    let make = || {
        let mut gamma = rand(&[3], 8, 0.5);
        gamma.expose_mut().iter_mut().for_each(|v| *v += 1.0);
        Layer::BatchNorm {
            gamma: Param::new(gamma),
            beta: Param::new(rand(&[3], 9, 0.5)),
            running_mean: vec![0.0; 3],
            running_var: vec![1.0; 3],
            cache: None,
        }
    };
    check_layer(&make, &x, 1e-2, 3e-2);
}

#[test]
fn batchnorm_running_statistics_follow_pytorch() {
    // One training pass over a batch with known statistics: mean 2, unbiased variance.
    let vals: Vec<f32> = (0..8).map(|i| i as f32 - 1.5).collect(); // mean 2.0
    let x = SecretTensor::new(&[2, 1, 2, 2], vals.clone()).unwrap();
    let mut l = Layer::BatchNorm {
        gamma: Param::new(SecretTensor::new(&[1], vec![1.0]).unwrap()),
        beta: Param::new(SecretTensor::zeros(&[1])),
        running_mean: vec![0.0],
        running_var: vec![1.0],
        cache: None,
    };
    l.forward(x, &mut Pass::new(true), &mut FloatBackend::new(1), 0)
        .unwrap();
    let Layer::BatchNorm {
        running_mean,
        running_var,
        ..
    } = &l
    else {
        unreachable!()
    };
    let mean = 2.0f64;
    let unbiased = vals
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / 7.0;
    assert!((f64::from(running_mean[0]) - 0.1 * mean).abs() < 1e-6);
    assert!((f64::from(running_var[0]) - (0.9 + 0.1 * unbiased)).abs() < 1e-5);
}

#[test]
fn flatten_round_trips() {
    let x = rand(&[2, 3, 2, 2], 10, 1.0);
    check_layer(&|| Layer::Flatten { in_shape: None }, &x, 1e-2, 1e-3);
}

/// Which branch every ReLU and max-pool took in the last training forward pass: finite
/// differences are only meaningful where a perturbation does not cross a kink.
fn branches(m: &goten_enclave::nn::Model) -> Vec<usize> {
    let mut v = Vec::new();
    for l in m.layers() {
        match l {
            Layer::Relu { mask: Some(mk) } => v.extend(mk.iter().map(|&b| usize::from(b))),
            Layer::MaxPool {
                cache: Some((_, arg)),
                ..
            } => v.extend_from_slice(arg),
            _ => {}
        }
    }
    v
}

/// Checks a whole model's weight gradients (through the cross-entropy loss) against finite
/// differences, for the first parameter of each layer in `check`.
fn check_model(build: &dyn Fn() -> goten_enclave::nn::Model, x: &SecretTensor, check: &[usize]) {
    let labels: Vec<u8> = (0..x.shape()[0] as u8).map(|i| i % 5).collect();
    let be = &mut FloatBackend::new(1) as &mut dyn LinearBackend;
    let mut m = build();
    let logits = m.forward(x.clone(), true, be).unwrap();
    let base = branches(&m);
    let (_, _, d) = cross_entropy(&logits, &labels).unwrap();
    m.backward(d, be).unwrap();
    // Loss with one weight moved, or None when the move switches a ReLU or pooling branch.
    let loss_with = |li: usize, j: usize, delta: f32| -> Option<f64> {
        let mut m2 = build();
        m2.layers_mut()[li].params_mut()[0].value.expose_mut()[j] += delta;
        let logits = m2
            .forward(x.clone(), true, &mut FloatBackend::new(1))
            .unwrap();
        (branches(&m2) == base).then(|| f64::from(cross_entropy(&logits, &labels).unwrap().0))
    };
    let mut checked = 0;
    for &li in check {
        let g = m.layers_mut()[li].params_mut()[0].grad.expose().to_vec();
        for j in (0..g.len()).step_by((g.len() / 40).max(1)) {
            let (Some(lp), Some(lm)) = (loss_with(li, j, 1e-3), loss_with(li, j, -1e-3)) else {
                continue;
            };
            let fd = (lp - lm) / 2e-3;
            // f32 loss resolution near 1.6 is about 1.2e-7, i.e. 6e-5 in the difference quotient.
            assert!(
                (fd - f64::from(g[j])).abs() <= 1e-2 * fd.abs() + 3e-4,
                "layer {li} ({}) w[{j}]: {} vs {fd}",
                m.layers()[li].name(),
                g[j]
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10 * check.len(),
        "only {checked} weights were away from kinks"
    );
}

#[test]
fn whole_model_through_cross_entropy() {
    let build = || {
        Builder::new([3, 8, 8], 11)
            .conv(4)
            .bn()
            .relu()
            .pool()
            .flatten()
            .dense(5)
            .build(ModelKind::Small)
            .unwrap()
    };
    check_model(&build, &rand(&[3, 3, 8, 8], 12, 1.0), &[0, 5]);
}

/// A small ResNet: identity and projection shortcuts (the add and its backward in the
/// enclave), global average pooling, fc with bias and dropout.
#[test]
fn residual_model_through_cross_entropy() {
    let build = || {
        Builder::new([3, 8, 8], 17)
            .conv(4)
            .named("conv1")
            .bn()
            .named("bn1")
            .relu()
            .basic_block(4, 1, "layer1.0")
            .basic_block(6, 2, "layer2.0")
            .avgpool(2, 2)
            .flatten()
            .dropout(0.3)
            .dense(5)
            .bias()
            .named("fc")
            .build(ModelKind::Small)
            .unwrap()
    };
    let m = build();
    let names: Vec<&str> = m.layers().iter().map(|l| l.name()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "fork").count(),
        2,
        "{names:?}"
    );
    assert!(names.contains(&"swap"), "the second block projects");
    // Every linear layer: the stem, both convs of both blocks, the projection and the fc.
    let linear: Vec<usize> = (0..names.len())
        .filter(|&i| names[i] == "conv" || names[i] == "dense")
        .collect();
    assert_eq!(linear.len(), 7);
    check_model(&build, &rand(&[4, 3, 8, 8], 18, 1.0), &linear);
    // The bias gradient of the fc layer too.
    let fc = *linear.last().unwrap();
    let be = &mut FloatBackend::new(1) as &mut dyn LinearBackend;
    let x = rand(&[4, 3, 8, 8], 18, 1.0);
    let mut m = build();
    let logits = m.forward(x.clone(), true, be).unwrap();
    let (_, _, d) = cross_entropy(&logits, &[0, 1, 2, 3]).unwrap();
    let want: Vec<f32> = (0..5)
        .map(|o| (0..4).map(|i| d.expose()[i * 5 + o]).sum())
        .collect();
    m.backward(d, be).unwrap();
    let got = m.layers_mut()[fc].params_mut()[1].grad.expose().to_vec();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn pooling_and_dropout_layers() {
    let x = rand(&[2, 3, 6, 4], 19, 1.0);
    check_layer(
        &|| Layer::AvgPool {
            k: 2,
            s: 2,
            in_shape: None,
        },
        &x,
        1e-2,
        1e-3,
    );
    check_layer(
        &|| Layer::AvgPool {
            k: 3,
            s: 1,
            in_shape: None,
        },
        &x,
        1e-2,
        1e-3,
    );
    check_layer(&|| Layer::GlobalAvgPool { in_shape: None }, &x, 1e-2, 1e-3);
    check_layer(&|| Layer::Dropout { p: 0.4, mask: None }, &x, 1e-2, 1e-3);
    // Evaluation: dropout is the identity.
    let mut d = Layer::Dropout { p: 0.4, mask: None };
    let be = &mut FloatBackend::new(1) as &mut dyn LinearBackend;
    let y = d.forward(x.clone(), &mut Pass::new(false), be, 0).unwrap();
    assert_eq!(y.expose(), x.expose());
    // Training without a stream is refused, not silently deterministic.
    let err = d.forward(x, &mut Pass::new(true), be, 0).unwrap_err();
    assert!(err.to_string().contains("stream"), "{err}");
}

/// The parallel layers give bit-identical results on any number of threads (E0 and E1 run on
/// different machines and must stay equal): forward output, input gradient and parameter
/// gradients of BN, max-pool and ReLU under pools of 1 and 3 threads.
#[test]
fn parallel_layers_do_not_depend_on_the_thread_count() {
    let x = rand(&[5, 7, 6, 6], 21, 1.5);
    let dy_bn = rand(&[5, 7, 6, 6], 22, 1.0);
    let dy_pool = rand(&[5, 7, 3, 3], 23, 1.0);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut be = FloatBackend::new(threads);
            let mut out: Vec<Vec<u32>> = Vec::new();
            let bits = |t: &SecretTensor| t.expose().iter().map(|v| v.to_bits()).collect();
            for (mut layer, dy) in [
                (
                    Layer::BatchNorm {
                        gamma: Param::new(rand(&[7], 24, 1.0)),
                        beta: Param::new(rand(&[7], 25, 1.0)),
                        running_mean: vec![0.0; 7],
                        running_var: vec![1.0; 7],
                        cache: None,
                    },
                    &dy_bn,
                ),
                (
                    Layer::MaxPool {
                        k: 2,
                        s: 2,
                        p: 0,
                        cache: None,
                    },
                    &dy_pool,
                ),
                (Layer::Relu { mask: None }, &dy_bn),
            ] {
                let y = layer
                    .forward(x.clone(), &mut Pass::new(true), &mut be, 0)
                    .unwrap();
                out.push(bits(&y));
                let dx = back(&mut layer, dy.clone(), &mut be).unwrap();
                out.push(bits(&dx));
                for p in layer.params_mut() {
                    out.push(bits(&p.grad));
                }
                if let Layer::BatchNorm {
                    running_mean,
                    running_var,
                    ..
                } = &layer
                {
                    out.push(running_mean.iter().map(|v| v.to_bits()).collect());
                    out.push(running_var.iter().map(|v| v.to_bits()).collect());
                }
            }
            out
        })
    };
    assert!(run(1) == run(3), "results depend on the thread count");
}
