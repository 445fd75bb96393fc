//! One-shot HPKE (RFC 9180, base mode) for the client channels: secrets sealed to an enclave's
//! attested service key, and the trained model sealed to its owner's key.
//!
//! Where it sits: at the enclave's edge to its clients (data owner, model owner). The suite is
//! fixed: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (RFC 9180 ids 0x0020, 0x0001,
//! 0x0002), so a client in another language needs nothing but those three ids. A sealed message
//! is `enc (32 bytes) || ciphertext`; the `info` string names what it is for, so a ciphertext
//! made for one purpose cannot be opened as another.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use thiserror::Error;
use zeroize::Zeroizing;

/// The suite, as a human reads it.
pub const SUITE: &str = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM";
/// Bytes of an encapsulated key at the front of a sealed message.
pub const ENC_BYTES: usize = 32;

type K = X25519HkdfSha256;

/// Why sealing or opening failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HpkeError {
    /// The recipient's public key is not a valid X25519 key.
    #[error("not a valid X25519 public key")]
    PublicKey,
    /// Shorter than an encapsulated key and a tag.
    #[error("sealed message of {0} bytes is truncated")]
    Truncated(usize),
    /// Wrong key, wrong purpose, or tampered bytes.
    #[error(
        "cannot open the sealed message: another recipient's key, another purpose, or tampered bytes"
    )]
    Open,
    /// Encryption failed (no entropy).
    #[error("HPKE encryption failed: {0}")]
    Seal(String),
}

/// Seals `plaintext` to `recipient` for the purpose `info`, authenticating `aad`.
pub fn seal(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, HpkeError> {
    let pk = <K as Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::PublicKey)?;
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, K>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
    )
    .map_err(|e| HpkeError::Seal(e.to_string()))?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Seals `plaintext` to `recipient` as [`seal`] does and also returns 32 bytes exported from
/// the same HPKE context under `export_context` (RFC 9180 section 5.3): a secret only the
/// sender and the recipient can compute, for keying the recipient's reply (as RFC 9458 keys
/// its responses) without a second key encapsulation.
pub fn seal_exporting(
    recipient: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    export_context: &[u8],
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), HpkeError> {
    let pk = <K as Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::PublicKey)?;
    let (enc, mut ctx) = hpke::setup_sender::<AesGcm256, HkdfSha256, K>(&OpModeS::Base, &pk, info)
        .map_err(|e| HpkeError::Seal(e.to_string()))?;
    let ct = ctx
        .seal(plaintext, aad)
        .map_err(|e| HpkeError::Seal(e.to_string()))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    ctx.export(export_context, &mut secret[..])
        .map_err(|e| HpkeError::Seal(e.to_string()))?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok((out, secret))
}

/// What [`KeyPair::open_exporting`] gives: the plaintext and the exported secret.
pub type OpenedExporting = (Zeroizing<Vec<u8>>, Zeroizing<[u8; 32]>);

/// An X25519 HPKE key pair. The secret half never appears in Debug output.
pub struct KeyPair {
    secret: <K as Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hpke::KeyPair(public {:02x?}.., <redacted>)",
            &self.public[..4]
        )
    }
}

impl KeyPair {
    fn from_parts(secret: <K as Kem>::PrivateKey, public: <K as Kem>::PublicKey) -> Self {
        let mut p = [0u8; 32];
        p.copy_from_slice(&public.to_bytes());
        KeyPair { secret, public: p }
    }

    /// A fresh key pair from the OS's entropy.
    pub fn generate() -> Self {
        let (sk, pk) = K::gen_keypair();
        Self::from_parts(sk, pk)
    }

    /// The key pair RFC 9180's DeriveKeyPair gives for `ikm` (at least 32 secret bytes).
    pub fn derive(ikm: &[u8]) -> Self {
        let (sk, pk) = K::derive_keypair(ikm);
        Self::from_parts(sk, pk)
    }

    /// The key pair of stored secret bytes (a model owner's key file).
    pub fn from_secret(bytes: &[u8; 32]) -> Result<Self, HpkeError> {
        let sk = <K as Kem>::PrivateKey::from_bytes(bytes).map_err(|_| HpkeError::PublicKey)?;
        let pk = K::sk_to_pk(&sk);
        Ok(Self::from_parts(sk, pk))
    }

    /// The secret bytes, for the owner's own key file (never for an enclave's keys).
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut b = Zeroizing::new([0u8; 32]);
        b.copy_from_slice(&self.secret.to_bytes());
        b
    }

    /// The public key, to publish.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens a message sealed to this key for `info` with `aad`.
    pub fn open(
        &self,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        if sealed.len() < ENC_BYTES + 16 {
            return Err(HpkeError::Truncated(sealed.len()));
        }
        let (enc, ct) = sealed.split_at(ENC_BYTES);
        let enc = <K as Kem>::EncappedKey::from_bytes(enc).map_err(|_| HpkeError::Open)?;
        hpke::single_shot_open::<AesGcm256, HkdfSha256, K>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            info,
            ct,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| HpkeError::Open)
    }

    /// Opens a message of [`seal_exporting`] and returns the secret exported under
    /// `export_context` from its context (the sender's, byte for byte).
    pub fn open_exporting(
        &self,
        info: &[u8],
        aad: &[u8],
        sealed: &[u8],
        export_context: &[u8],
    ) -> Result<OpenedExporting, HpkeError> {
        if sealed.len() < ENC_BYTES + 16 {
            return Err(HpkeError::Truncated(sealed.len()));
        }
        let (enc, ct) = sealed.split_at(ENC_BYTES);
        let enc = <K as Kem>::EncappedKey::from_bytes(enc).map_err(|_| HpkeError::Open)?;
        let mut ctx = hpke::setup_receiver::<AesGcm256, HkdfSha256, K>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            info,
        )
        .map_err(|_| HpkeError::Open)?;
        let plain = Zeroizing::new(ctx.open(ct, aad).map_err(|_| HpkeError::Open)?);
        let mut secret = Zeroizing::new([0u8; 32]);
        ctx.export(export_context, &mut secret[..])
            .map_err(|_| HpkeError::Open)?;
        Ok((plain, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_every_mismatch_fails() {
        let kp = KeyPair::generate();
        let sealed = seal(&kp.public_key(), b"purpose", b"aad", b"secret message").unwrap();
        assert_eq!(
            &kp.open(b"purpose", b"aad", &sealed).unwrap()[..],
            b"secret message"
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(kp.open(b"other", b"aad", &sealed), Err(HpkeError::Open));
        assert_eq!(kp.open(b"purpose", b"other", &sealed), Err(HpkeError::Open));
        assert_eq!(
            KeyPair::generate().open(b"purpose", b"aad", &sealed),
            Err(HpkeError::Open)
        );
        for i in [0, 31, 32, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(kp.open(b"purpose", b"aad", &t).is_err(), "byte {i}");
        }
        assert_eq!(
            kp.open(b"purpose", b"aad", &sealed[..40]),
            Err(HpkeError::Truncated(40))
        );
        assert!(!format!("{kp:?}").contains(&format!("{:?}", &kp.secret_bytes()[..4])));
    }

    #[test]
    fn exported_secrets_agree_and_differ_by_message_and_context() {
        let kp = KeyPair::generate();
        let pk = kp.public_key();
        let (sealed, s1) = seal_exporting(&pk, b"p", b"a", b"msg", b"ctx").unwrap();
        let (plain, r1) = kp.open_exporting(b"p", b"a", &sealed, b"ctx").unwrap();
        assert_eq!((&plain[..], *s1), (&b"msg"[..], *r1));
        // Another context, another message: other secrets; a plain seal opens it too.
        let (_, other_ctx) = kp.open_exporting(b"p", b"a", &sealed, b"other").unwrap();
        assert_ne!(*other_ctx, *s1);
        let (_, s2) = seal_exporting(&pk, b"p", b"a", b"msg", b"ctx").unwrap();
        assert_ne!(*s2, *s1, "fresh per encapsulation");
        assert_eq!(&kp.open(b"p", b"a", &sealed).unwrap()[..], b"msg");
        assert_eq!(
            kp.open_exporting(b"q", b"a", &sealed, b"ctx").err(),
            Some(HpkeError::Open)
        );
    }

    #[test]
    fn derived_and_stored_keys_are_stable() {
        let a = KeyPair::derive(&[7; 32]);
        assert_eq!(a.public_key(), KeyPair::derive(&[7; 32]).public_key());
        assert_ne!(a.public_key(), KeyPair::derive(&[8; 32]).public_key());
        let b = KeyPair::from_secret(&a.secret_bytes()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
    }
}
