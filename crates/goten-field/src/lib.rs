//! Trusted arithmetic core of goten.
//!
//! Where it sits: every other crate builds on this one. The enclave (`goten-enclave`) uses it to
//! quantize, share and reconstruct; the untrusted device crate (`goten-device`) uses the same
//! ring and op vocabulary to compute products on shares. It does no I/O and contains no `unsafe`.
//!
//! Contents:
//! - [`Ring`]: the share ring Z_{2^k} in centered representation (see `docs/DESIGN.md` for why a
//!   power of two and how k is chosen);
//! - [`RingTensor`]: a shaped tensor of ring elements, the unit that crosses to a device;
//! - [`codec`]: the canonical binary encodings (packed and u32) that reject malformed input;
//! - [`prg`]: the seeded, addressable AES-128-CTR PRG and the [`SecretKey`] it is keyed from;
//! - [`ops`]: the six bilinear op kinds and their shape rules;
//! - [`share`]: additive sharing and reconstruction helpers.
#![forbid(unsafe_code)]

pub mod codec;
pub mod ops;
pub mod prg;
mod ring;
pub mod share;
mod tensor;

pub use ops::{BilinearOp, Conv2dParams, ShapeError};
pub use prg::{Prg, SecretKey};
pub use ring::{Ring, RingError};
pub use tensor::RingTensor;
