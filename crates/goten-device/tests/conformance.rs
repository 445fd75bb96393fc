//! Conformance suite of the device seam: every backend must agree bit for bit with the naive
//! i128 reference, on random shapes and on worst-case inputs. `device_suite!` instantiates the
//! whole suite for one backend constructor; a future backend adds one line.

use goten_device::{CpuDevice, Device, naive};
use goten_field::{BilinearOp, Conv2dParams, Ring, RingTensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Residues from a simple deterministic generator (the suite must not depend on the PRG it
/// also tests elsewhere).
fn random_tensor(ring: Ring, shape: &[usize], seed: u64) -> RingTensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ring.reduce_u32((s >> 11) as u32)
        })
        .collect();
    RingTensor::from_residues(ring, shape, data).unwrap()
}

fn filled(ring: Ring, shape: &[usize], f: impl Fn(usize) -> i32) -> RingTensor {
    let n: usize = shape.iter().product();
    RingTensor::from_residues(ring, shape, (0..n).map(f).collect()).unwrap()
}

/// Operand shapes `(a, b)` of `op` for the given dims.
#[derive(Debug, Clone)]
struct Case {
    op: BilinearOp,
    a: Vec<usize>,
    b: Vec<usize>,
}

fn matmul_case(kind: u8, m: usize, n: usize, k: usize) -> Case {
    match kind % 3 {
        0 => Case {
            op: BilinearOp::MatmulForward,
            a: vec![m, k],
            b: vec![n, k],
        },
        1 => Case {
            op: BilinearOp::MatmulInputGrad,
            a: vec![m, n],
            b: vec![n, k],
        },
        _ => Case {
            op: BilinearOp::MatmulWeightGrad,
            a: vec![m, n],
            b: vec![m, k],
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    kind: u8,
    n: usize,
    c: usize,
    o: usize,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    params: Conv2dParams,
) -> Option<Case> {
    let (ho, wo) = params.output_hw((h, w), (kh, kw)).ok()?;
    Some(match kind % 3 {
        0 => Case {
            op: BilinearOp::Conv2dForward(params),
            a: vec![n, c, h, w],
            b: vec![o, c, kh, kw],
        },
        1 => Case {
            op: BilinearOp::Conv2dInputGrad {
                params,
                input_hw: (h, w),
            },
            a: vec![n, o, ho, wo],
            b: vec![o, c, kh, kw],
        },
        _ => Case {
            op: BilinearOp::Conv2dWeightGrad {
                params,
                kernel_hw: (kh, kw),
            },
            a: vec![n, o, ho, wo],
            b: vec![n, c, h, w],
        },
    })
}

fn check(dev: &dyn Device, case: &Case, a: &RingTensor, b: &RingTensor) {
    let got = dev.bilinear(&case.op, a, b).unwrap();
    let want = naive::bilinear(&case.op, a, b).unwrap();
    assert_eq!(got.shape(), want.shape(), "{case:?}");
    if got.data() != want.data() {
        let i = got
            .data()
            .iter()
            .zip(want.data())
            .position(|(x, y)| x != y)
            .unwrap();
        panic!(
            "{} on {case:?} differs at {i}: got {} want {}",
            dev.name(),
            got.data()[i],
            want.data()[i]
        );
    }
}

fn ring_strategy() -> impl Strategy<Value = Ring> {
    prop::sample::select(vec![2u32, 8, 13, 21, 22, 24, 26]).prop_map(|b| Ring::new(b).unwrap())
}

fn random_matmul(dev: &dyn Device) {
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    let strat = (
        any::<u8>(),
        1usize..40,
        1usize..40,
        1usize..300,
        ring_strategy(),
        any::<u64>(),
    );
    runner
        .run(&strat, |(kind, m, n, k, ring, seed)| {
            let case = matmul_case(kind, m, n, k);
            let a = random_tensor(ring, &case.a, seed);
            let b = random_tensor(ring, &case.b, seed ^ 1);
            check(dev, &case, &a, &b);
            Ok(())
        })
        .unwrap();
}

fn random_conv(dev: &dyn Device) {
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let dims = (
        1usize..4,
        1usize..6,
        1usize..7,
        1usize..12,
        1usize..12,
        1usize..5,
        1usize..5,
    );
    let strat = (
        any::<u8>(),
        dims,
        (1usize..3, 1usize..3),
        0usize..3,
        ring_strategy(),
        any::<u64>(),
    );
    runner
        .run(
            &strat,
            |(kind, (n, c, o, h, w, kh, kw), stride, pad, ring, seed)| {
                let params = Conv2dParams {
                    stride,
                    padding: (pad.min(kh - 1), pad.min(kw - 1)),
                };
                let Some(case) = conv_case(kind, n, c, o, (h, w), (kh, kw), params) else {
                    return Ok(()); // kernel larger than the padded input: not a valid layer
                };
                let a = random_tensor(ring, &case.a, seed);
                let b = random_tensor(ring, &case.b, seed ^ 1);
                check(dev, &case, &a, &b);
                Ok(())
            },
        )
        .unwrap();
}

/// Cases whose reductions cross the f64 chunk boundary (8191 terms at 21 bits) and 2^17.
fn long_cases() -> Vec<Case> {
    let p1 = Conv2dParams::new(1, 1);
    let p2 = Conv2dParams::new(2, 2);
    vec![
        matmul_case(0, 2, 3, 8193),
        matmul_case(0, 1, 2, (1 << 17) + 5),
        matmul_case(1, 3, 9000, 2),
        matmul_case(2, (1 << 17) + 3, 2, 2),
        conv_case(0, 1, 1000, 2, (3, 3), (3, 3), Conv2dParams::new(1, 0)).unwrap(),
        conv_case(1, 1, 2, 1000, (5, 5), (3, 3), p1).unwrap(),
        conv_case(2, 2, 1, 2, (260, 260), (3, 3), p1).unwrap(),
        conv_case(2, 1, 1, 1, (1024, 300), (1, 1), Conv2dParams::new(1, 0)).unwrap(),
        conv_case(2, 3, 2, 2, (101, 99), (5, 5), p2).unwrap(),
    ]
}

fn worst_case(dev: &dyn Device) {
    for bits in [21u32, 24, 26] {
        let ring = Ring::new(bits).unwrap();
        let (lo, hi) = (ring.min_centered(), ring.max_centered());
        for case in long_cases() {
            // All at the most negative residue: every product is +2^(2k-2), the largest
            // magnitude, so every chunk sits exactly at its exactness limit.
            let a = filled(ring, &case.a, |_| lo);
            let b = filled(ring, &case.b, |_| lo);
            check(dev, &case, &a, &b);
            // Extremes of both signs, in a pattern that does not cancel in a simple way.
            let a = filled(ring, &case.a, |i| if i % 3 == 0 { hi } else { lo });
            let b = filled(ring, &case.b, |i| if i % 7 < 4 { lo } else { hi });
            check(dev, &case, &a, &b);
        }
    }
    // And random residues on the same long reductions.
    for (i, case) in long_cases().iter().enumerate() {
        let ring = Ring::DEFAULT;
        check(
            dev,
            case,
            &random_tensor(ring, &case.a, 7 + i as u64),
            &random_tensor(ring, &case.b, 99 + i as u64),
        );
    }
}

fn errors_not_panics(dev: &dyn Device) {
    let r = Ring::DEFAULT;
    let a = RingTensor::zeros(r, &[2, 3]).unwrap();
    let b = RingTensor::zeros(r, &[4, 5]).unwrap();
    let e = dev
        .bilinear(&BilinearOp::MatmulForward, &a, &b)
        .unwrap_err();
    assert!(e.to_string().contains("matmul_fwd"), "{e}");
    let other = RingTensor::zeros(Ring::new(20).unwrap(), &[4, 3]).unwrap();
    assert!(
        dev.bilinear(&BilinearOp::MatmulForward, &a, &other)
            .unwrap_err()
            .to_string()
            .contains("different rings")
    );
    let x = RingTensor::zeros(r, &[1, 3, 8, 8]).unwrap();
    let w = RingTensor::zeros(r, &[4, 2, 3, 3]).unwrap();
    assert!(
        dev.bilinear(&BilinearOp::Conv2dForward(Conv2dParams::new(1, 1)), &x, &w)
            .is_err()
    );
    assert!(dev.combine(&BilinearOp::MatmulForward, &[], None).is_err());
}

fn empty_dimensions_give_empty_sums(dev: &dyn Device) {
    let r = Ring::DEFAULT;
    let p = Conv2dParams::new(1, 1);
    let cases = [
        matmul_case(0, 0, 3, 4),
        matmul_case(0, 2, 3, 0),
        matmul_case(1, 2, 0, 4),
        matmul_case(2, 0, 3, 4),
        conv_case(0, 0, 2, 3, (4, 4), (3, 3), p).unwrap(),
        conv_case(0, 2, 0, 3, (4, 4), (3, 3), p).unwrap(),
        conv_case(1, 2, 2, 0, (4, 4), (3, 3), p).unwrap(),
        conv_case(2, 0, 2, 3, (4, 4), (3, 3), p).unwrap(),
    ];
    for case in cases {
        let (a, b) = (random_tensor(r, &case.a, 1), random_tensor(r, &case.b, 2));
        check(dev, &case, &a, &b);
    }
}

fn combine_is_sum_minus_pad(dev: &dyn Device) {
    // Every op kind, because a backend may fuse the products along each op's reduction axes.
    let r = Ring::DEFAULT;
    let p = Conv2dParams {
        stride: (2, 1),
        padding: (1, 0),
    };
    let cases = [
        matmul_case(0, 5, 4, 7),
        matmul_case(1, 5, 4, 7),
        matmul_case(2, 5, 4, 7),
        conv_case(0, 2, 3, 4, (7, 6), (3, 3), p).unwrap(),
        conv_case(1, 2, 3, 4, (7, 6), (3, 3), p).unwrap(),
        conv_case(2, 2, 3, 4, (7, 6), (3, 3), p).unwrap(),
    ];
    for (i, case) in cases.iter().enumerate() {
        let s = 10 * i as u64;
        let (a1, b1) = (
            random_tensor(r, &case.a, s),
            random_tensor(r, &case.b, s + 1),
        );
        let (a2, b2) = (
            random_tensor(r, &case.a, s + 2),
            random_tensor(r, &case.b, s + 3),
        );
        let out = case.op.output_shape(&case.a, &case.b).unwrap();
        let pad = random_tensor(r, &out, s + 4);
        let got = dev
            .combine(&case.op, &[(&a1, &b1), (&a2, &b2)], Some(&pad))
            .unwrap();
        let want = naive::bilinear(&case.op, &a1, &b1)
            .unwrap()
            .add(&naive::bilinear(&case.op, &a2, &b2).unwrap())
            .unwrap()
            .sub(&pad)
            .unwrap();
        assert_eq!(got, want, "{case:?}");
        let one = dev.combine(&case.op, &[(&a1, &b1)], None).unwrap();
        assert_eq!(one, naive::bilinear(&case.op, &a1, &b1).unwrap());
    }
    // Three combined products over several im2col groups (one 17 x 17 image per group,
    // padded), and over a stacked reduction longer than one exact f64 chunk, at the extreme
    // residues.
    let same = Conv2dParams {
        stride: (1, 1),
        padding: (1, 1),
    };
    for bits in [21u32, 26] {
        let ring = Ring::new(bits).unwrap();
        let (lo, hi) = (ring.min_centered(), ring.max_centered());
        for case in [
            conv_case(0, 3, 2, 3, (17, 17), (3, 3), same).unwrap(),
            matmul_case(0, 3, 2, 5000),
            conv_case(0, 1, 400, 2, (4, 4), (3, 3), same).unwrap(),
        ] {
            let terms = [
                (filled(ring, &case.a, |_| lo), filled(ring, &case.b, |_| lo)),
                (
                    filled(ring, &case.a, |i| if i % 3 == 0 { hi } else { lo }),
                    filled(ring, &case.b, |i| if i % 7 < 4 { lo } else { hi }),
                ),
                (
                    random_tensor(ring, &case.a, 5),
                    random_tensor(ring, &case.b, 6),
                ),
            ];
            let refs: Vec<_> = terms.iter().map(|(a, b)| (a, b)).collect();
            let got = dev.combine(&case.op, &refs, None).unwrap();
            let mut want = naive::bilinear(&case.op, &terms[0].0, &terms[0].1).unwrap();
            for (a, b) in &terms[1..] {
                want = want.add(&naive::bilinear(&case.op, a, b).unwrap()).unwrap();
            }
            assert_eq!(got, want, "{bits} bits, {case:?}");
        }
    }
    // Products of different output shapes cannot be combined.
    let c = &cases[0];
    let (a, b) = (random_tensor(r, &c.a, 1), random_tensor(r, &c.b, 2));
    let (a3, b3) = (random_tensor(r, &[6, 7], 3), random_tensor(r, &[4, 7], 4));
    assert!(dev.combine(&c.op, &[(&a, &b), (&a3, &b3)], None).is_err());
}

/// Convolutions whose batch spans several im2col groups, with zero padding, unit and larger
/// strides: a later group must not see what an earlier one left in a reused buffer. On the
/// CPU, planes of 256 or more output positions put one image in each group; planes of 128 to
/// 255 put two, so five images end in a group of one, whose buffer is laid out differently
/// from the previous group's.
fn groups_reuse_buffers(dev: &dyn Device) {
    let ring = Ring::new(21).unwrap();
    for (kind, (h, w), k, stride, pad) in [
        (0u8, (17, 17), 3, 1, 1),
        (0, (12, 12), 3, 1, 1),
        (0, (15, 11), 5, 1, 2),
        (0, (33, 31), 3, 2, 1),
        (0, (23, 21), 3, 2, 1),
        (0, (20, 20), 3, 1, 0),
        (1, (12, 12), 3, 1, 1),
        (2, (17, 17), 3, 1, 1),
        (2, (12, 12), 3, 1, 1),
        (2, (23, 21), 3, 2, 1),
    ] {
        let params = Conv2dParams {
            stride: (stride, stride),
            padding: (pad, pad),
        };
        let case = conv_case(kind, 5, 3, 4, (h, w), (k, k), params).unwrap();
        let a = random_tensor(ring, &case.a, 7 + u64::from(kind));
        let b = random_tensor(ring, &case.b, 11 + h as u64);
        check(dev, &case, &a, &b);
    }
}

/// Ops of falling, rising and empty sizes one after another on the same device: the CPU
/// kernels keep their temporaries (im2col columns, the f64 accumulator) per thread between
/// calls, so every op starts from what the previous one left; an empty reduction in between
/// must still give zeros.
fn buffers_reused_across_calls(dev: &dyn Device) {
    let ring = Ring::new(21).unwrap();
    let p = Conv2dParams::new(1, 1);
    let cases = [
        conv_case(0, 3, 8, 6, (16, 16), (3, 3), p).unwrap(),
        matmul_case(0, 2, 3, 0),
        conv_case(0, 2, 2, 3, (5, 5), (3, 3), p).unwrap(),
        conv_case(2, 3, 8, 6, (16, 16), (3, 3), p).unwrap(),
        matmul_case(1, 7, 0, 5),
        conv_case(1, 3, 8, 6, (16, 16), (3, 3), p).unwrap(),
        matmul_case(0, 40, 30, 200),
        matmul_case(2, 0, 3, 4),
        conv_case(2, 1, 2, 3, (6, 6), (3, 3), p).unwrap(),
        matmul_case(0, 3, 2, 5),
    ];
    for (i, case) in cases.iter().enumerate() {
        let a = random_tensor(ring, &case.a, 100 + i as u64);
        let b = random_tensor(ring, &case.b, 200 + i as u64);
        check(dev, case, &a, &b);
    }
}

macro_rules! device_suite {
    ($name:ident, $ctor:expr) => {
        mod $name {
            use super::*;
            /// `None`: the backend is unavailable here and the test is skipped (said on stderr).
            fn dev() -> Option<Box<dyn Device>> {
                $ctor
            }
            #[test]
            fn random_matmul_matches_naive() {
                let Some(d) = dev() else { return };
                random_matmul(&*d);
            }
            #[test]
            fn random_conv_matches_naive() {
                let Some(d) = dev() else { return };
                random_conv(&*d);
            }
            #[test]
            fn worst_case_long_reductions_are_exact() {
                let Some(d) = dev() else { return };
                worst_case(&*d);
            }
            #[test]
            fn bad_shapes_are_errors() {
                let Some(d) = dev() else { return };
                errors_not_panics(&*d);
            }
            #[test]
            fn empty_dimensions_are_fine() {
                let Some(d) = dev() else { return };
                empty_dimensions_give_empty_sums(&*d);
            }
            #[test]
            fn many_image_groups_with_padding() {
                let Some(d) = dev() else { return };
                groups_reuse_buffers(&*d);
            }
            #[test]
            fn buffers_kept_between_calls_are_overwritten() {
                let Some(d) = dev() else { return };
                buffers_reused_across_calls(&*d);
            }
            #[test]
            fn combine_matches_reference() {
                let Some(d) = dev() else { return };
                combine_is_sum_minus_pad(&*d);
            }
        }
    };
}

device_suite!(cpu_one_thread, Some(Box::new(CpuDevice::new(1).unwrap())));
device_suite!(cpu_two_threads, Some(Box::new(CpuDevice::new(2).unwrap())));

/// The CUDA backend where a GPU exists; elsewhere each test says "skipped: ..." on stderr, or
/// fails when `GOTEN_REQUIRE_CUDA=1` (the GPU check script sets it, so a GPU run cannot skip).
#[cfg(feature = "cuda")]
fn cuda_device() -> Option<Box<dyn Device>> {
    match goten_device::cuda::CudaDevice::new(0, 0) {
        Ok(d) => Some(Box::new(d)),
        Err(e) if std::env::var_os("GOTEN_REQUIRE_CUDA").is_some() => {
            panic!("GOTEN_REQUIRE_CUDA is set but the CUDA backend is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

#[cfg(feature = "cuda")]
device_suite!(cuda, cuda_device());

/// Devices sharing one pool (a single-machine run's three parties) each return their own
/// exact product when they compute at the same time from three threads, as S0, S1 and S2 do.
#[test]
fn devices_sharing_one_pool_compute_concurrently_and_exactly() {
    let devices = CpuDevice::sharing::<3>(2).unwrap();
    assert!(devices.iter().all(|d| d.threads() == 2));
    let ring = Ring::default();
    let params = Conv2dParams {
        stride: (1, 1),
        padding: (1, 1),
    };
    std::thread::scope(|s| {
        for (p, d) in devices.iter().enumerate() {
            s.spawn(move || {
                for round in 0..4u64 {
                    // Different shapes per party, so a mixed-up result cannot pass.
                    let case =
                        conv_case(round as u8, 3 + p, 4, 5 + p, (9, 8), (3, 3), params).unwrap();
                    let a = random_tensor(ring, &case.a, 100 * p as u64 + round);
                    let b = random_tensor(ring, &case.b, 200 * p as u64 + round);
                    check(d, &case, &a, &b);
                }
            });
        }
    });
}
