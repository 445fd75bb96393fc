//! The benchmark shapes: VGG-11's conv and fc layers for 32x32 inputs (PROTOCOL.md section 5).

use goten_field::{BilinearOp, Conv2dParams};

/// The eight conv layers of VGG-11 for 32x32 inputs: (name, in, out, spatial size).
const VGG11_CONVS: [(&str, usize, usize, usize); 8] = [
    ("conv1", 3, 64, 32),
    ("conv2", 64, 128, 16),
    ("conv3", 128, 256, 8),
    ("conv4", 256, 256, 8),
    ("conv5", 256, 512, 4),
    ("conv6", 512, 512, 4),
    ("conv7", 512, 512, 2),
    ("conv8", 512, 512, 2),
];

/// The three fc layers: (name, in, out).
const VGG11_FCS: [(&str, usize, usize); 3] =
    [("fc1", 512, 512), ("fc2", 512, 512), ("fc3", 512, 10)];

/// One benchmark product: a layer's op and its operand shapes.
pub struct Job {
    pub layer: &'static str,
    pub op: BilinearOp,
    pub a: Vec<usize>,
    pub b: Vec<usize>,
}

pub fn vgg_jobs(n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    let p = Conv2dParams::new(1, 1);
    for (layer, c, o, s) in VGG11_CONVS {
        let x = vec![n, c, s, s];
        let y = vec![n, o, s, s];
        let w = vec![o, c, 3, 3];
        jobs.push(Job {
            layer,
            op: BilinearOp::Conv2dForward(p),
            a: x.clone(),
            b: w.clone(),
        });
        jobs.push(Job {
            layer,
            op: BilinearOp::Conv2dInputGrad {
                params: p,
                input_hw: (s, s),
            },
            a: y.clone(),
            b: w,
        });
        jobs.push(Job {
            layer,
            op: BilinearOp::Conv2dWeightGrad {
                params: p,
                kernel_hw: (3, 3),
            },
            a: y,
            b: x,
        });
    }
    for (layer, i, o) in VGG11_FCS {
        jobs.push(Job {
            layer,
            op: BilinearOp::MatmulForward,
            a: vec![n, i],
            b: vec![o, i],
        });
        jobs.push(Job {
            layer,
            op: BilinearOp::MatmulInputGrad,
            a: vec![n, o],
            b: vec![o, i],
        });
        jobs.push(Job {
            layer,
            op: BilinearOp::MatmulWeightGrad,
            a: vec![n, o],
            b: vec![n, i],
        });
    }
    jobs
}
