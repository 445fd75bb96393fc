//! Authenticated key agreement between E0, E1 and S2 (PROTOCOL.md section 4).
//!
//! Where it sits: session start, before any op. Each party sends a [`Hello`] carrying an
//! ephemeral X25519 public key and evidence binding it (attestation for E0/E1, the pinned
//! identity signature for S2). Every party checks every hello, then:
//!
//! - the **pair key** (E0, E1) = HKDF-SHA256(salt = transcript, ikm = X25519(E0, E1));
//! - the **dealer key** (E0, E1, S2) = HKDF-SHA256(salt = transcript, ikm = X25519(E0, S2));
//!   E0 hands it to E1 wrapped under keys derived from X25519(E0, E1): a one-time pad plus an
//!   HMAC-SHA256 tag over the transcript (a fresh key wraps exactly one message).
//!
//! The transcript hash covers all three hellos, so a host that swaps any hello makes the parties
//! derive different keys; a host that cannot produce valid evidence for its key is refused.
//! Ephemeral keys make every session's masks unrelated to every other session's.

use goten_field::SecretKey;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize;

use crate::attest::{AttestError, Evidence, EvidenceVerifier};
use crate::seeds::SeedBook;

/// The three servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Server 0 with enclave E0.
    S0,
    /// Server 1 with enclave E1.
    S1,
    /// Server 2, the dealer (no enclave).
    S2,
}

impl Role {
    /// All roles in order.
    pub const ALL: [Role; 3] = [Role::S0, Role::S1, Role::S2];

    /// Index 0, 1, 2.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S{}", self.index())
    }
}

/// Why the key exchange failed.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A peer's evidence was refused.
    #[error("{peer} failed authentication: {source}")]
    Attest {
        /// Who.
        peer: Role,
        /// Why.
        #[source]
        source: AttestError,
    },
    /// A hello claims a role other than its slot.
    #[error("hello in {slot}'s slot claims to be {claimed}")]
    RoleMismatch {
        /// Expected role.
        slot: Role,
        /// Claimed role.
        claimed: Role,
    },
    /// A public key that yields a predictable shared secret.
    #[error("{0} sent a low-order public key")]
    NonContributory(Role),
    /// The wrapped dealer key from E0 fails its tag: tampered, or E0 and E1 disagree on keys.
    #[error("the dealer key wrapped by S0 fails authentication (tampered, or a hello was altered)")]
    WrappedKey,
    /// No entropy.
    #[error("no entropy for the ephemeral key: {0}")]
    Rng(String),
    /// This function is for another role.
    #[error("{0} cannot perform this step of the key exchange")]
    WrongRole(Role),
}

/// A party's opening message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Sender.
    pub role: Role,
    /// Ephemeral X25519 public key.
    pub public: [u8; 32],
    /// Evidence binding `report_data(role, public, nonces)`.
    pub evidence: Evidence,
}

impl Hello {
    /// Canonical bytes (for the transcript).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![self.role.index() as u8];
        v.extend_from_slice(&self.public);
        match &self.evidence {
            Evidence::Simulated {
                measurement,
                report_data,
                signature,
            } => {
                v.push(1);
                v.extend_from_slice(measurement);
                v.extend_from_slice(report_data);
                v.extend_from_slice(signature);
            }
            Evidence::Dealer {
                report_data,
                signature,
            } => {
                v.push(2);
                v.extend_from_slice(report_data);
                v.extend_from_slice(signature);
            }
            Evidence::Hardware { tee, quote } => {
                v.push(3);
                v.push(*tee);
                v.extend_from_slice(&(quote.len() as u64).to_le_bytes());
                v.extend_from_slice(quote);
            }
        }
        v
    }
}

/// The data a party's evidence must bind: its role, its ephemeral public key and the session's
/// nonces (one drawn by each party and exchanged before the hellos, so evidence made for one
/// session cannot be replayed into another, even with a leaked ephemeral secret).
pub fn report_data(role: Role, public: &[u8; 32], nonces: &[[u8; 32]; 3]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"goten/hello/v2");
    h.update([role.index() as u8]);
    h.update(public);
    for n in nonces {
        h.update(n);
    }
    h.finalize().into()
}

/// E0's dealer key for E1: one-time padded and authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// dealer key XOR pad.
    pub ciphertext: [u8; 32],
    /// HMAC-SHA256 over the transcript and ciphertext.
    pub tag: [u8; 32],
}

/// The verifiers a party trusts: one for enclaves (S0, S1), one for the dealer (S2).
pub struct Trust {
    /// Verifies E0's and E1's evidence.
    pub enclave: Box<dyn EvidenceVerifier>,
    /// Verifies S2's evidence.
    pub dealer: Box<dyn EvidenceVerifier>,
}

/// One party's side of the exchange: an ephemeral secret. Debug is redacted.
pub struct KeyExchange {
    role: Role,
    secret: StaticSecret,
    public: [u8; 32],
    /// The nonces of S0, S1 and S2 for this session (zero in a single-process run, which has
    /// no other session to be replayed into).
    nonces: [[u8; 32]; 3],
}

impl std::fmt::Debug for KeyExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyExchange({}, <redacted>)", self.role)
    }
}

fn hkdf_key(salt: &[u8; 32], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .expect("32-byte HKDF output");
    out
}

fn wrap_keys(transcript: &[u8; 32], k01: &[u8]) -> ([u8; 32], [u8; 32]) {
    (
        hkdf_key(transcript, k01, b"goten/key/wrap-pad"),
        hkdf_key(transcript, k01, b"goten/key/wrap-mac"),
    )
}

fn wrap_tag(mac_key: &[u8; 32], transcript: &[u8; 32], ciphertext: &[u8; 32]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(transcript);
    mac.update(ciphertext);
    mac
}

impl KeyExchange {
    /// A fresh ephemeral key for `role`, from the platform's entropy (RDRAND in an SGX enclave,
    /// the OS here).
    pub fn new(role: Role) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Rng(e.to_string()))?;
        Ok(Self::from_secret(role, bytes))
    }

    /// A key exchange with a given ephemeral secret (deterministic tests only).
    pub fn from_secret(role: Role, mut bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret).to_bytes();
        KeyExchange {
            role,
            secret,
            public,
            nonces: [[0; 32]; 3],
        }
    }

    /// Binds this session's nonces (S0's, S1's, S2's) into every hello's report data.
    pub fn with_session_nonces(mut self, nonces: [[u8; 32]; 3]) -> Self {
        self.nonces = nonces;
        self
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What this party's evidence must bind.
    pub fn report_data(&self) -> [u8; 32] {
        report_data(self.role, &self.public, &self.nonces)
    }

    /// The hello to send, with evidence obtained for [`Self::report_data`].
    pub fn hello(&self, evidence: Evidence) -> Hello {
        Hello {
            role: self.role,
            public: self.public,
            evidence,
        }
    }

    /// Checks all three hellos (in role order) and returns the transcript hash.
    fn check(&self, hellos: &[Hello; 3], trust: &Trust) -> Result<[u8; 32], KeyError> {
        let mut t = Sha256::new();
        t.update(b"goten/transcript/v1");
        for (slot, h) in Role::ALL.into_iter().zip(hellos) {
            if h.role != slot {
                return Err(KeyError::RoleMismatch {
                    slot,
                    claimed: h.role,
                });
            }
            if slot != self.role {
                let verifier = if slot == Role::S2 {
                    &trust.dealer
                } else {
                    &trust.enclave
                };
                verifier
                    .verify(&h.evidence, &report_data(slot, &h.public, &self.nonces))
                    .map_err(|source| KeyError::Attest { peer: slot, source })?;
            } else if h.public != self.public {
                return Err(KeyError::RoleMismatch {
                    slot,
                    claimed: h.role,
                });
            }
            let b = h.to_bytes();
            t.update((b.len() as u64).to_le_bytes());
            t.update(&b);
        }
        Ok(t.finalize().into())
    }

    fn dh(&self, peer: Role, public: &[u8; 32]) -> Result<[u8; 32], KeyError> {
        let s = self.secret.diffie_hellman(&PublicKey::from(*public));
        if !s.was_contributory() {
            return Err(KeyError::NonContributory(peer));
        }
        Ok(*s.as_bytes())
    }

    /// E0: verifies the hellos, derives both keys and wraps the dealer key for E1.
    pub fn finish_e0(
        self,
        hellos: &[Hello; 3],
        trust: &Trust,
    ) -> Result<(SeedBook, WrappedKey), KeyError> {
        if self.role != Role::S0 {
            return Err(KeyError::WrongRole(self.role));
        }
        let t = self.check(hellos, trust)?;
        let mut k01 = self.dh(Role::S1, &hellos[1].public)?;
        let mut k02 = self.dh(Role::S2, &hellos[2].public)?;
        let pair = hkdf_key(&t, &k01, b"goten/key/pair");
        let dealer = hkdf_key(&t, &k02, b"goten/key/dealer");
        let (mut pad, mut mac_key) = wrap_keys(&t, &k01);
        let mut ciphertext = [0u8; 32];
        for i in 0..32 {
            ciphertext[i] = dealer[i] ^ pad[i];
        }
        let tag = wrap_tag(&mac_key, &t, &ciphertext)
            .finalize()
            .into_bytes()
            .into();
        for k in [&mut k01, &mut k02, &mut pad, &mut mac_key] {
            k.zeroize();
        }
        Ok((
            SeedBook::new(SecretKey::from_bytes(pair), SecretKey::from_bytes(dealer)),
            WrappedKey { ciphertext, tag },
        ))
    }

    /// E1: verifies the hellos, derives the pair key and unwraps the dealer key from E0.
    pub fn finish_e1(
        self,
        hellos: &[Hello; 3],
        trust: &Trust,
        wrapped: &WrappedKey,
    ) -> Result<SeedBook, KeyError> {
        if self.role != Role::S1 {
            return Err(KeyError::WrongRole(self.role));
        }
        let t = self.check(hellos, trust)?;
        let mut k01 = self.dh(Role::S0, &hellos[0].public)?;
        let pair = hkdf_key(&t, &k01, b"goten/key/pair");
        let (mut pad, mut mac_key) = wrap_keys(&t, &k01);
        k01.zeroize();
        let ok = wrap_tag(&mac_key, &t, &wrapped.ciphertext)
            .verify_slice(&wrapped.tag)
            .is_ok();
        mac_key.zeroize();
        if !ok {
            pad.zeroize();
            return Err(KeyError::WrappedKey);
        }
        let mut dealer = [0u8; 32];
        for i in 0..32 {
            dealer[i] = wrapped.ciphertext[i] ^ pad[i];
        }
        pad.zeroize();
        Ok(SeedBook::new(
            SecretKey::from_bytes(pair),
            SecretKey::from_bytes(dealer),
        ))
    }

    /// S2: verifies the hellos and derives the dealer key (the only key it ever holds).
    pub fn finish_dealer(self, hellos: &[Hello; 3], trust: &Trust) -> Result<SecretKey, KeyError> {
        if self.role != Role::S2 {
            return Err(KeyError::WrongRole(self.role));
        }
        let t = self.check(hellos, trust)?;
        let mut k02 = self.dh(Role::S0, &hellos[0].public)?;
        let dealer = hkdf_key(&t, &k02, b"goten/key/dealer");
        k02.zeroize();
        Ok(SecretKey::from_bytes(dealer))
    }
}
