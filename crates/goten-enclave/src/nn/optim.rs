//! SGD with momentum and weight decay (PyTorch semantics) and learning-rate schedules.

use super::layers::Param;

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Factor.
        gamma: f32,
    },
    /// Cosine annealing from the base rate to 0 over `total` steps.
    Cosine {
        /// Steps of the whole run.
        total: u64,
    },
}

impl Schedule {
    /// The rate at `step` (0-based) in `epoch` (0-based) for base rate `lr`.
    pub fn lr(&self, lr: f32, step: u64, epoch: usize) -> f32 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => lr * gamma.powi((epoch / every.max(1)) as i32),
            Schedule::Cosine { total } => {
                let t = (step.min(total) as f64) / (total.max(1) as f64);
                (f64::from(lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
    }
}

/// SGD settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Momentum (0.9).
    pub momentum: f32,
    /// L2 weight decay (5e-4).
    pub weight_decay: f32,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

impl Sgd {
    /// One update of `p` from its gradient: d = g + wd * p; buf = m * buf + d (buf = d at the
    /// first step); p -= lr * buf.
    pub fn update(&self, p: &mut Param, lr: f32) {
        let first = p.momentum.is_none();
        let buf = p
            .momentum
            .get_or_insert_with(|| crate::SecretTensor::zeros(p.value.shape()));
        let (v, g, b) = (p.value.expose_mut(), p.grad.expose(), buf.expose_mut());
        for i in 0..v.len() {
            let d = g[i] + self.weight_decay * v[i];
            b[i] = if first { d } else { self.momentum * b[i] + d };
            v[i] -= lr * b[i];
        }
    }
}
