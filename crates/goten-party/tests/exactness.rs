//! Exactness: the reconstructed integer result equals aQ (x) bQ from the naive i128 reference,
//! on random and worst-case inputs, for all six op kinds, and E0 and E1 agree bit for bit.

mod common;

use common::{quantized, run, values};
use goten_device::naive;
use goten_field::{BilinearOp, Conv2dParams};
use goten_party::Trusts;

type Case = (BilinearOp, Vec<usize>, Vec<usize>);

fn reference(op: &BilinearOp, sa: &[usize], a: &[i32], sb: &[usize], b: &[i32]) -> Vec<i64> {
    let w = |v: &[i32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    naive::exact(op, (sa, &w(a)), (sb, &w(b)))
        .unwrap()
        .into_iter()
        .map(|v| i64::try_from(v).unwrap())
        .collect()
}

fn check_cases(cases: &[Case], fill: &(dyn Fn(usize, u64) -> Vec<i32> + Sync)) {
    let inputs: Vec<(Vec<i32>, Vec<i32>)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, sa, sb))| {
            (
                fill(sa.iter().product(), 2 * i as u64),
                fill(sb.iter().product(), 2 * i as u64 + 1),
            )
        })
        .collect();
    let out = run(&Trusts::generate(), &|p| {
        let mut res = Vec::new();
        for (i, ((op, sa, sb), (a, b))) in cases.iter().zip(&inputs).enumerate() {
            res.push(p.linear_quantized(
                (i as u64, 0),
                op,
                (sa, &quantized(a.clone())),
                (sb, &quantized(b.clone())),
            )?);
        }
        Ok(res)
    })
    .unwrap();
    let (r0, r1) = out.results;
    assert_eq!(r0, r1, "E0 and E1 must obtain bit-identical results");
    for (((op, sa, sb), (a, b)), got) in cases.iter().zip(&inputs).zip(&r0) {
        let want = reference(op, sa, a, sb, b);
        assert_eq!(got, &want, "{op:?} {sa:?} {sb:?}");
    }
}

fn random_cases() -> Vec<Case> {
    let p = |s, pad| Conv2dParams::new(s, pad);
    vec![
        (BilinearOp::MatmulForward, vec![5, 37], vec![7, 37]),
        (BilinearOp::MatmulInputGrad, vec![6, 9], vec![9, 11]),
        (BilinearOp::MatmulWeightGrad, vec![64, 10], vec![64, 33]),
        (
            BilinearOp::Conv2dForward(p(1, 1)),
            vec![2, 8, 9, 9],
            vec![6, 8, 3, 3],
        ),
        (
            BilinearOp::Conv2dForward(p(2, 0)),
            vec![1, 3, 11, 10],
            vec![4, 3, 3, 3],
        ),
        (
            BilinearOp::Conv2dInputGrad {
                params: p(2, 1),
                input_hw: (9, 8),
            },
            vec![3, 5, 5, 4],
            vec![5, 4, 3, 3],
        ),
        (
            BilinearOp::Conv2dWeightGrad {
                params: p(1, 2),
                kernel_hw: (5, 5),
            },
            vec![4, 6, 8, 8],
            vec![4, 3, 8, 8],
        ),
    ]
}

#[test]
fn random_inputs_all_six_ops() {
    check_cases(&random_cases(), &|n, seed| values(n, seed, -128, 127));
}

/// The same op sequence over several iterations (as training steps and serving batches run):
/// from the second on, each op's masks and pads were expanded while the previous op's products
/// were computed, and every result is still exact. New inputs every iteration.
#[test]
fn prefetched_masks_give_exact_results() {
    let cases = random_cases();
    let iterations = 3u64;
    let input = |i: usize, t: u64, shape: &[usize], side: u64| {
        values(
            shape.iter().product(),
            100 * t + 2 * i as u64 + side,
            -128,
            127,
        )
    };
    let out = run(&Trusts::generate(), &|p| {
        let mut res = Vec::new();
        for t in 0..iterations {
            for (i, (op, sa, sb)) in cases.iter().enumerate() {
                let (a, b) = (input(i, t, sa, 0), input(i, t, sb, 1));
                res.push(p.linear_quantized(
                    (i as u64, t),
                    op,
                    (sa, &quantized(a)),
                    (sb, &quantized(b)),
                )?);
            }
        }
        Ok((res, p.enclave.prefetch_stats()))
    })
    .unwrap();
    let ((r0, s0), (r1, s1)) = out.results;
    assert_eq!(r0, r1, "E0 and E1 must obtain bit-identical results");
    let mut got = r0.iter();
    for t in 0..iterations {
        for (i, (op, sa, sb)) in cases.iter().enumerate() {
            let (a, b) = (input(i, t, sa, 0), input(i, t, sb, 1));
            let want = reference(op, sa, &a, sb, &b);
            assert_eq!(got.next().unwrap(), &want, "iteration {t}: {op:?}");
        }
    }
    // Every op after the first iteration's was guessed right (the last guess is never used).
    let ready = (iterations - 1) * cases.len() as u64 - 1;
    for s in [s0, s1] {
        assert_eq!((s.ready, s.dropped), (ready, 0), "{s:?}");
    }
}

#[test]
fn random_inputs_at_other_widths() {
    // 4-bit operands need no split; the full range of 8 bits does.
    check_cases(&random_cases(), &|n, seed| values(n, seed, -8, 7));
}

/// Every entry at the limit on reductions of about 2^19 terms: results reach 2^33, far beyond
/// the ring's 2^20 headroom, so only the split plan keeps them exact.
#[test]
fn worst_case_inputs_reduction_2_pow_19() {
    let l = 1usize << 19;
    let p1 = Conv2dParams::new(1, 1);
    let cases: Vec<Case> = vec![
        (BilinearOp::MatmulForward, vec![1, l], vec![2, l]),
        (BilinearOp::MatmulInputGrad, vec![1, l], vec![l, 1]),
        (BilinearOp::MatmulWeightGrad, vec![l, 1], vec![l, 2]),
        (
            BilinearOp::Conv2dForward(Conv2dParams::new(1, 0)),
            vec![1, l / 9, 3, 3],
            vec![1, l / 9, 3, 3],
        ),
        (
            BilinearOp::Conv2dInputGrad {
                params: p1,
                input_hw: (3, 3),
            },
            vec![1, l / 9, 3, 3],
            vec![l / 9, 1, 3, 3],
        ),
        (
            BilinearOp::Conv2dWeightGrad {
                params: p1,
                kernel_hw: (3, 3),
            },
            vec![l / 49, 1, 7, 7],
            vec![l / 49, 1, 7, 7],
        ),
    ];
    for (op, sa, sb) in &cases {
        assert!(
            op.reduction_len(sa, sb).unwrap() >= (l * 99) / 100,
            "{op:?} reduces over about 2^19 terms"
        );
    }
    check_cases(&cases, &|n, _| vec![-128; n]);
    // Mixed extremes with little cancellation.
    check_cases(&cases[..3], &|n, _| {
        (0..n)
            .map(|i| if i % 5 == 0 { 127 } else { -128 })
            .collect()
    });
}

#[test]
fn results_beyond_the_headroom_are_really_produced() {
    // Guard against a vacuous worst-case test: the largest exact result is 2^19 * 2^14.
    let l = 1usize << 19;
    let op = BilinearOp::MatmulForward;
    let out = run(&Trusts::generate(), &|p| {
        p.linear_quantized(
            (0, 0),
            &op,
            (&[1, l], &quantized(vec![-128; l])),
            (&[1, l], &quantized(vec![-128; l])),
        )
    })
    .unwrap();
    assert_eq!(out.results.0, vec![1i64 << 33]);
}

/// Each operand is quantized once per step: an input gradient handed the forward pass's
/// quantized weight computes with exactly those integers. The weight is not representable in
/// 8 bits, so each fresh quantization rounds it differently (per op's noise stream); the output
/// gradient holds small integers, which quantize exactly. Two input gradients that reuse the
/// forward's weight therefore agree bit for bit, two that quantize it afresh do not, all four
/// stay within quantization error of the float product, and E0 and E1 agree.
#[test]
fn a_reused_quantized_weight_is_the_forward_passs() {
    use goten_enclave::SecretTensor;
    use goten_enclave::nn::{LinearBackend, ProtocolBackend};
    use goten_party::PartyError;
    let (m, n, k) = (4, 5, 6);
    let x = SecretTensor::new(&[m, k], common::floats(m * k, 1, 1.0)).unwrap();
    let w = SecretTensor::new(&[n, k], common::floats(n * k, 2, 0.37)).unwrap();
    let dy_values: Vec<f32> = values(m * n, 3, -7, 7).iter().map(|&v| v as f32).collect();
    let dy = SecretTensor::new(&[m, n], dy_values.clone()).unwrap();
    let out = run(&Trusts::generate(), &|p| {
        let err = |e: goten_enclave::nn::NnError| PartyError::Storage(e.to_string());
        let mut be = ProtocolBackend::new(&p.enclave, &mut p.host, 0);
        be.next_step();
        let fwd = BilinearOp::MatmulForward;
        let (_, [_, pw]) = be
            .bilinear_reusing(3, &fwd, (&x, None), (&w, None))
            .map_err(err)?;
        let igrad = BilinearOp::MatmulInputGrad;
        let mut dx = Vec::new();
        for (id, reuse) in [(4, true), (7, true), (10, false), (13, false)] {
            let pw = if reuse { pw.as_ref() } else { None };
            let (c, _) = be
                .bilinear_reusing(id, &igrad, (&dy, None), (&w, pw))
                .map_err(err)?;
            dx.push(c.expose().to_vec());
        }
        Ok(dx)
    })
    .unwrap();
    let (r0, r1) = out.results;
    assert_eq!(r0, r1, "E0 and E1 must obtain bit-identical results");
    assert_eq!(r0[0], r0[1], "both reuse the forward's quantized weight");
    assert_ne!(
        r0[2], r0[3],
        "fresh quantizations round the weight differently"
    );
    // dx = dy W: within quantization error (weight step 2^-8 of its range, times |dy| sums).
    let wv = w.expose();
    for got in &r0 {
        for i in 0..m {
            for j in 0..k {
                let want: f32 = (0..n).map(|t| dy_values[i * n + t] * wv[t * k + j]).sum();
                let bound = (0..n).map(|t| dy_values[i * n + t].abs()).sum::<f32>() / 128.0;
                assert!(
                    (got[i * k + j] - want).abs() <= bound,
                    "{} vs {want}",
                    got[i * k + j]
                );
            }
        }
    }
}
