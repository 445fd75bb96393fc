//! Softmax cross-entropy, mean over the batch (PyTorch semantics), inside the enclave.

use super::NnError;
use crate::SecretTensor;

/// Loss, number of correct argmax predictions, and d(loss)/d(logits).
pub fn cross_entropy(
    logits: &SecretTensor,
    labels: &[u8],
) -> Result<(f32, usize, SecretTensor), NnError> {
    let &[n, k] = logits.shape() else {
        return Err(NnError::Numeric(format!(
            "logits must be [batch, classes], got {:?}",
            logits.shape()
        )));
    };
    if labels.len() != n || labels.iter().any(|&l| usize::from(l) >= k) {
        return Err(NnError::Numeric("labels do not match the logits".into()));
    }
    let z = logits.expose();
    let mut grad = SecretTensor::zeros(&[n, k]);
    let g = grad.expose_mut();
    let mut total = 0f64;
    let mut correct = 0;
    for i in 0..n {
        let row = &z[i * k..(i + 1) * k];
        if row.iter().any(|v| !v.is_finite()) {
            return Err(NnError::Numeric(
                "non-finite logits: training diverged (lower the learning rate)".into(),
            ));
        }
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = row.iter().map(|&v| f64::from(v - max).exp()).sum();
        let label = usize::from(labels[i]);
        total += sum.ln() - f64::from(row[label] - max);
        let argmax = row
            .iter()
            .enumerate()
            .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
        correct += usize::from(argmax == label);
        for j in 0..k {
            let p = f64::from(row[j] - max).exp() / sum;
            g[i * k + j] = ((p - f64::from(u8::from(j == label))) / n as f64) as f32;
        }
    }
    Ok(((total / n as f64) as f32, correct, grad))
}
