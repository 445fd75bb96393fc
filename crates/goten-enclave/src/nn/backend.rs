//! Where linear ops run: [`FloatBackend`] (plain and enclave modes, float32 in this process) or
//! [`ProtocolBackend`] (goten mode: quantized, secret-shared, outsourced, checked).

use goten_field::BilinearOp;
use goten_linalg::FloatArith;

use super::NnError;
use crate::linear::HostServices;
use crate::{KeyedEnclave, SecretTensor};

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
