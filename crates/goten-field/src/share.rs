//! Additive secret sharing over the ring: split a tensor into shares and reconstruct it.
//!
//! Where it sits: the enclave shares quantized operands (A1 = aQ - A0, E = aQ - U, ...) and
//! reconstructs results (c = C0' + C1' + Z' + pads); tests use the same helpers as references.
//! A share produced here is uniform whenever its mask is, which is what makes it safe to hand
//! to an untrusted host.

use crate::ops::ShapeError;
use crate::prg::Prg;
use crate::tensor::RingTensor;

/// Expands the mask for `x` from `prg` at (`iteration`, element `offset`) and returns
/// `(mask, x - mask)`: two shares that sum to `x`.
pub fn share_with_prg(
    x: &RingTensor,
    prg: &Prg,
    iteration: u64,
    offset: u64,
) -> (RingTensor, RingTensor) {
    let mask = expand(prg, x, iteration, offset);
    let other = x.sub(&mask).expect("mask has x's ring and shape");
    (mask, other)
}

/// A tensor with `like`'s ring and shape filled from `prg`.
pub fn expand(prg: &Prg, like: &RingTensor, iteration: u64, offset: u64) -> RingTensor {
    let mut m = RingTensor::zeros(like.ring(), like.shape()).expect("shape already valid");
    prg.fill_ring(like.ring(), iteration, offset, m.data_mut());
    m
}

/// Sum of any number of shares (at least one), checking they agree in ring and shape.
pub fn reconstruct(shares: &[&RingTensor]) -> Result<RingTensor, ShapeError> {
    let (first, rest) = shares
        .split_first()
        .ok_or_else(|| ShapeError::new("reconstruct needs at least one share"))?;
    let mut acc = (*first).clone();
    for s in rest {
        acc.add_assign(s)?;
    }
    Ok(acc)
}
