//! Fidelity: dequantized results against the float product of the unquantized operands, within
//! the bound quantization implies. For each output entry (DESIGN.md section 6):
//!
//!   |f(a, b) - deq(f(aQ, bQ))| <= u_b * f(|a|, 1) + u_a * f(1, |b|) + u_a * u_b * f(1, 1)
//!                                 + 2^-24 * |f(a, b)| + (f32 rounding of the operands' product)
//!
//! where u = 2^-shift is the quantization step of each operand (stochastic or nearest rounding).

mod common;

use common::{floats, run};
use goten_device::float_ref::FloatRef;
use goten_enclave::SecretTensor;
use goten_enclave::quant::{QuantConfig, Rounding};
use goten_field::{BilinearOp, Conv2dParams};
use goten_party::Trusts;

fn product(
    fr: &FloatRef,
    op: &BilinearOp,
    sa: &[usize],
    a: &[f64],
    sb: &[usize],
    b: &[f64],
) -> Vec<f64> {
    fr.bilinear::<f64>(op, (sa, a), (sb, b)).unwrap()
}

#[test]
fn dequantized_results_are_within_the_quantization_bound() {
    let p = Conv2dParams::new(1, 1);
    let cases: Vec<(BilinearOp, Vec<usize>, Vec<usize>)> = vec![
        (BilinearOp::MatmulForward, vec![8, 64], vec![10, 64]),
        (BilinearOp::MatmulInputGrad, vec![8, 10], vec![10, 64]),
        (BilinearOp::MatmulWeightGrad, vec![8, 10], vec![8, 64]),
        (
            BilinearOp::Conv2dForward(p),
            vec![2, 16, 8, 8],
            vec![8, 16, 3, 3],
        ),
        (
            BilinearOp::Conv2dInputGrad {
                params: p,
                input_hw: (8, 8),
            },
            vec![2, 8, 8, 8],
            vec![8, 16, 3, 3],
        ),
        (
            BilinearOp::Conv2dWeightGrad {
                params: p,
                kernel_hw: (3, 3),
            },
            vec![2, 8, 8, 8],
            vec![2, 16, 8, 8],
        ),
    ];
    let inputs: Vec<(Vec<f32>, Vec<f32>)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, sa, sb))| {
            (
                floats(sa.iter().product(), 10 + i as u64, 3.0),
                floats(sb.iter().product(), 50 + i as u64, 0.2),
            )
        })
        .collect();
    let out = run(&Trusts::generate(), &|party| {
        let mut res = Vec::new();
        for (i, ((op, sa, sb), (a, b))) in cases.iter().zip(&inputs).enumerate() {
            let ta = SecretTensor::new(sa, a.clone()).unwrap();
            let tb = SecretTensor::new(sb, b.clone()).unwrap();
            res.push(party.linear((i as u64, 0), op, &ta, &tb)?.expose().to_vec());
        }
        Ok(res)
    })
    .unwrap();
    assert_eq!(
        out.results.0, out.results.1,
        "E0 and E1 dequantize identically"
    );
    let fr = FloatRef::new(1).unwrap();
    let q = QuantConfig {
        bits: 8,
        rounding: Rounding::Nearest,
    };
    for (((op, sa, sb), (a, b)), got) in cases.iter().zip(&inputs).zip(&out.results.0) {
        // The quantization step depends only on the operand's maximum.
        let ua = q.unit_error(q.quantize(a, &[]).unwrap().shift);
        let ub = q.unit_error(q.quantize(b, &[]).unwrap().shift);
        let a64: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
        let b64: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
        let ones = |v: &[f64]| vec![1.0; v.len()];
        let exact = product(&fr, op, sa, &a64, sb, &b64);
        let sum_a = product(&fr, op, sa, &abs(&a64), sb, &ones(&b64));
        let sum_b = product(&fr, op, sa, &ones(&a64), sb, &abs(&b64));
        let terms = product(&fr, op, sa, &ones(&a64), sb, &ones(&b64));
        let mut worst = 0f64;
        let mut max_err = 0f64;
        for i in 0..exact.len() {
            let bound = ub * sum_a[i]
                + ua * sum_b[i]
                + ua * ub * terms[i]
                + exact[i].abs() * 2f64.powi(-23)
                + 1e-30;
            let err = (f64::from(got[i]) - exact[i]).abs();
            assert!(
                err <= bound,
                "{op:?} entry {i}: error {err} exceeds bound {bound}"
            );
            worst = worst.max(err / bound);
            max_err = max_err.max(err);
        }
        // The bound is a worst case; the error must be real (quantization happened) but well
        // inside it.
        assert!(
            max_err > 0.0,
            "{op:?}: no quantization error at all is implausible"
        );
        assert!(worst < 0.9, "{op:?}: error reaches {worst:.2} of the bound");
    }
}
