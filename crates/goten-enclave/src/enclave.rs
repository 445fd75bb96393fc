//! [`Enclave`]: the command ("ecall") surface of E0 / E1.
//!
//! Where it sits: the host creates one per server, runs the key exchange through it, then
//! calls [`Enclave::linear`] for every outsourced op. The host never gets a plaintext value
//! back from any of these calls: results stay in [`SecretTensor`]s inside the enclave (a later
//! training loop consumes them there).

use std::sync::Arc;

use goten_field::{BilinearOp, Ring};

use crate::attest::Evidence;
use crate::keys::{Hello, KeyError, KeyExchange, Role, Trust, WrappedKey};
use crate::linear::{self, HostServices, LinearError};
use crate::quant::{self, QuantConfig, QuantError, Quantized};
use crate::secret::SecretTensor;
use crate::seeds::{PairPurpose, SeedBook};

/// Configuration both enclaves must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclaveConfig {
    /// The share ring.
    pub ring: Ring,
    /// The quantizer.
    pub quant: QuantConfig,
}

impl Default for EnclaveConfig {
    fn default() -> Self {
        EnclaveConfig {
            ring: Ring::DEFAULT,
            quant: QuantConfig::default(),
        }
    }
}

/// Errors of the ecall surface.
#[derive(Debug, thiserror::Error)]
pub enum EnclaveError {
    /// Invalid configuration.
    #[error("enclave configuration: {0}")]
    Config(String),
    /// Key exchange failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// Quantization failed.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// The op failed.
    #[error(transparent)]
    Linear(#[from] LinearError),
    /// Called out of order.
    #[error("{0}")]
    State(&'static str),
}

/// One enclave (E0 or E1) before its key exchange has finished. Debug output is redacted.
///
/// Finishing the exchange consumes it and yields a [`KeyedEnclave`]: only that type can run
/// outsourced ops or start a training session, so "called before the keys exist" is a type
/// error, not a run-time one.
pub struct Enclave {
    role: Role,
    cfg: EnclaveConfig,
    kx: KeyExchange,
}

impl std::fmt::Debug for Enclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Enclave(E{}, {}, keys pending)",
            self.role.index(),
            self.cfg.ring
        )
    }
}

/// One enclave (E0 or E1) with its session keys established. Debug output is redacted.
pub struct KeyedEnclave {
    role: Role,
    cfg: EnclaveConfig,
    seeds: SeedBook,
    /// The attested service key clients seal secrets to (derived from the pair key).
    service: crate::hpke::KeyPair,
    /// What a data owner provisioned through the service key.
    provisioned: Option<crate::service::Provision>,
    /// The next op's masks and pads, expanding while this op's products are in flight.
    prefetch: std::sync::Mutex<crate::prefetch::Prefetcher>,
}

impl std::fmt::Debug for KeyedEnclave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyedEnclave(E{}, {}, keys established)",
            self.role.index(),
            self.cfg.ring
        )
    }
}

impl Enclave {
    /// A new enclave for S0 or S1 with a fresh ephemeral key.
    pub fn new(role: Role, cfg: EnclaveConfig) -> Result<Self, EnclaveError> {
        Self::with_key_exchange(KeyExchange::new(role)?, cfg)
    }

    /// A new enclave around a given key exchange (deterministic tests).
    pub fn with_key_exchange(kx: KeyExchange, cfg: EnclaveConfig) -> Result<Self, EnclaveError> {
        let role = kx.role();
        if role == Role::S2 {
            return Err(EnclaveError::Config("S2 runs no enclave".into()));
        }
        cfg.quant.validate()?;
        // One product of two quantized entries must fit, or no split can make an op exact.
        let one = (cfg.quant.max_abs() as u128).pow(2);
        if one > u128::from(cfg.ring.headroom()) {
            return Err(EnclaveError::Config(format!(
                "{}-bit quantization needs products up to {one}, beyond {}'s headroom {}",
                cfg.quant.bits,
                cfg.ring,
                cfg.ring.headroom()
            )));
        }
        Ok(Enclave { role, cfg, kx })
    }

    /// This enclave's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &EnclaveConfig {
        &self.cfg
    }

    /// What this enclave's attestation evidence must bind.
    pub fn report_data(&self) -> [u8; 32] {
        self.kx.report_data()
    }

    /// The hello to send, carrying `evidence` for [`Self::report_data`].
    pub fn hello(&self, evidence: Evidence) -> Hello {
        self.kx.hello(evidence)
    }

    /// E0: finishes the key exchange; returns the keyed enclave and the wrapped dealer key
    /// for E1.
    pub fn finish_e0(
        self,
        hellos: &[Hello; 3],
        trust: &Trust,
    ) -> Result<(KeyedEnclave, WrappedKey), EnclaveError> {
        let (seeds, wrapped) = self.kx.finish_e0(hellos, trust)?;
        Ok((KeyedEnclave::new(self.role, self.cfg, seeds), wrapped))
    }

    /// E1: finishes the key exchange with E0's wrapped dealer key.
    pub fn finish_e1(
        self,
        hellos: &[Hello; 3],
        trust: &Trust,
        wrapped: &WrappedKey,
    ) -> Result<KeyedEnclave, EnclaveError> {
        let seeds = self.kx.finish_e1(hellos, trust, wrapped)?;
        Ok(KeyedEnclave::new(self.role, self.cfg, seeds))
    }
}

/// A quantized operand and its shape, shareable with the check's background task.
type Operand<'a> = (&'a [usize], &'a std::sync::Arc<quant::Quantized>);

impl KeyedEnclave {
    fn new(role: Role, cfg: EnclaveConfig, seeds: SeedBook) -> Self {
        let service = crate::service::service_key(&seeds.service_ikm());
        KeyedEnclave {
            role,
            cfg,
            seeds,
            service,
            provisioned: None,
            prefetch: Default::default(),
        }
    }

    /// The attested service key's public half (the same in E0 and E1).
    pub fn service_public_key(&self) -> [u8; 32] {
        self.service.public_key()
    }

    /// The service key pair (opens provisioning messages and queries).
    pub(crate) fn service_key(&self) -> &crate::hpke::KeyPair {
        &self.service
    }

    /// The report data this enclave's evidence must bind for a client's `nonce`.
    pub fn service_report_data(&self, nonce: &[u8; 32]) -> [u8; 32] {
        crate::service::service_report_data(self.role, &self.service.public_key(), nonce)
    }

    /// Ecall: a data key sealed to the service key by the data owner. Opened and kept inside;
    /// sealed datasets handed to a session without a key open with it.
    pub fn accept_provision(&mut self, sealed: &[u8]) -> Result<(), EnclaveError> {
        let p = crate::service::open_provision(&self.service, sealed)
            .map_err(|e| EnclaveError::Config(format!("provisioned data key: {e}")))?;
        self.provisioned = Some(p);
        Ok(())
    }

    /// The provisioned data key, if a data owner sent one.
    pub(crate) fn provisioned_data_key(&self) -> Option<&zeroize::Zeroizing<[u8; 32]>> {
        self.provisioned.as_ref().map(|p| &p.data_key)
    }

    /// The job secret and initial-weights seed of the data owner's job seed, if one was sent.
    pub(crate) fn owner_job(&self) -> Option<(goten_field::SecretKey, u64)> {
        let seed = self.provisioned.as_ref()?.job_seed.as_ref()?;
        Some(crate::service::from_job_seed(seed))
    }

    /// How often the next op's masks and pads were ready when it came, and how often a guess
    /// was dropped (the enclave crate's `prefetch` module).
    pub fn prefetch_stats(&self) -> crate::PrefetchStats {
        self.prefetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats
    }

    /// This enclave's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &EnclaveConfig {
        &self.cfg
    }

    /// "E0" or "E1": the role label bound into sealed checkpoints.
    pub(crate) fn role_label(&self) -> &'static str {
        if self.role == Role::S0 { "E0" } else { "E1" }
    }

    pub(crate) fn seeds(&self) -> &SeedBook {
        &self.seeds
    }

    pub(crate) fn seeds_mut(&mut self) -> &mut SeedBook {
        // Whatever was expanded ahead belongs to the old seeds.
        *self.prefetch.get_mut().unwrap_or_else(|e| e.into_inner()) = Default::default();
        &mut self.seeds
    }

    /// Seals a checkpoint of `model` and `progress` (with this job's secret) under the platform
    /// sealing key.
    pub fn seal_checkpoint(
        &self,
        model: &mut crate::nn::Model,
        progress: crate::nn::checkpoint::Progress,
        fingerprint: [u8; 32],
        sealing_key: &goten_field::SecretKey,
    ) -> Result<Vec<u8>, crate::nn::checkpoint::CheckpointError> {
        crate::nn::checkpoint::seal(
            model,
            progress,
            fingerprint,
            Some(self.seeds.job_secret()),
            sealing_key,
            self.role_label(),
        )
    }

    /// Unseals this enclave's checkpoint and adopts its job secret.
    pub fn unseal_checkpoint(
        &mut self,
        bytes: &[u8],
        sealing_key: &goten_field::SecretKey,
        fingerprint: [u8; 32],
        (arch, seed, classes): (impl Into<crate::nn::Arch>, u64, usize),
    ) -> Result<
        (crate::nn::Model, crate::nn::checkpoint::Progress),
        crate::nn::checkpoint::CheckpointError,
    > {
        use crate::nn::checkpoint::{CheckpointError, unseal};
        let role = self.role_label();
        let arch = arch.into();
        let r = unseal(bytes, sealing_key, role, fingerprint, &arch, seed, classes)?;
        let secret = r.job_secret.ok_or_else(|| {
            CheckpointError::Malformed("no job secret in an enclave checkpoint".into())
        })?;
        self.seeds_mut().set_job_secret(secret);
        Ok((r.model, r.progress))
    }

    /// `f(a, b)` through the protocol: quantize, outsource, reconstruct, dequantize.
    pub fn linear(
        &self,
        host: &mut dyn HostServices,
        ids: (u64, u64),
        op: &BilinearOp,
        a: &SecretTensor,
        b: &SecretTensor,
    ) -> Result<SecretTensor, EnclaveError> {
        Ok(self.linear_reusing(host, ids, op, (a, None), (b, None))?.0)
    }

    /// [`Self::linear`], where an operand may come already quantized by an earlier op of the
    /// same step on the same, unchanged tensor (a layer's input and weight from its forward
    /// pass, reused by its weight and input gradients; the output gradient shared by those
    /// two): it is not quantized again, so each operand is quantized once per step. Returns the
    /// result and both quantized operands. Its rounding noise is the earlier op's; the masks
    /// are this op's own, as always.
    pub(crate) fn linear_reusing(
        &self,
        host: &mut dyn HostServices,
        (op_id, iteration): (u64, u64),
        op: &BilinearOp,
        (a, pa): (&SecretTensor, Option<&Arc<Quantized>>),
        (b, pb): (&SecretTensor, Option<&Arc<Quantized>>),
    ) -> Result<(SecretTensor, [Arc<Quantized>; 2]), EnclaveError> {
        let seeds = &self.seeds;
        let out_shape = op
            .output_shape(a.shape(), b.shape())
            .map_err(LinearError::from)?;
        let (na, nb) = (a.expose().len(), b.expose().len());
        for (p, n) in [(pa, na), (pb, nb)] {
            if p.is_some_and(|q| q.values.len() != n) {
                return Err(LinearError::from(goten_field::ShapeError::new(
                    "a reused quantized operand does not match its tensor",
                ))
                .into());
            }
        }
        // Stochastic rounding noise: one stream for both operands (a's entries first), expanded
        // ahead with the op's masks for the operands this op quantizes, or chunk by chunk
        // inside the quantizer.
        let q = &self.cfg.quant;
        let stochastic = q.rounding == quant::Rounding::Stochastic;
        let noise_of = [stochastic && pa.is_none(), stochastic && pb.is_none()];
        let lens = [na, nb, out_shape.iter().product()];
        let mut ready = self.take_prefetched(op_id, iteration, lens, noise_of);
        let [noise_a, noise_b] = ready
            .as_mut()
            .map_or([None, None], |r| std::mem::take(&mut r.noise));
        // The stream is derived only for an operand quantized without prefetched noise.
        let quantize = |x: &[f32], at: usize, noise: Option<Vec<f32>>| match noise {
            Some(noise) => q.quantize(x, &noise),
            None => {
                let prg = seeds.pair(PairPurpose::RoundingNoise, op_id);
                q.quantize_stream(x, (&prg, iteration, at as u64))
            }
        };
        let qa = match pa {
            Some(p) => p.clone(),
            None => Arc::new(quantize(a.expose(), 0, noise_a)?),
        };
        let qb = match pb {
            Some(p) => p.clone(),
            None => Arc::new(quantize(b.expose(), na, noise_b)?),
        };
        let c = self.linear_shared(
            host,
            (op_id, iteration),
            op,
            ((a.shape(), &qa), (b.shape(), &qb)),
            (ready, None, noise_of),
        )?;
        let data = c.dequantize(qa.shift, qb.shift);
        let c = SecretTensor::new(&out_shape, data).expect("output length matches its shape");
        Ok((c, [qa, qb]))
    }

    /// The tensors expanded ahead for op `op_id`'s first attempt, if the guess was right.
    fn take_prefetched(
        &self,
        op_id: u64,
        iteration: u64,
        lens: [usize; 3],
        noise: [bool; 2],
    ) -> Option<crate::prefetch::Expanded> {
        let key = crate::prefetch::Key::first(op_id, iteration, lens, noise);
        let mut p = self.prefetch.lock().unwrap_or_else(|e| e.into_inner());
        p.take(key)
    }

    /// The exact integer `aQ (x) bQ` for already-quantized operands (tests and tools: the
    /// operands are copied once, for the check that runs beside the devices).
    pub fn linear_quantized(
        &self,
        host: &mut dyn HostServices,
        (op_id, iteration): (u64, u64),
        op: &BilinearOp,
        (sa, a): (&[usize], &quant::Quantized),
        (sb, b): (&[usize], &quant::Quantized),
    ) -> Result<Vec<i64>, EnclaveError> {
        let out: usize = op
            .output_shape(sa, sb)
            .map_err(LinearError::from)?
            .iter()
            .product();
        let lens = [a.values.len(), b.values.len(), out];
        // The operands come quantized: no rounding noise.
        let ready = self.take_prefetched(op_id, iteration, lens, [false, false]);
        let (a, b) = (
            std::sync::Arc::new(a.clone()),
            std::sync::Arc::new(b.clone()),
        );
        let range = Some(self.cfg.quant.max_abs());
        let operands = ((sa, &a), (sb, &b));
        let c = self.linear_shared(
            host,
            (op_id, iteration),
            op,
            operands,
            (ready, range, [false, false]),
        )?;
        Ok(c.into_wide())
    }

    /// [`Self::linear_quantized`] on operands the check's background task can share, with the
    /// op's tensors if they were expanded ahead, the operands' range to check (`None` for
    /// this enclave's own quantizer's output, in range by construction), and which operands
    /// this op quantized (the prefetcher expands their noise for the op's next run).
    fn linear_shared(
        &self,
        host: &mut dyn HostServices,
        ids: (u64, u64),
        op: &BilinearOp,
        (a, b): (Operand<'_>, Operand<'_>),
        (ready, max_abs, noise): (Option<crate::prefetch::Expanded>, Option<i64>, [bool; 2]),
    ) -> Result<linear::Exact, EnclaveError> {
        let ahead = linear::Ahead {
            prefetcher: &self.prefetch,
            noise,
            ready,
        };
        Ok(linear::run(
            self.role,
            self.cfg.ring,
            &self.seeds,
            ahead,
            host,
            ids,
            op,
            a,
            b,
            max_abs,
        )?)
    }
}
