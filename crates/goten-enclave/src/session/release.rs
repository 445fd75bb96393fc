//! What an enclave may tell its host: the release policy in types (DESIGN.md section 15).
//!
//! Where it sits: the return values of the training session's ecalls. Every field of every
//! type here is listed in DESIGN.md's release policy with the reason it is safe to show an
//! untrusted host; nothing else leaves a session except one-time-padded shares (device jobs),
//! sealed ciphertext, and the model owner's explicit export.

/// The smallest loss window a protected mode (enclave, goten) may release: the host sees the
/// training loss only as a mean over at least this many steps.
pub const MIN_PROTECTED_WINDOW: u64 = 8;

/// The mean training loss over a window of consecutive steps (1-based step numbers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowLoss {
    /// First step of the window.
    pub first_step: u64,
    /// Last step of the window.
    pub last_step: u64,
    /// Mean cross-entropy over the window's steps.
    pub mean: f32,
}

/// Released after each training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Steps done so far (this step's number, 1-based).
    pub step: u64,
    /// Epoch of this step (0-based).
    pub epoch: u64,
    /// Images in this step's batch (public: the batch size, smaller at an epoch's end).
    pub images: usize,
    /// Learning rate used (public: a function of the schedule and the step).
    pub lr: f32,
    /// Set when this step closes a loss window.
    pub loss: Option<WindowLoss>,
}

/// Released after an evaluation over the whole test split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalReport {
    /// Steps done when it ran.
    pub step: u64,
    /// Epoch of the last step done.
    pub epoch: u64,
    /// Mean test loss over the split.
    pub loss: f32,
    /// Fraction of the split classified correctly.
    pub accuracy: f64,
    /// Test images evaluated.
    pub images: usize,
}

/// Accumulates per-step losses inside the enclave and releases window means only.
#[derive(Debug)]
pub(crate) struct LossWindow {
    width: u64,
    sum: f64,
    first: u64,
    count: u64,
}

impl LossWindow {
    pub(crate) fn new(width: u64) -> Self {
        LossWindow {
            width: width.max(1),
            sum: 0.0,
            first: 0,
            count: 0,
        }
    }

    /// Adds step `step`'s loss; windows are aligned to multiples of the width, so a resumed
    /// run closes the same windows as an uninterrupted one.
    pub(crate) fn push(&mut self, step: u64, loss: f32) -> Option<WindowLoss> {
        if self.count == 0 {
            self.first = step;
        }
        self.sum += f64::from(loss);
        self.count += 1;
        step.is_multiple_of(self.width).then(|| self.take())
    }

    /// The open window at the end of a run, if it covers at least half the width (a shorter
    /// tail would release a near per-step loss).
    pub(crate) fn flush(&mut self) -> Option<WindowLoss> {
        (self.count > 0 && 2 * self.count >= self.width).then(|| self.take())
    }

    fn take(&mut self) -> WindowLoss {
        let w = WindowLoss {
            first_step: self.first,
            last_step: self.first + self.count - 1,
            mean: (self.sum / self.count as f64) as f32,
        };
        self.sum = 0.0;
        self.count = 0;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_release_means_only() {
        let mut w = LossWindow::new(4);
        let got: Vec<_> = (1..=10).filter_map(|s| w.push(s, s as f32)).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].first_step, got[0].last_step, got[0].mean),
            (1, 4, 2.5)
        );
        assert_eq!(
            (got[1].first_step, got[1].last_step, got[1].mean),
            (5, 8, 6.5)
        );
        // Steps 9 and 10 are half a window: released at the end.
        assert_eq!(w.flush().map(|x| x.mean), Some(9.5));
        let mut w = LossWindow::new(4);
        w.push(1, 1.0);
        assert_eq!(w.flush(), None, "a quarter window stays inside");
    }
}
