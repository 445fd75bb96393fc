//! The owners' secrets: the model owner's key files and the sealed model, and the data
//! owner's job seed.
//!
//! The model owner's key files and the sealed model: `goten keygen --owner` writes a key pair,
//! a job names the public half (`--model-owner`), and `goten decrypt-model` opens the sealed
//! export with the secret half.
//!
//! Where it sits: the model owner's machine (key pair, decryption) and job preparation (the
//! public key enters the job's fingerprint and the enclaves' configuration). The secret never
//! reaches a party: only the owner's own commands read `owner.key`.

use std::path::{Path, PathBuf};

use goten_enclave::hpke::KeyPair;
use goten_enclave::session::model_out;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// `owner.pub`: what the owner hands to whoever runs the job.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicFile {
    /// HPKE X25519 public key, hex.
    model_owner_public_key: String,
}

/// `owner.key`: the owner's secret (mode 0600, never overwritten).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFile {
    model_owner_secret_key: String,
    model_owner_public_key: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key32(s: &str, path: &Path, what: &str) -> Result<[u8; 32], RuntimeError> {
    let s = s.trim();
    let bad = || {
        RuntimeError::config(format!(
            "{}: {what} must be 32 bytes of hex (64 digits)",
            path.display()
        ))
    };
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn read_text(path: &Path, what: &str) -> Result<String, RuntimeError> {
    std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::storage(format!("cannot read the {what} {}", path.display()), e))
}

/// Writes a fresh owner key pair as `owner.key` (secret) and `owner.pub` into `dir`; returns
/// both paths and the public key.
pub fn write_owner_keys(dir: &Path) -> Result<(PathBuf, PathBuf, [u8; 32]), RuntimeError> {
    let io = |what: String| move |e| RuntimeError::storage(what, e);
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let kp = KeyPair::generate();
    let public = kp.public_key();
    let secret = SecretFile {
        model_owner_secret_key: hex(kp.secret_bytes().as_slice()),
        model_owner_public_key: hex(&public),
    };
    let text = format!(
        "# goten model owner key: SECRET. It opens every model sealed to owner.pub; keep it on the owner's machine.\n{}",
        toml::to_string(&secret).expect("plain struct serializes")
    );
    let key_path = dir.join("owner.key");
    crate::keys::write_secret(&key_path, text.as_bytes()).map_err(io(format!(
        "cannot create {} (it must not exist yet)",
        key_path.display()
    )))?;
    let pub_text = format!(
        "# goten model owner public key: give it to whoever runs the training job (--model-owner).\n{}",
        toml::to_string(&PublicFile {
            model_owner_public_key: hex(&public),
        })
        .expect("plain struct serializes")
    );
    let pub_path = dir.join("owner.pub");
    std::fs::write(&pub_path, pub_text)
        .map_err(io(format!("cannot write {}", pub_path.display())))?;
    Ok((key_path, pub_path, public))
}

/// Writes a fresh job secret seed for a data owner as `job.seed` (mode 0600, never
/// overwritten) into `dir`.
pub fn write_job_seed(dir: &Path) -> Result<PathBuf, RuntimeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::storage(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join("job.seed");
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|e| RuntimeError::storage("no entropy", std::io::Error::other(e.to_string())))?;
    crate::keys::write_secret(&path, seed.as_slice()).map_err(|e| {
        RuntimeError::storage(
            format!("cannot create {} (it must not exist yet)", path.display()),
            e,
        )
    })?;
    Ok(path)
}

/// The public key in an `owner.pub` file (an `owner.key` file is accepted too, with a warning
/// left to the caller: it should not travel).
pub fn read_owner_public(path: &Path) -> Result<[u8; 32], RuntimeError> {
    let text = read_text(path, "model owner's public key")?;
    if let Ok(p) = toml::from_str::<PublicFile>(&text) {
        return key32(&p.model_owner_public_key, path, "model_owner_public_key");
    }
    if toml::from_str::<SecretFile>(&text).is_ok() {
        return Err(RuntimeError::config(format!(
            "{} is the model owner's SECRET key: pass owner.pub, and keep owner.key on the owner's machine",
            path.display()
        )));
    }
    Err(RuntimeError::config(format!(
        "{} is not a model owner public key (goten keygen --owner writes owner.pub)",
        path.display()
    )))
}

/// The owner's key pair from `owner.key`.
pub fn read_owner_secret(path: &Path) -> Result<KeyPair, RuntimeError> {
    let text = read_text(path, "model owner's key")?;
    let f: SecretFile = toml::from_str(&text).map_err(|e| {
        RuntimeError::config(format!(
            "{} is not a model owner key (goten keygen --owner writes owner.key): {}",
            path.display(),
            e.message()
        ))
    })?;
    let kp = KeyPair::from_secret(&key32(
        &f.model_owner_secret_key,
        path,
        "model_owner_secret_key",
    )?)
    .map_err(|e| RuntimeError::config(format!("{}: {e}", path.display())))?;
    if hex(&kp.public_key()) != f.model_owner_public_key.trim().to_ascii_lowercase() {
        return Err(RuntimeError::config(format!(
            "{}: the secret and public keys do not belong together (edited or corrupted)",
            path.display()
        )));
    }
    Ok(kp)
}

/// `goten decrypt-model`: opens the sealed model at `input` with the owner's key at `key` and
/// writes the safetensors file a plaintext export would have been to `out`; returns the steps
/// the model was trained for.
pub fn decrypt_model(input: &Path, key: &Path, out: &Path) -> Result<u64, RuntimeError> {
    let kp = read_owner_secret(key)?;
    let bytes = std::fs::read(input)
        .map_err(|e| RuntimeError::storage(format!("cannot read {}", input.display()), e))?;
    let export = model_out::open_model(&bytes, &kp)
        .map_err(|e| RuntimeError::data(input.display().to_string(), e))?;
    crate::model_io::write(&export, out)?;
    Ok(export.steps)
}

/// The model owner's model from a safetensors file with goten's export names (from `goten
/// decrypt-model`, a plain export, or PyTorch): checked against the `kind` architecture.
pub fn read_export(
    kind: goten_enclave::nn::ModelKind,
    path: &Path,
) -> Result<goten_enclave::session::Export, RuntimeError> {
    let mut model = kind
        .build(0, goten_data::CLASSES)
        .map_err(|e| RuntimeError::config(e.to_string()))?;
    crate::model_io::read(&mut model, path)?;
    Ok(goten_enclave::session::Export {
        tensors: goten_enclave::nn::export::export(&model),
        batchnorm: goten_enclave::nn::export::batchnorm_prefixes(&model),
        steps: 0,
    })
}
