//! The float path of the convolution lowering (plain and enclave modes): batches split into
//! several parallel groups give the same bits whatever the thread count, and agree with
//! textbook loops in f64.

use goten_field::{BilinearOp, Conv2dParams};
use goten_linalg::{FloatArith, dispatch};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// y[n][o][i][j] = sum_{c,ki,kj} x[n][c][i+ki-1][j+kj-1] w[o][c][ki][kj] (3x3, stride 1, pad 1).
fn naive_forward(x: &[f32], w: &[f32], (n, c, h, o): (usize, usize, usize, usize)) -> Vec<f64> {
    let mut y = vec![0f64; n * o * h * h];
    for b in 0..n {
        for oc in 0..o {
            for i in 0..h {
                for j in 0..h {
                    let mut acc = 0f64;
                    for ci in 0..c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (ii, jj) = ((i + ki).wrapping_sub(1), (j + kj).wrapping_sub(1));
                                if ii < h && jj < h {
                                    acc += f64::from(x[((b * c + ci) * h + ii) * h + jj])
                                        * f64::from(w[((oc * c + ci) * 3 + ki) * 3 + kj]);
                                }
                            }
                        }
                    }
                    y[((b * o + oc) * h + i) * h + j] = acc;
                }
            }
        }
    }
    y
}

fn run(threads: usize, op: &BilinearOp, a: (&[usize], &[f32]), b: (&[usize], &[f32])) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| dispatch(&FloatArith::<f32>::new(threads), op, a, b).unwrap())
}

#[test]
fn grouped_float_convs_do_not_depend_on_threads_and_match_loops() {
    let p = Conv2dParams::new(1, 1);
    // 6x6 outputs: several images per group, two groups; 20x20: one image per group.
    for (n, c, h, o) in [(9, 3, 6, 5), (5, 2, 20, 4)] {
        let (xs, ws, ys) = ([n, c, h, h], [o, c, 3, 3], [n, o, h, h]);
        let x = values(xs.iter().product(), 1);
        let w = values(ws.iter().product(), 2);
        let dy = values(ys.iter().product(), 3);
        let ops = [
            (BilinearOp::Conv2dForward(p), (&xs[..], &x), (&ws[..], &w)),
            (
                BilinearOp::Conv2dInputGrad {
                    params: p,
                    input_hw: (h, h),
                },
                (&ys[..], &dy),
                (&ws[..], &w),
            ),
            (
                BilinearOp::Conv2dWeightGrad {
                    params: p,
                    kernel_hw: (3, 3),
                },
                (&ys[..], &dy),
                (&xs[..], &x),
            ),
        ];
        for (op, (sa, a), (sb, b)) in ops {
            let one = run(1, &op, (sa, a), (sb, b));
            for t in [2, 3] {
                let many = run(t, &op, (sa, a), (sb, b));
                assert!(
                    one.iter()
                        .zip(&many)
                        .all(|(u, v)| u.to_bits() == v.to_bits()),
                    "{op:?} with {t} threads differs from one thread"
                );
            }
            if let BilinearOp::Conv2dForward(_) = op {
                let want = naive_forward(&x, &w, (n, c, h, o));
                for (g, w) in one.iter().zip(&want) {
                    assert!((f64::from(*g) - w).abs() < 1e-4, "{g} vs {w}");
                }
            }
        }
    }
}
