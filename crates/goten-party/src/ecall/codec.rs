//! The ecall/ocall codec between a host and its enclave process: versioned frames, strict
//! decoding.
//!
//! Where it sits: on the local channel of `--enclave process` ([`super`]). Frame: `"GE"`,
//! version 1, kind u8, body length u32, body. Bodies reuse the wire format's pieces (op
//! headers, evidence, hellos, packed ring tensors) and the same rules: every length is checked
//! against the frame before use, counts are bounded, trailing bytes are an error. The host
//! never trusts the enclave's frames more than a peer's, and the enclave never trusts the
//! host's.

use goten_enclave::attest::Evidence;
use goten_enclave::keys::{Hello, WrappedKey};
use goten_enclave::linear::{DeviceJob, JobReply};
use goten_enclave::session::model_out::{decode_export, encode_export};
use goten_enclave::session::{
    EvalReport, Fault, ModelRelease, Receipt, Split, StepReport, TrainConfig, WindowLoss,
};
use goten_field::Ring;

use super::body::{
    bad, get_config, get_split, get_window, get_wrapped, put_config, put_split, put_window,
    put_wrapped,
};
use crate::wire::{R, W, WireError};

/// Version of the ecall codec (2: the session start carries no sealing key; the enclave
/// process has its platform's. 3: the configuration names the model owner, and the export is
/// a sealed model or, where the policy allows, plaintext; the data owner's key arrives before
/// the session; the start-up parameters carry the session's nonces).
pub const VERSION: u8 = 3;
/// Frame header: magic, version, kind, body length.
pub const HEADER: usize = 8;
/// Largest body accepted (2 GiB would not fit u32 lengths of the splits; 1.5 GiB bounds memory).
pub const MAX_BODY: usize = 3 << 29;

/// What a process enclave is started with (before its key exchange).
#[derive(Clone, Debug, PartialEq)]
pub struct InitParams {
    /// 0 (E0) or 1 (E1).
    pub role: u8,
    /// Share ring width.
    pub ring_bits: u32,
    /// Quantization width.
    pub quant_bits: u32,
    /// Stochastic (1) or nearest (0) rounding.
    pub stochastic: bool,
    /// Tests only: the ephemeral X25519 secret.
    pub danger_ephemeral: Option<[u8; 32]>,
    /// Platform public keys trusted for E0/E1 evidence.
    pub trusted_platforms: Vec<[u8; 32]>,
    /// Measurement expected of E0 and E1.
    pub expected_measurement: [u8; 32],
    /// S2's pinned identity key.
    pub pinned_dealer: [u8; 32],
    /// This session's nonces of S0, S1 and S2, bound into every hello.
    pub session_nonces: [[u8; 32]; 3],
    /// Hardware attestation (`--tee`): the enclave attests itself with the TEE's quote or
    /// report and verifies its peers' under the cluster's policy.
    pub hardware: Option<HardwareParams>,
}

/// The hardware attestation settings an enclave process starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct HardwareParams {
    /// `goten_attest::TeeKind::tag`.
    pub tee: u8,
    /// The cluster's `[attestation.policy]`, as TOML.
    pub policy: String,
    /// The collateral files the cluster names.
    pub collateral: Vec<Vec<u8>>,
}

/// Host to enclave: ecalls, and answers to the enclave's ocalls.
pub enum ToEnclave {
    /// Creates the enclave: answered with its report data.
    Init(InitParams),
    /// The hello for this evidence.
    Hello(Evidence),
    /// Finishes the key exchange (E1: with E0's wrapped dealer key).
    FinishKx {
        /// The three hellos in role order.
        hellos: Box<[Hello; 3]>,
        /// E0's wrapped dealer key (for E1).
        wrapped: Option<WrappedKey>,
    },
    /// Before the session: the service key and the report data its evidence binds for a
    /// data owner's nonce.
    ServiceKey([u8; 32]),
    /// Before the session: the data owner's data key, sealed to the service key.
    Provision(Vec<u8>),
    /// Starts the training session (the enclave process has its platform's sealing key).
    Start {
        /// The job.
        cfg: TrainConfig,
        /// Training split.
        train: Split,
        /// Test split.
        test: Split,
    },
    /// Ecall "step".
    Step,
    /// Ecall "evaluate".
    Evaluate,
    /// Ecall "state tag".
    StateTag,
    /// Ecall "check the peer's tag".
    CheckPeerTag([u8; 32]),
    /// Ecall "checkpoint".
    Checkpoint,
    /// Ecall "open a checkpoint".
    OpenCheckpoint(Vec<u8>),
    /// Ecall "resume at step" (and whether the user allows a rolled-back peer).
    ResumeAt(u64, bool),
    /// Ecall "receipt for the checkpoint just stored".
    SealedReceipt,
    /// Ecall "accept the peer's receipt".
    AcceptReceipt(Receipt),
    /// Ecall "flush the loss window".
    FlushLoss,
    /// Ecall "export".
    Export,
    /// Answer to [`FromEnclave::Announce`].
    Announced,
    /// Answer to [`FromEnclave::RunJob`].
    JobDone(JobReply),
    /// An ocall failed on the host (its error stays with the host).
    OcallFailed(String),
    /// The host is done: the enclave process exits.
    Shutdown,
}

/// Enclave to host: ecall results, errors, and ocalls.
pub enum FromEnclave {
    /// Report data for the evidence.
    ReportData([u8; 32]),
    /// The enclave's hello.
    Hello(Hello),
    /// The service key and the report data for a data owner's nonce.
    Service {
        /// HPKE public key of E0 and E1.
        public: [u8; 32],
        /// What the evidence must bind.
        report_data: [u8; 32],
    },
    /// Key exchange finished (E0: the wrapped dealer key for E1).
    Finished(Option<WrappedKey>),
    /// A call without a result succeeded.
    Done,
    /// A step's report.
    Step(StepReport),
    /// An evaluation's report.
    Eval(EvalReport),
    /// A state tag.
    Tag([u8; 32]),
    /// A sealed checkpoint.
    Sealed(Vec<u8>),
    /// The step of an opened checkpoint.
    Opened(u64),
    /// This enclave's receipt for its stored checkpoint.
    Receipt(Receipt),
    /// The last loss window.
    Loss(Option<WindowLoss>),
    /// The model owner's export (sealed to the owner, or plaintext where the policy allows).
    Export(ModelRelease),
    /// The call failed.
    Error(Fault, String),
    /// Ocall: announce a part to S2.
    Announce(goten_enclave::OpHeader),
    /// Ocall: run a device job.
    RunJob(DeviceJob),
}

/// A writer whose buffer (`buf`, emptied, its capacity kept) starts with room for the header.
fn start(buf: &mut Vec<u8>) -> W {
    let mut v = std::mem::take(buf);
    v.clear();
    v.resize(HEADER, 0);
    W(v)
}

/// Fills in the header of a frame built by [`start`]: the body is never copied.
fn frame(kind: u8, w: W, buf: &mut Vec<u8>) {
    let mut f = w.0;
    let n = (f.len() - HEADER) as u32;
    f[..2].copy_from_slice(b"GE");
    f[2] = VERSION;
    f[3] = kind;
    f[4..8].copy_from_slice(&n.to_le_bytes());
    *buf = f;
}

/// Checks a frame header; returns (kind, body length).
pub fn parse_header(h: &[u8; HEADER]) -> Result<(u8, usize), WireError> {
    if &h[..2] != b"GE" {
        return Err(WireError::Magic);
    }
    if h[2] != VERSION {
        // The enclave program and its host come from different builds.
        return Err(WireError::Version {
            found: h[2],
            expected: VERSION,
        });
    }
    let n = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
    if n > MAX_BODY {
        return Err(WireError::Limit(format!("ecall body of {n} bytes")));
    }
    Ok((h[3], n))
}

fn done(r: R<'_>) -> Result<(), WireError> {
    if r.0.is_empty() {
        Ok(())
    } else {
        Err(bad("ecall frame", format!("{} trailing bytes", r.0.len())))
    }
}

const FAULTS: [Fault; 6] = Fault::ALL;

/// Encodes a host-to-enclave message.
pub fn encode_to_enclave(m: &ToEnclave) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_to_enclave_into(m, &mut buf);
    buf
}

/// Encodes a host-to-enclave message into `buf` (replacing its content, reusing its memory:
/// a channel keeps one buffer, so large share frames do not fault in fresh pages each time).
pub fn encode_to_enclave_into(m: &ToEnclave, buf: &mut Vec<u8>) {
    let mut w = start(buf);
    let kind = match m {
        ToEnclave::Init(p) => {
            w.u8(p.role);
            w.u32(p.ring_bits);
            w.u32(p.quant_bits);
            w.u8(u8::from(p.stochastic));
            match &p.danger_ephemeral {
                None => w.u8(0),
                Some(k) => {
                    w.u8(1);
                    w.bytes(k);
                }
            }
            w.u64(p.trusted_platforms.len() as u64);
            p.trusted_platforms.iter().for_each(|k| w.bytes(k));
            w.bytes(&p.expected_measurement);
            w.bytes(&p.pinned_dealer);
            p.session_nonces.iter().for_each(|n| w.bytes(n));
            match &p.hardware {
                None => w.u8(0),
                Some(h) => {
                    w.u8(1);
                    w.u8(h.tee);
                    w.str(&h.policy);
                    w.u64(h.collateral.len() as u64);
                    h.collateral.iter().for_each(|c| w.blob(c));
                }
            }
            1
        }
        ToEnclave::Hello(e) => {
            w.evidence(e);
            2
        }
        ToEnclave::FinishKx { hellos, wrapped } => {
            hellos.iter().for_each(|h| w.hello(h));
            put_wrapped(&mut w, wrapped);
            3
        }
        ToEnclave::Start { cfg, train, test } => {
            put_config(&mut w, cfg);
            put_split(&mut w, train);
            put_split(&mut w, test);
            4
        }
        ToEnclave::Step => 5,
        ToEnclave::Evaluate => 6,
        ToEnclave::StateTag => 7,
        ToEnclave::CheckPeerTag(t) => {
            w.bytes(t);
            8
        }
        ToEnclave::Checkpoint => 9,
        ToEnclave::OpenCheckpoint(b) => {
            w.blob(b);
            10
        }
        ToEnclave::ResumeAt(s, allow) => {
            w.u64(*s);
            w.u8(u8::from(*allow));
            11
        }
        ToEnclave::SealedReceipt => 18,
        ToEnclave::AcceptReceipt(r) => {
            w.u64(r.step);
            w.bytes(&r.mac);
            19
        }
        ToEnclave::FlushLoss => 12,
        ToEnclave::Export => 13,
        ToEnclave::Announced => 14,
        ToEnclave::JobDone(j) => {
            for t in [&j.own, &j.peer, &j.dealer] {
                w.tensor(t);
            }
            15
        }
        ToEnclave::OcallFailed(msg) => {
            w.str(msg);
            16
        }
        ToEnclave::Shutdown => 17,
        ToEnclave::ServiceKey(nonce) => {
            w.bytes(nonce);
            20
        }
        ToEnclave::Provision(sealed) => {
            w.blob(sealed);
            21
        }
    };
    frame(kind, w, buf)
}

/// Decodes a host-to-enclave body of `kind`; `ring` is the enclave's share ring.
pub fn decode_to_enclave(kind: u8, body: &[u8], ring: Ring) -> Result<ToEnclave, WireError> {
    let mut r = R(body);
    let m = match kind {
        1 => {
            let role = r.u8("init")?;
            if role > 1 {
                return Err(bad("init", format!("enclave role {role}")));
            }
            let (ring_bits, quant_bits) = (r.u32("init")?, r.u32("init")?);
            let stochastic = r.flag("init")?;
            let danger_ephemeral = if r.flag("init")? {
                Some(r.arr("init")?)
            } else {
                None
            };
            let n = r.u64("init")?;
            if n > 64 {
                return Err(WireError::Limit(format!("{n} trusted platforms")));
            }
            let trusted_platforms = (0..n).map(|_| r.arr("init")).collect::<Result<_, _>>()?;
            ToEnclave::Init(InitParams {
                role,
                ring_bits,
                quant_bits,
                stochastic,
                danger_ephemeral,
                trusted_platforms,
                expected_measurement: r.arr("init")?,
                pinned_dealer: r.arr("init")?,
                session_nonces: [r.arr("init")?, r.arr("init")?, r.arr("init")?],
                hardware: if r.flag("init")? {
                    let tee = r.u8("init")?;
                    let policy = r.str("init")?;
                    let n = r.u64("init")?;
                    if n > 16 {
                        return Err(WireError::Limit(format!("{n} collateral files")));
                    }
                    let collateral = (0..n)
                        .map(|_| r.blob("collateral").map(<[u8]>::to_vec))
                        .collect::<Result<_, _>>()?;
                    Some(HardwareParams {
                        tee,
                        policy,
                        collateral,
                    })
                } else {
                    None
                },
            })
        }
        2 => ToEnclave::Hello(r.evidence()?),
        3 => ToEnclave::FinishKx {
            hellos: Box::new([r.hello()?, r.hello()?, r.hello()?]),
            wrapped: get_wrapped(&mut r)?,
        },
        4 => ToEnclave::Start {
            cfg: get_config(&mut r)?,
            train: get_split(&mut r)?,
            test: get_split(&mut r)?,
        },
        5 => ToEnclave::Step,
        6 => ToEnclave::Evaluate,
        7 => ToEnclave::StateTag,
        8 => ToEnclave::CheckPeerTag(r.arr("state tag")?),
        9 => ToEnclave::Checkpoint,
        10 => ToEnclave::OpenCheckpoint(r.blob("checkpoint")?.to_vec()),
        11 => ToEnclave::ResumeAt(r.u64("resume")?, r.flag("resume")?),
        12 => ToEnclave::FlushLoss,
        13 => ToEnclave::Export,
        14 => ToEnclave::Announced,
        15 => ToEnclave::JobDone(JobReply {
            own: r.tensor(ring)?,
            peer: r.tensor(ring)?,
            dealer: r.tensor(ring)?,
        }),
        16 => ToEnclave::OcallFailed(r.str("ocall error")?),
        17 => ToEnclave::Shutdown,
        18 => ToEnclave::SealedReceipt,
        19 => ToEnclave::AcceptReceipt(Receipt {
            step: r.u64("receipt")?,
            mac: r.arr("receipt")?,
        }),
        20 => ToEnclave::ServiceKey(r.arr("nonce")?),
        21 => ToEnclave::Provision(r.blob("provisioned key")?.to_vec()),
        k => return Err(WireError::Kind(k)),
    };
    done(r)?;
    Ok(m)
}

/// Encodes an enclave-to-host message.
pub fn encode_from_enclave(m: &FromEnclave) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_from_enclave_into(m, &mut buf);
    buf
}

/// Encodes an enclave-to-host message into `buf` (see [`encode_to_enclave_into`]).
pub fn encode_from_enclave_into(m: &FromEnclave, buf: &mut Vec<u8>) {
    let mut w = start(buf);
    let kind = match m {
        FromEnclave::ReportData(d) => {
            w.bytes(d);
            1
        }
        FromEnclave::Hello(h) => {
            w.hello(h);
            2
        }
        FromEnclave::Finished(k) => {
            put_wrapped(&mut w, k);
            3
        }
        FromEnclave::Done => 4,
        FromEnclave::Service {
            public,
            report_data,
        } => {
            w.bytes(public);
            w.bytes(report_data);
            16
        }
        FromEnclave::Step(s) => {
            w.u64(s.step);
            w.u64(s.epoch);
            w.u64(s.images as u64);
            w.f32(s.lr);
            put_window(&mut w, &s.loss);
            5
        }
        FromEnclave::Eval(e) => {
            w.u64(e.step);
            w.u64(e.epoch);
            w.f32(e.loss);
            w.u64(e.accuracy.to_bits());
            w.u64(e.images as u64);
            6
        }
        FromEnclave::Tag(t) => {
            w.bytes(t);
            7
        }
        FromEnclave::Sealed(b) => {
            w.blob(b);
            8
        }
        FromEnclave::Opened(s) => {
            w.u64(*s);
            9
        }
        FromEnclave::Receipt(r) => {
            w.u64(r.step);
            w.bytes(&r.mac);
            15
        }
        FromEnclave::Loss(l) => {
            put_window(&mut w, l);
            10
        }
        FromEnclave::Export(release) => {
            match release {
                ModelRelease::Plain(e) => {
                    w.u8(0);
                    w.blob(&encode_export(e));
                }
                ModelRelease::Sealed(bytes) => {
                    w.u8(1);
                    w.blob(bytes);
                }
            }
            11
        }
        FromEnclave::Error(f, msg) => {
            w.u8(FAULTS.iter().position(|x| x == f).expect("listed") as u8);
            w.str(msg);
            12
        }
        FromEnclave::Announce(h) => {
            w.header(h);
            13
        }
        FromEnclave::RunJob(j) => {
            w.header(&j.header);
            w.u64(j.terms.len() as u64);
            for (a, b) in &j.terms {
                w.tensor(a.tensor());
                w.tensor(b.tensor());
            }
            w.tensor(j.pad.tensor());
            14
        }
    };
    frame(kind, w, buf)
}

/// Decodes an enclave-to-host body of `kind`.
pub fn decode_from_enclave(kind: u8, body: &[u8], ring: Ring) -> Result<FromEnclave, WireError> {
    let mut r = R(body);
    let m = match kind {
        1 => FromEnclave::ReportData(r.arr("report data")?),
        2 => FromEnclave::Hello(r.hello()?),
        3 => FromEnclave::Finished(get_wrapped(&mut r)?),
        4 => FromEnclave::Done,
        16 => FromEnclave::Service {
            public: r.arr("service key")?,
            report_data: r.arr("service key")?,
        },
        5 => FromEnclave::Step(StepReport {
            step: r.u64("step report")?,
            epoch: r.u64("step report")?,
            images: r.u64("step report")? as usize,
            lr: r.f32("step report")?,
            loss: get_window(&mut r)?,
        }),
        6 => FromEnclave::Eval(EvalReport {
            step: r.u64("evaluation")?,
            epoch: r.u64("evaluation")?,
            loss: r.f32("evaluation")?,
            accuracy: f64::from_bits(r.u64("evaluation")?),
            images: r.u64("evaluation")? as usize,
        }),
        7 => FromEnclave::Tag(r.arr("state tag")?),
        8 => FromEnclave::Sealed(r.blob("sealed checkpoint")?.to_vec()),
        9 => FromEnclave::Opened(r.u64("opened checkpoint")?),
        15 => FromEnclave::Receipt(Receipt {
            step: r.u64("receipt")?,
            mac: r.arr("receipt")?,
        }),
        10 => FromEnclave::Loss(get_window(&mut r)?),
        11 => FromEnclave::Export(match r.u8("export")? {
            0 => {
                ModelRelease::Plain(decode_export(r.blob("export")?).map_err(|e| bad("export", e))?)
            }
            1 => ModelRelease::Sealed(r.blob("sealed export")?.to_vec()),
            k => return Err(bad("export", format!("kind {k}"))),
        }),
        12 => {
            let f = usize::from(r.u8("error")?);
            let fault = *FAULTS
                .get(f)
                .ok_or_else(|| bad("error", format!("fault {f}")))?;
            FromEnclave::Error(fault, r.str("error")?)
        }
        13 => FromEnclave::Announce(r.header()?),
        14 => {
            let header = r.header()?;
            let n = r.u64("device job")?;
            if n > 16 {
                return Err(WireError::Limit(format!("{n} terms")));
            }
            let mut terms = Vec::new();
            for _ in 0..n {
                terms.push((r.tensor(ring)?, r.tensor(ring)?));
            }
            let pad = r.tensor(ring)?;
            FromEnclave::RunJob(DeviceJob::from_parts(header, terms, pad))
        }
        k => return Err(WireError::Kind(k)),
    };
    done(r)?;
    Ok(m)
}
