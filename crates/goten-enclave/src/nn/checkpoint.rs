//! Sealed checkpoints: the full training state, encrypted and authenticated by the enclave.
//!
//! Where it sits: at the end of training and every `--checkpoint-every` steps, the enclave
//! serialises its state and seals it with AES-256-GCM under a platform sealing key (in SGX, the
//! MRENCLAVE-bound sealing key; in simulation, a key the simulated platform keeps in its own
//! folder, outside every run folder). The associated data binds the format version and the enclave's role, so a
//! checkpoint cannot be altered, truncated, or swapped between E0 and E1 undetected: any tag
//! failure is a hard error. The state includes the job secret behind the rounding noise, so a
//! resumed run continues bit for bit.
//!
//! Plaintext layout (little-endian): `GCKP`, version u32 = 4, job fingerprint [32], step u64,
//! epoch u64, PRG step u64, images u64, peer-sealed step u64, job secret flag u8 (+ the job
//! secret wrapped under the sealing key with the file's nonce, 48 bytes), model name (u32
//! length and bytes), then each parameter (u64 length and f32 values, a momentum flag and
//! buffer) in layer order, the batch-norm statistics, and the input statistics: flag u8, then
//! mean and std as u64 length and f32 values. Version 3 files (no input statistics) are still
//! read.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use goten_field::SecretKey;
use zeroize::Zeroizing;

use super::NnError;
use super::layers::Layer;
use super::model::{Model, ModelKind};
use super::spec::Arch;

const MAGIC: &[u8; 4] = b"GCKP";
const FILE_MAGIC: &[u8; 8] = b"GOTENSLD";
const VERSION: u32 = 5;
/// Format 4 (no class count: the caller's), still read.
const VERSION_4: u32 = 4;
/// Format 3 (no input statistics, no class count), still read.
const VERSION_3: u32 = 3;

/// Where training stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Steps done.
    pub step: u64,
    /// Epoch of the next step.
    pub epoch: u64,
    /// PRG step counter of the protocol backend (goten mode).
    pub prg_step: u64,
    /// Images trained on.
    pub images: u64,
    /// The newest step the peer enclave confirmed it had sealed (goten mode): a resume from
    /// an older step means the peer's files were rolled back.
    pub peer_sealed: u64,
}

/// Why a checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Authentication failed.
    #[error(
        "checkpoint fails authentication: it was tampered with, corrupted, or sealed by another platform or party"
    )]
    Tampered,
    /// Not a checkpoint file.
    #[error("not a goten checkpoint (bad magic or truncated header)")]
    NotACheckpoint,
    /// Made for another job.
    #[error(
        "checkpoint belongs to a different job (model, seed, data or hyper-parameters differ); start a new run or use the original settings"
    )]
    OtherJob,
    /// Decrypted but inconsistent with the model.
    #[error("checkpoint content is inconsistent: {0}")]
    Malformed(String),
    /// Model construction failed.
    #[error(transparent)]
    Nn(#[from] NnError),
}

fn tensors(m: &mut Model) -> Vec<&mut Vec<f32>> {
    // Every piece of state, in a fixed order; momentum buffers are handled by the caller.
    let mut out: Vec<&mut Vec<f32>> = Vec::new();
    for l in m.layers_mut() {
        if let Layer::BatchNorm {
            running_mean,
            running_var,
            ..
        } = l
        {
            out.push(running_mean);
            out.push(running_var);
        }
    }
    out
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn floats(&mut self, v: &[f32]) {
        self.u64(v.len() as u64);
        v.iter()
            .for_each(|x| self.0.extend_from_slice(&x.to_le_bytes()));
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CheckpointError> {
        if self.0.len() < n {
            return Err(CheckpointError::Malformed("truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn floats_into(&mut self, dst: &mut [f32], what: &str) -> Result<(), CheckpointError> {
        let n = self.u64()?;
        if n != dst.len() as u64 {
            return Err(CheckpointError::Malformed(format!(
                "{what}: {n} values, the model needs {}",
                dst.len()
            )));
        }
        let raw = self.take(dst.len() * 4)?;
        for (d, c) in dst.iter_mut().zip(raw.chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }

    /// A length-prefixed run of at most 64 floats (per-channel statistics).
    fn floats_vec(&mut self, dst: &mut Vec<f32>, what: &str) -> Result<(), CheckpointError> {
        let n = self.u64()?;
        if n > 64 {
            return Err(CheckpointError::Malformed(format!("{what}: {n} channels")));
        }
        dst.resize(n as usize, 0.0);
        let raw = self.take(dst.len() * 4)?;
        for (d, c) in dst.iter_mut().zip(raw.chunks_exact(4)) {
            *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
}

fn aad(role: &str) -> Vec<u8> {
    [b"goten/checkpoint/v1/".as_slice(), role.as_bytes()].concat()
}

fn cipher(key: &SecretKey) -> Aes256Gcm {
    key.aes256gcm()
}

fn secret_aad(role: &str) -> Vec<u8> {
    [aad(role).as_slice(), b"/job-secret"].concat()
}

/// Seals `model` and `progress` (and the job secret, if any) for `role` ("E0", "E1" or
/// "enclave").
pub fn seal(
    model: &mut Model,
    progress: Progress,
    fingerprint: [u8; 32],
    job_secret: Option<&SecretKey>,
    key: &SecretKey,
    role: &str,
) -> Result<Vec<u8>, CheckpointError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)
        .map_err(|e| CheckpointError::Malformed(format!("no entropy: {e}")))?;
    let mut w = Writer(Vec::new());
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.0.extend_from_slice(&fingerprint);
    for v in [
        progress.step,
        progress.epoch,
        progress.prg_step,
        progress.images,
        progress.peer_sealed,
    ] {
        w.u64(v);
    }
    match job_secret {
        Some(s) => {
            w.0.push(1);
            w.0.extend_from_slice(&s.wrap(key, &nonce, &secret_aad(role)));
        }
        None => w.0.push(0),
    }
    let name = model.arch_name().as_bytes().to_vec();
    w.u32(name.len() as u32);
    w.0.extend_from_slice(&name);
    // The class count and a model file's description: serving rebuilds the network from the
    // checkpoint alone.
    w.u32(model.outputs() as u32);
    match model.file_spec() {
        Some(spec) => {
            w.0.push(1);
            let b = super::spec_codec::encode(spec);
            w.u32(b.len() as u32);
            w.0.extend_from_slice(&b);
        }
        None => w.0.push(0),
    }
    for l in model.layers_mut() {
        for p in l.params_mut() {
            w.floats(p.value.expose());
            match &p.momentum {
                Some(m) => {
                    w.0.push(1);
                    w.floats(m.expose());
                }
                None => w.0.push(0),
            }
        }
    }
    for t in tensors(model) {
        w.floats(t);
    }
    match model.input_norm() {
        Some((m, s)) => {
            w.0.push(1);
            w.floats(m);
            w.floats(s);
        }
        None => w.0.push(0),
    }
    let plain = Zeroizing::new(w.0);
    let ct = cipher(key)
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad(role),
            },
        )
        .map_err(|_| CheckpointError::Malformed("encryption failed".into()))?;
    Ok([FILE_MAGIC.as_slice(), &nonce, &ct].concat())
}

/// What an unsealed checkpoint restores.
pub struct Restored {
    /// The model with its weights, momentum and statistics.
    pub model: Model,
    /// Where training stands.
    pub progress: Progress,
    /// The job secret (goten mode).
    pub job_secret: Option<SecretKey>,
}

/// Unseals a checkpoint of `role`, checks it belongs to the job `fingerprint`, and restores an
/// `arch` model built from `seed` (for its structure).
pub fn unseal(
    bytes: &[u8],
    key: &SecretKey,
    role: &str,
    fingerprint: [u8; 32],
    arch: &Arch,
    seed: u64,
    classes: usize,
) -> Result<Restored, CheckpointError> {
    unseal_with(bytes, key, role, Some((fingerprint, arch)), seed, classes)
}

/// Opens a checkpoint of any job of this platform and role, for serving its model: the model
/// kind comes from the sealed content (every weight is overwritten, so no seed matters). E0
/// and E1 then compare state tags, so a host cannot hand them different checkpoints.
pub fn unseal_for_serving(
    bytes: &[u8],
    key: &SecretKey,
    role: &str,
    classes: usize,
) -> Result<Restored, CheckpointError> {
    unseal_with(bytes, key, role, None, 0, classes)
}

fn unseal_with(
    bytes: &[u8],
    key: &SecretKey,
    role: &str,
    expect: Option<([u8; 32], &Arch)>,
    seed: u64,
    classes: usize,
) -> Result<Restored, CheckpointError> {
    if bytes.len() < FILE_MAGIC.len() + 12 || &bytes[..8] != FILE_MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    let nonce: [u8; 12] = bytes[8..20].try_into().expect("12 bytes");
    let plain = Zeroizing::new(
        cipher(key)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &bytes[20..],
                    aad: &aad(role),
                },
            )
            .map_err(|_| CheckpointError::Tampered)?,
    );
    let mut r = Reader(&plain);
    if r.take(4)? != MAGIC {
        return Err(CheckpointError::NotACheckpoint);
    }
    let v = r.u32()?;
    if ![VERSION, VERSION_4, VERSION_3].contains(&v) {
        return Err(CheckpointError::Malformed(format!(
            "format version {v}, this build reads {VERSION}: resume with the goten that wrote it, or start over"
        )));
    }
    let fingerprint = r.take(32)?;
    if expect.is_some_and(|(f, _)| fingerprint != f) {
        return Err(CheckpointError::OtherJob);
    }
    let progress = Progress {
        step: r.u64()?,
        epoch: r.u64()?,
        prg_step: r.u64()?,
        images: r.u64()?,
        peer_sealed: r.u64()?,
    };
    let job_secret = match r.take(1)?[0] {
        0 => None,
        1 => Some(
            SecretKey::unwrap(
                key,
                &nonce,
                &secret_aad(role),
                r.take(goten_field::prg::WRAPPED_KEY_BYTES)?,
            )
            .ok_or(CheckpointError::Tampered)?,
        ),
        f => return Err(CheckpointError::Malformed(format!("bad flag {f}"))),
    };
    let n = r.u32()? as usize;
    let name = String::from_utf8_lossy(r.take(n)?).into_owned();
    let (classes, file) = if v == VERSION {
        let stored = r.u32()? as usize;
        if expect.is_some() && stored != classes {
            return Err(CheckpointError::OtherJob);
        }
        let file = match r.take(1)?[0] {
            0 => None,
            1 => {
                let n = r.u32()? as usize;
                let spec = super::spec_codec::decode(r.take(n)?)
                    .map_err(|e| CheckpointError::Malformed(format!("model description: {e}")))?;
                Some(Arch::File(std::sync::Arc::new(spec)))
            }
            f => return Err(CheckpointError::Malformed(format!("bad flag {f}"))),
        };
        (stored, file)
    } else {
        (classes, None)
    };
    let arch = match (expect, file) {
        (Some((_, arch)), _) if name != arch.name() => return Err(CheckpointError::OtherJob),
        (Some((_, arch)), Some(file)) if file != *arch => return Err(CheckpointError::OtherJob),
        (Some((_, arch)), _) => arch.clone(),
        (None, Some(file)) if file.name() == name => file,
        (None, Some(_)) => {
            return Err(CheckpointError::Malformed(
                "the model description does not match its name".into(),
            ));
        }
        (None, None) => Arch::Builtin(ModelKind::parse(&name).ok_or_else(|| {
            CheckpointError::Malformed(format!(
                "a model {name:?} that is neither built in nor described in the checkpoint (a model file's network sealed by an older goten: train it again to serve it)"
            ))
        })?),
    };
    let mut model = arch.build(seed, classes)?;
    for (li, l) in model.layers_mut().iter_mut().enumerate() {
        for p in l.params_mut() {
            r.floats_into(p.value.expose_mut(), &format!("layer {li} weights"))?;
            match r.take(1)?[0] {
                0 => p.momentum = None,
                1 => {
                    let mut m = crate::SecretTensor::zeros(p.value.shape());
                    r.floats_into(m.expose_mut(), &format!("layer {li} momentum"))?;
                    p.momentum = Some(m);
                }
                f => return Err(CheckpointError::Malformed(format!("bad flag {f}"))),
            }
        }
    }
    for t in tensors(&mut model) {
        r.floats_into(t, "batch-norm statistics")?;
    }
    if v != VERSION_3 {
        match r.take(1)?[0] {
            0 => {}
            1 => {
                let mut m = Vec::new();
                let mut s = Vec::new();
                r.floats_vec(&mut m, "input statistics")?;
                r.floats_vec(&mut s, "input statistics")?;
                model.set_input_norm(m, s);
            }
            f => return Err(CheckpointError::Malformed(format!("bad flag {f}"))),
        }
    }
    if !r.0.is_empty() {
        return Err(CheckpointError::Malformed(format!(
            "{} trailing bytes",
            r.0.len()
        )));
    }
    Ok(Restored {
        model,
        progress,
        job_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The training data's input statistics travel with the model, so serving normalises
    /// queries as training did; a flipped byte is refused.
    #[test]
    fn input_statistics_are_sealed_with_the_model() {
        let key = SecretKey::from_bytes([9; 32]);
        let mut m = ModelKind::Small.build(1, 10).unwrap();
        m.set_input_norm(vec![0.5, 0.4, 0.3], vec![0.2, 0.25, 0.3]);
        let sealed = seal(&mut m, Progress::default(), [1; 32], None, &key, "E0").unwrap();
        let r = unseal_for_serving(&sealed, &key, "E0", 10).unwrap();
        let (mean, std) = r.model.input_norm().expect("statistics restored");
        assert_eq!((mean, std), (&[0.5, 0.4, 0.3][..], &[0.2, 0.25, 0.3][..]));
        assert_eq!(r.model.state_digest(), m.state_digest());
        let mut bad = sealed.clone();
        let last = bad.len() - 20;
        bad[last] ^= 1;
        assert!(matches!(
            unseal_for_serving(&bad, &key, "E0", 10),
            Err(CheckpointError::Tampered)
        ));
        // Without statistics (an owner-provisioned model): none come back.
        let mut plain = ModelKind::Small.build(1, 10).unwrap();
        let sealed = seal(&mut plain, Progress::default(), [1; 32], None, &key, "E0").unwrap();
        let r = unseal_for_serving(&sealed, &key, "E0", 10).unwrap();
        assert!(r.model.input_norm().is_none());
    }

    /// The class count travels in the checkpoint (serving needs no job configuration);
    /// format 4 files, which lack it, still read with the caller's count.
    #[test]
    fn the_class_count_is_sealed_and_format_4_still_reads() {
        let key = SecretKey::from_bytes([7; 32]);
        let mut m = ModelKind::Small.build(3, 100).unwrap();
        let sealed = seal(&mut m, Progress::default(), [2; 32], None, &key, "E1").unwrap();
        let r = unseal_for_serving(&sealed, &key, "E1", 10).unwrap();
        assert_eq!(r.model.outputs(), 100);
        assert_eq!(r.model.state_digest(), m.state_digest());
        let arch = Arch::Builtin(ModelKind::Small);
        assert!(matches!(
            unseal(&sealed, &key, "E1", [2; 32], &arch, 0, 10),
            Err(CheckpointError::OtherJob)
        ));
        assert!(unseal(&sealed, &key, "E1", [2; 32], &arch, 0, 100).is_ok());
        // The same checkpoint in format 4: version 4, no class count and no description flag
        // after the name.
        let nonce: [u8; 12] = sealed[8..20].try_into().unwrap();
        let mut plain = cipher(&key)
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[20..],
                    aad: &aad("E1"),
                },
            )
            .unwrap();
        plain[4..8].copy_from_slice(&4u32.to_le_bytes());
        let at = 4 + 4 + 32 + 40 + 1 + 4 + "small".len();
        assert_eq!(plain[at..at + 5], [100, 0, 0, 0, 0]);
        plain.drain(at..at + 5);
        let ct = cipher(&key)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: &aad("E1"),
                },
            )
            .unwrap();
        let v4 = [FILE_MAGIC.as_slice(), &nonce, &ct].concat();
        let r = unseal_for_serving(&v4, &key, "E1", 100).unwrap();
        assert_eq!(r.model.state_digest(), m.state_digest());
    }

    /// A model file's network travels in its checkpoint: serving rebuilds it without the
    /// file, and a resume under an edited description is another job.
    #[test]
    fn a_model_files_description_is_sealed_with_it() {
        use super::super::{LayerSpec, NetSpec};
        let key = SecretKey::from_bytes([5; 32]);
        let spec = |out| NetSpec {
            name: "tiny".into(),
            input: [1, 8, 8],
            layers: vec![
                LayerSpec::Conv {
                    out,
                    kernel: 3,
                    stride: 1,
                    padding: 1,
                    bias: true,
                    name: None,
                },
                LayerSpec::Relu,
                LayerSpec::GlobalAvgPool,
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    out: None,
                    bias: true,
                    name: None,
                },
            ],
        };
        let arch = Arch::File(std::sync::Arc::new(spec(4)));
        let mut m = arch.build(1, 3).unwrap();
        let sealed = seal(&mut m, Progress::default(), [3; 32], None, &key, "E0").unwrap();
        let r = unseal_for_serving(&sealed, &key, "E0", 10).unwrap();
        assert_eq!(r.model.file_spec(), Some(&spec(4)));
        assert_eq!((r.model.outputs(), r.model.input_shape()), (3, [1, 8, 8]));
        assert_eq!(r.model.state_digest(), m.state_digest());
        assert!(unseal(&sealed, &key, "E0", [3; 32], &arch, 0, 3).is_ok());
        let edited = Arch::File(std::sync::Arc::new(spec(5)));
        assert!(matches!(
            unseal(&sealed, &key, "E0", [3; 32], &edited, 0, 3),
            Err(CheckpointError::OtherJob)
        ));
    }
}
