//! The job's architecture in the ecall codec: a built-in model's name, or a model file's network
//! ([`NetSpec`]) in the enclave crate's own encoding (`nn::spec_codec`, shared with sealed
//! checkpoints).
//!
//! Where it sits: under [`super::body`]'s training configuration. The decoder bounds the number
//! of layers, their sizes and the nesting before it allocates, so a hostile host cannot make the
//! enclave process build an enormous or endlessly nested description.

use std::sync::Arc;

use goten_enclave::nn::spec_codec;
use goten_enclave::nn::{Arch, ModelKind};

use super::body::bad;
use crate::wire::{R, W, WireError};

/// Writes `arch`.
pub(super) fn put_arch(w: &mut W, arch: &Arch) {
    match arch {
        Arch::Builtin(k) => {
            w.u8(0);
            w.str(k.name());
        }
        Arch::File(s) => {
            w.u8(1);
            w.blob(&spec_codec::encode(s));
        }
    }
}

/// Reads an architecture written by [`put_arch`].
pub(super) fn get_arch(r: &mut R<'_>) -> Result<Arch, WireError> {
    match r.u8("model")? {
        0 => {
            let name = r.str("model")?;
            ModelKind::parse(&name)
                .map(Arch::Builtin)
                .ok_or_else(|| bad("config", format!("model {name:?}")))
        }
        1 => {
            let spec =
                spec_codec::decode(r.blob("model file")?).map_err(|e| bad("model file", e))?;
            Ok(Arch::File(Arc::new(spec)))
        }
        k => Err(bad("model", format!("kind {k}"))),
    }
}
