//! Where linear ops run: [`FloatBackend`] (plain and enclave modes, float32 in this process) or
//! [`ProtocolBackend`] (goten mode: quantized, secret-shared, outsourced, checked).

use goten_field::BilinearOp;
use goten_linalg::FloatArith;

use std::sync::Arc;

use super::NnError;
use crate::linear::HostServices;
use crate::quant::Quantized;
use crate::{KeyedEnclave, SecretTensor};

/// An operand as a backend prepared it for one op (goten mode: its quantized integers), kept
/// by a layer from its training forward pass to its backward pass so that the step's later
/// ops on the same, unchanged tensor reuse it instead of quantizing it again. Opaque; never
/// shown.
pub struct Prepared(pub(crate) Arc<Quantized>);

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(<redacted>)")
    }
}

/// A product and both operands as the backend prepared them (`None` where it prepares nothing).
pub type Reusable = (SecretTensor, [Option<Prepared>; 2]);

/// Runs the bilinear ops of a model.
pub trait LinearBackend {
    /// `f(a, b)`; `op_id` identifies the op within a step (unique per layer and kind).
    fn bilinear(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, NnError>;

    /// `f(a, b)` where an operand may come with its preparation by an earlier op of this
    /// step (which must have been given the same tensor, unchanged since); returns the product
    /// and both operands' preparations, for later ops. The default prepares nothing.
    fn bilinear_reusing(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        a: (&SecretTensor, Option<&Prepared>),
        b: (&SecretTensor, Option<&Prepared>),
    ) -> Result<Reusable, NnError> {
        Ok((self.bilinear(op_id, op, a.0, b.0)?, [None, None]))
    }

    /// Called once per training or evaluation step, before its ops.
    fn next_step(&mut self) {}

    /// A short name for reports.
    fn name(&self) -> &'static str;

    /// Seconds the host behind this backend spent in device calls and transport (0 when there
    /// is none).
    fn host_busy(&self) -> (f64, f64) {
        (0.0, 0.0)
    }
}

/// Plain float32 products (im2col + GEMM) on the current rayon pool.
pub struct FloatBackend {
    threads: usize,
}

impl FloatBackend {
    /// A backend whose GEMM uses `threads` workers (0: the pool's size).
    pub fn new(threads: usize) -> Self {
        FloatBackend {
            threads: if threads == 0 {
                rayon::current_num_threads()
            } else {
                threads
            },
        }
    }
}

impl LinearBackend for FloatBackend {
    fn bilinear(
        &mut self,
        _op_id: u64,
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, NnError> {
        let shape = op.output_shape(a.shape(), b.shape())?;
        let arith = FloatArith::<f32>::new(self.threads);
        let data =
            goten_linalg::dispatch(&arith, op, (a.shape(), a.expose()), (b.shape(), b.expose()))?;
        Ok(SecretTensor::new(&shape, data).expect("dispatch returns the output shape's length"))
    }

    fn name(&self) -> &'static str {
        "float32"
    }
}

/// The three-party protocol: every product is quantized, shared, outsourced through the host
/// and reconstructed exactly inside the enclave.
pub struct ProtocolBackend<'a> {
    enclave: &'a KeyedEnclave,
    host: &'a mut dyn HostServices,
    /// PRG iteration: advanced once per step, so no (op, iteration) pair repeats in a session.
    step: u64,
}

impl<'a> ProtocolBackend<'a> {
    /// A backend over an enclave with established keys and its host; `first_step` continues a
    /// session's step counter (0 for a new session).
    pub fn new(enclave: &'a KeyedEnclave, host: &'a mut dyn HostServices, first_step: u64) -> Self {
        ProtocolBackend {
            enclave,
            host,
            step: first_step,
        }
    }

    /// The current step counter.
    pub fn step(&self) -> u64 {
        self.step
    }
}

impl LinearBackend for ProtocolBackend<'_> {
    fn bilinear(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, NnError> {
        Ok(self
            .enclave
            .linear(self.host, (op_id, self.step), op, a, b)?)
    }

    fn bilinear_reusing(
        &mut self,
        op_id: u64,
        op: &BilinearOp,
        (a, pa): (&SecretTensor, Option<&Prepared>),
        (b, pb): (&SecretTensor, Option<&Prepared>),
    ) -> Result<Reusable, NnError> {
        let (c, [qa, qb]) = self.enclave.linear_reusing(
            self.host,
            (op_id, self.step),
            op,
            (a, pa.map(|p| &p.0)),
            (b, pb.map(|p| &p.0)),
        )?;
        Ok((c, [Some(Prepared(qa)), Some(Prepared(qb))]))
    }

    fn next_step(&mut self) {
        self.step += 1;
    }

    fn name(&self) -> &'static str {
        "goten"
    }

    fn host_busy(&self) -> (f64, f64) {
        self.host.busy_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::layers::Layer;
    use crate::nn::optim::Sgd;
    use crate::nn::{ModelKind, init};

    /// Float products, but every operand comes back "prepared" (a marker of its length), and
    /// each op records which operands arrived prepared.
    struct Recording {
        inner: FloatBackend,
        /// Per op: its id, the prepared operands' lengths, the operands' lengths.
        seen: Vec<(u64, [Option<usize>; 2], [usize; 2])>,
    }

    impl LinearBackend for Recording {
        fn bilinear(
            &mut self,
            op_id: u64,
            op: &BilinearOp,
            a: &SecretTensor,
            b: &SecretTensor,
        ) -> Result<SecretTensor, NnError> {
            self.seen
                .push((op_id, [None, None], [a.expose().len(), b.expose().len()]));
            self.inner.bilinear(op_id, op, a, b)
        }

        fn bilinear_reusing(
            &mut self,
            op_id: u64,
            op: &BilinearOp,
            (a, pa): (&SecretTensor, Option<&Prepared>),
            (b, pb): (&SecretTensor, Option<&Prepared>),
        ) -> Result<Reusable, NnError> {
            let len = |p: Option<&Prepared>| p.map(|p| p.0.values.len());
            self.seen.push((
                op_id,
                [len(pa), len(pb)],
                [a.expose().len(), b.expose().len()],
            ));
            let mark = |t: &SecretTensor| {
                Some(Prepared(Arc::new(Quantized {
                    values: vec![0; t.expose().len()],
                    shift: 0,
                })))
            };
            let c = self.inner.bilinear(op_id, op, a, b)?;
            Ok((c, [mark(a), mark(b)]))
        }

        fn name(&self) -> &'static str {
            "recording"
        }
    }

    /// A training step quantizes each operand once: forward ops prepare x and W, the weight
    /// gradient reuses x (and prepares dy), the input gradient reuses dy and W; the preparation
    /// handed back is the one of the same tensor (its length).
    #[test]
    fn backward_reuses_the_forward_and_shared_operands() {
        let mut m = ModelKind::Small.build(3, 10).unwrap();
        let mut be = Recording {
            inner: FloatBackend::new(1),
            seen: Vec::new(),
        };
        let mut x = SecretTensor::zeros(&[2, 3, 32, 32]);
        init::normal(4, 0, x.expose_mut(), 1.0);
        m.train_step(&mut be, x, &[1, 2], &Sgd::default(), 0.1)
            .unwrap();
        let linear = m
            .layers()
            .iter()
            .filter(|l| matches!(l, Layer::Conv { .. } | Layer::Dense { .. }))
            .count();
        // Forward: one op per linear layer, nothing prepared yet.
        let forward: Vec<_> = be.seen.iter().take(linear).collect();
        assert!(
            forward.iter().all(|(_, p, _)| *p == [None, None]),
            "{forward:?}"
        );
        // Backward: every weight gradient (op + 2) and input gradient (op + 1) reuses.
        let backward = &be.seen[linear..];
        let mut dw = 0;
        for (k, (id, p, len)) in backward.iter().enumerate() {
            let base = forward
                .iter()
                .find(|(f, _, _)| *f == id - 2 || *f == id - 1)
                .map(|(f, _, _)| *f)
                .expect("a backward op of a forward op");
            if *id == base + 2 {
                dw += 1;
                assert_eq!(*p, [None, Some(len[1])], "dW {id}");
            } else {
                // The input gradient follows its layer's weight gradient and reuses its dy.
                assert_eq!(backward[k - 1].0, base + 2);
                assert_eq!(*p, [Some(len[0]), Some(len[1])], "dx {id}");
            }
        }
        assert_eq!(dw, linear);
    }
}
