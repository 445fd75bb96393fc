//! Times the float32 convolution ops on the VGG-11 shapes at batch 64 (best of 8), the
//! measurement behind the CPU group size (`CPU_GROUP_COLS`, DESIGN.md section 2):
//! `cargo run --release -p goten-linalg --example conv_groups`.

use goten_field::{BilinearOp, Conv2dParams};
use goten_linalg::{FloatArith, dispatch};
use std::time::Instant;
fn best<F: FnMut()>(mut f: F) -> f64 {
    let mut b = f64::MAX;
    for _ in 0..8 {
        let t = Instant::now();
        f();
        b = b.min(t.elapsed().as_secs_f64());
    }
    b
}
fn main() {
    let n = 64;
    let layers = [
        (3usize, 64usize, 32usize),
        (64, 128, 16),
        (128, 256, 8),
        (256, 256, 8),
        (256, 512, 4),
        (512, 512, 4),
        (512, 512, 2),
        (512, 512, 2),
    ];
    let a = FloatArith::<f32>::new(2);
    let p = Conv2dParams::new(1, 1);
    let (mut tf, mut tx, mut tw) = (0.0, 0.0, 0.0);
    for (i, &(c, o, h)) in layers.iter().enumerate() {
        let x = vec![0.5f32; n * c * h * h];
        let w = vec![0.25f32; o * c * 9];
        let dy = vec![0.125f32; n * o * h * h];
        let f = best(|| {
            dispatch(
                &a,
                &BilinearOp::Conv2dForward(p),
                (&[n, c, h, h], &x),
                (&[o, c, 3, 3], &w),
            )
            .unwrap();
        });
        let dx = if i == 0 {
            0.0
        } else {
            best(|| {
                dispatch(
                    &a,
                    &BilinearOp::Conv2dInputGrad {
                        params: p,
                        input_hw: (h, h),
                    },
                    (&[n, o, h, h], &dy),
                    (&[o, c, 3, 3], &w),
                )
                .unwrap();
            })
        };
        let dw = best(|| {
            dispatch(
                &a,
                &BilinearOp::Conv2dWeightGrad {
                    params: p,
                    kernel_hw: (3, 3),
                },
                (&[n, o, h, h], &dy),
                (&[n, c, h, h], &x),
            )
            .unwrap();
        });
        let macs = (n * o * c * 9 * h * h) as f64 / 1e9;
        println!(
            "conv{} fwd {:.4} ({:.0}) dx {:.4} ({:.0}) dw {:.4} ({:.0})",
            i + 1,
            f,
            macs / f,
            dx,
            macs / dx,
            dw,
            macs / dw
        );
        tf += f;
        tx += dx;
        tw += dw;
    }
    println!(
        "total fwd {tf:.4} dx {tx:.4} dw {tw:.4} sum {:.4}",
        tf + tx + tw
    );
}
