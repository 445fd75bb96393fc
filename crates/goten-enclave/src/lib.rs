//! The trusted enclave program of goten: what E0 and E1 run (PROTOCOL.md sections 2 to 4).
//!
//! Where it sits: between the data owner's sealed batches and the untrusted host. It owns every
//! secret and every plaintext tensor; it talks to its host only through an explicit command
//! interface ([`Enclave`], the "ecalls") and one host-services trait ([`HostServices`], the
//! "ocalls"), does no I/O of its own and contains no `unsafe`. Its dependency list is short on
//! purpose: this folder is the trusted computing base.
//!
//! - [`attest`]: evidence and verifiers (simulated on machines without TEE hardware);
//! - [`keys`]: the authenticated X25519 + HKDF key exchange between E0, E1 and S2;
//! - [`seeds`]: which key expands which random tensor;
//! - [`quant`]: dynamic quantization and dequantization;
//! - [`bound`]: the magnitude bound and split plan that rule out silent wraparound;
//! - [`check`]: the Freivalds-style integrity check of every reconstructed result;
//! - [`linear`]: one outsourced bilinear op (shares, masks, ocall, reconstruction), whose
//!   share formation and reconstruction passes (`shares`) are fused and run on all cores,
//!   with the next op's masks and pads expanding while this op's products are in flight
//!   (`prefetch`);
//! - [`nn`]: layers, models, loss and optimizer of the training program;
//! - [`session`]: the training program behind its ecalls, and the release policy; serving;
//! - [`query`]: private prediction's sealed queries and answers;
//! - [`secret`]: the plaintext tensor type that never leaves.
#![forbid(unsafe_code)]

pub mod attest;
pub mod bound;
pub mod check;
mod check_conv;
#[cfg(feature = "danger-test-expose")]
pub mod danger;
mod enclave;
pub mod hpke;
pub mod keys;
pub mod linear;
pub mod nn;
mod par;
mod prefetch;
pub mod quant;
pub mod query;
pub mod sealed_data;
pub mod secret;
pub mod seeds;
pub mod service;
pub mod session;
mod shares;

/// Whether this build made the plaintext accessors public (the test-only feature
/// `danger-test-expose`); a binary that sees `true` must say so loudly.
pub const DANGER_TEST_EXPOSE: bool = cfg!(feature = "danger-test-expose");

pub use enclave::{Enclave, EnclaveConfig, EnclaveError, KeyedEnclave};
pub use keys::Role;
pub use linear::{DeviceJob, HostServices, JobReply, OpHeader, Share};
pub use prefetch::PrefetchStats;
pub use secret::SecretTensor;
