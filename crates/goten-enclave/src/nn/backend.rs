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

    /// Float products, but every operand comes back "prepared" with a unique mark (its shift),
    /// and each op records the marks of the operands that arrived prepared and those it handed
    /// out.
    struct Recording {
        inner: FloatBackend,
        next: i32,
        /// Per op: its id, the marks it was given, the marks it handed out.
        seen: Vec<(u64, [Option<i32>; 2], [i32; 2])>,
    }

    impl LinearBackend for Recording {
        fn bilinear(
            &mut self,
            op_id: u64,
            op: &BilinearOp,
            a: &SecretTensor,
            b: &SecretTensor,
        ) -> Result<SecretTensor, NnError> {
            Ok(self.bilinear_reusing(op_id, op, (a, None), (b, None))?.0)
        }

        fn bilinear_reusing(
            &mut self,
            op_id: u64,
            op: &BilinearOp,
            (a, pa): (&SecretTensor, Option<&Prepared>),
            (b, pb): (&SecretTensor, Option<&Prepared>),
        ) -> Result<Reusable, NnError> {
            let c = self.inner.bilinear(op_id, op, a, b)?;
            // A reused operand keeps its mark (it must be the same tensor: same length).
            let mut mark = |t: &SecretTensor, p: Option<&Prepared>| {
                if let Some(p) = p {
                    assert_eq!(p.0.values.len(), t.expose().len(), "op {op_id}");
                    return p.0.shift;
                }
                self.next += 1;
                self.next
            };
            let out = [mark(a, pa), mark(b, pb)];
            let given = [pa.map(|p| p.0.shift), pb.map(|p| p.0.shift)];
            self.seen.push((op_id, given, out));
            let prep = |t: &SecretTensor, id: i32| {
                Some(Prepared(Arc::new(Quantized {
                    values: vec![0; t.expose().len()],
                    shift: id,
                })))
            };
            Ok((c, [prep(a, out[0]), prep(b, out[1])]))
        }

        fn name(&self) -> &'static str {
            "recording"
        }
    }

    /// A training step quantizes each operand once: a layer's weight gradient reuses its input
    /// as the forward pass prepared it, and its input gradient reuses the weight as the forward
    /// pass prepared it and the output gradient as the weight gradient prepared it.
    #[test]
    fn backward_reuses_the_forward_and_shared_operands() {
        let mut m = ModelKind::Small.build(3, 10).unwrap();
        let mut be = Recording {
            inner: FloatBackend::new(1),
            next: 0,
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
        let (forward, backward) = be.seen.split_at(linear);
        assert!(forward.iter().all(|(_, given, _)| *given == [None, None]));
        let of = |id: u64| be.seen.iter().find(|(i, _, _)| *i == id);
        let mut dw = 0;
        for (id, given, _) in backward {
            if let Some((_, _, [x, _])) =
                of(id - 2).filter(|_| forward.iter().any(|f| f.0 == id - 2))
            {
                dw += 1;
                assert_eq!(*given, [None, Some(*x)], "dW {id}: the forward's input");
            } else {
                let (_, _, [_, w]) = of(id - 1).expect("the forward op");
                let (_, _, [dy, _]) = of(id + 1).expect("the weight gradient");
                assert_eq!(*given, [Some(*dy), Some(*w)], "dx {id}");
            }
        }
        assert_eq!(dw, linear);
    }
}
