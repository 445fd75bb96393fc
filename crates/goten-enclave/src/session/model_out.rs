//! The trained model's one release: to its owner, sealed with HPKE to the owner's public key.
//!
//! Where it sits: the `export` ecall. The job names the model owner's public key (it is part of
//! the job's fingerprint, so both enclaves and every resume agree on it); the enclave encodes the
//! export ([`encode_export`]), seals it, and the host writes ciphertext it cannot read. The owner
//! opens it with `goten decrypt-model`, which decodes it here ([`open_model`]) and writes the
//! same safetensors file a plaintext export gives. Plaintext leaves only where the policy allows
//! it: plain mode (nothing is protected) or an explicit `--danger-plaintext-export`.

use crate::hpke::{self, KeyPair};
use crate::nn::export::Named;
use crate::session::{Export, SessionError};

/// The first bytes of a sealed model file.
pub const SEALED_MAGIC: &[u8; 16] = b"goten-model/v1\0\0";
/// HPKE `info` of a sealed model: a ciphertext made for another purpose does not open as one.
const INFO: &[u8] = b"goten/model-export/v1";

/// What the export ecall returns.
pub enum ModelRelease {
    /// Plaintext weights (plain mode, or the user's explicit danger flag).
    Plain(Export),
    /// A sealed model file: [`SEALED_MAGIC`] || HPKE(enc || ciphertext of [`encode_export`]).
    Sealed(Vec<u8>),
}

impl std::fmt::Debug for ModelRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRelease::Plain(_) => f.write_str("ModelRelease::Plain(<weights>)"),
            ModelRelease::Sealed(b) => write!(f, "ModelRelease::Sealed({} bytes)", b.len()),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A canonical byte encoding of an export: steps, tensors (name, shape, f32 data, all
/// little-endian with u64 lengths), batch-norm prefixes.
pub fn encode_export(e: &Export) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&e.steps.to_le_bytes());
    out.extend_from_slice(&(e.tensors.len() as u64).to_le_bytes());
    for t in &e.tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u64).to_le_bytes());
        t.shape
            .iter()
            .for_each(|&d| out.extend_from_slice(&(d as u64).to_le_bytes()));
        t.data
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    }
    out.extend_from_slice(&(e.batchnorm.len() as u64).to_le_bytes());
    e.batchnorm.iter().for_each(|p| put_str(&mut out, p));
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "truncated: {n} bytes needed, {} left",
                self.0.len()
            ));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// A count or length no larger than what the remaining bytes could hold.
    fn len(&mut self, unit: usize) -> Result<usize, String> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(unit.max(1)) <= self.0.len())
            .ok_or_else(|| format!("length {n} exceeds the {} bytes left", self.0.len()))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.len(1)?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }
}

/// Decodes [`encode_export`]'s bytes; every length is checked against what is left.
pub fn decode_export(bytes: &[u8]) -> Result<Export, String> {
    let mut r = Reader(bytes);
    let steps = r.u64()?;
    let n = r.len(8)?;
    let mut tensors = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let rank = r.len(8)?;
        let shape = (0..rank)
            .map(|_| r.u64().map(|d| d as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&c| c.saturating_mul(4) <= r.0.len())
            .ok_or_else(|| format!("tensor {name}: shape {shape:?} exceeds the bytes left"))?;
        let data = r
            .take(4 * count)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push(Named { name, shape, data });
    }
    let m = r.len(8)?;
    let batchnorm = (0..m).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
    if !r.0.is_empty() {
        return Err(format!("{} trailing bytes", r.0.len()));
    }
    Ok(Export {
        tensors,
        batchnorm,
        steps,
    })
}

/// HPKE `info` of a model the owner provisions to the serving enclaves' service key: an export
/// sealed to an owner does not open as one, nor the reverse.
const PROVISION_INFO: &[u8] = b"goten/model-provision/v1";

fn seal_with(e: &Export, to: &[u8; 32], info: &[u8]) -> Result<Vec<u8>, SessionError> {
    let body = zeroize::Zeroizing::new(encode_export(e));
    let sealed = hpke::seal(to, info, SEALED_MAGIC, &body)
        .map_err(|err| SessionError::Config(format!("the recipient's public key: {err}")))?;
    Ok([SEALED_MAGIC.as_slice(), &sealed].concat())
}

fn open_with(file: &[u8], key: &KeyPair, info: &[u8], whose: &str) -> Result<Export, String> {
    let body = file
        .strip_prefix(SEALED_MAGIC.as_slice())
        .ok_or("not a sealed goten model (wrong magic)")?;
    let plain = key.open(info, SEALED_MAGIC, body).map_err(|e| match e {
        hpke::HpkeError::Open => {
            format!("cannot open it: sealed to another {whose}, or the bytes were altered")
        }
        other => other.to_string(),
    })?;
    decode_export(&plain)
}

/// Seals an export to the model owner's public key.
pub fn seal_model(e: &Export, owner: &[u8; 32]) -> Result<Vec<u8>, SessionError> {
    seal_with(e, owner, INFO)
}

/// The model owner's side: opens a sealed model file with the owner's key pair.
pub fn open_model(file: &[u8], owner: &KeyPair) -> Result<Export, String> {
    open_with(file, owner, INFO, "owner key")
}

/// The model owner's side of serving: seals a model to the attested service key.
pub fn seal_model_to_service(e: &Export, service: &[u8; 32]) -> Result<Vec<u8>, SessionError> {
    seal_with(e, service, PROVISION_INFO)
}

/// The serving enclave's side: opens a model sealed to its service key.
pub(crate) fn open_provisioned_model(file: &[u8], service: &KeyPair) -> Result<Export, String> {
    open_with(file, service, PROVISION_INFO, "service key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Export {
        Export {
            tensors: vec![
                Named {
                    name: "features.0.weight".into(),
                    shape: vec![2, 3],
                    data: vec![0.5, -1.0, 2.0, 3.25, 0.0, -0.125],
                },
                Named {
                    name: "classifier.bias".into(),
                    shape: vec![],
                    data: vec![7.0],
                },
            ],
            batchnorm: vec!["features.1".into()],
            steps: 42,
        }
    }

    fn same(a: &Export, b: &Export) -> bool {
        a.steps == b.steps
            && a.batchnorm == b.batchnorm
            && a.tensors.len() == b.tensors.len()
            && a.tensors.iter().zip(&b.tensors).all(|(x, y)| {
                x.name == y.name
                    && x.shape == y.shape
                    && x.data
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.data.iter().map(|v| v.to_bits()))
            })
    }

    #[test]
    fn exports_round_trip_and_malformed_bytes_are_refused() {
        let e = sample();
        let b = encode_export(&e);
        assert!(same(&decode_export(&b).unwrap(), &e));
        for cut in [0, 7, 20, b.len() - 1] {
            assert!(decode_export(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(
            decode_export(&[b.as_slice(), &[0]].concat())
                .unwrap_err()
                .contains("trailing")
        );
        // A huge declared count is refused, not allocated.
        let mut huge = b.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_export(&huge).is_err());
    }

    #[test]
    fn a_model_for_the_service_key_and_an_export_for_the_owner_are_not_interchangeable() {
        let service = KeyPair::generate();
        let to_service = seal_model_to_service(&sample(), &service.public_key()).unwrap();
        assert_eq!(
            encode_export(&open_provisioned_model(&to_service, &service).unwrap()),
            encode_export(&sample())
        );
        // The same key, the other purpose: refused both ways.
        assert!(open_model(&to_service, &service).is_err());
        let to_owner = seal_model(&sample(), &service.public_key()).unwrap();
        assert!(open_provisioned_model(&to_owner, &service).is_err());
        assert!(open_provisioned_model(&to_service, &KeyPair::generate()).is_err());
    }

    #[test]
    fn only_the_owner_opens_a_sealed_model() {
        let owner = KeyPair::generate();
        let sealed = seal_model(&sample(), &owner.public_key()).unwrap();
        assert!(sealed.starts_with(SEALED_MAGIC));
        // No weight's bytes appear in the file.
        assert!(!sealed.windows(4).any(|w| w == 3.25f32.to_le_bytes()));
        assert!(same(&open_model(&sealed, &owner).unwrap(), &sample()));
        let e = open_model(&sealed, &KeyPair::generate()).unwrap_err();
        assert!(e.contains("another owner key"), "{e}");
        let mut t = sealed.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open_model(&t, &owner).is_err());
        assert!(
            open_model(b"safetensors...", &owner)
                .unwrap_err()
                .contains("magic")
        );
    }
}
