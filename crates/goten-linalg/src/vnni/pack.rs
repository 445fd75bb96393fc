//! Packing for the VNNI kernel: centered residues (held as f64 by the im2col and GEMM
//! layers above) split into 16-bit limbs and laid out in the order the microkernel reads.
//!
//! Where it sits: called by [`super::mod_gemm`] once per reduction block for every tile of
//! `lhs` and panel of `rhs`; it sees only shares. The conversions avoid `as` casts from f64
//! (their saturation checks do not vectorize) and the contiguous cases are written as plain
//! loops that the compiler vectorizes with AVX-512.

use super::{MR, NR};
use crate::gemm::View;

/// Two 16-bit limbs in one 32-bit word, `first` in the low half (the order `vpdpwssd` pairs).
#[inline(always)]
pub(super) fn pair(first: u32, second: u32) -> i32 {
    (first | (second << 16)) as i32
}

/// 1.5 * 2^52: adding it to an integer-valued f64 below 2^51 in magnitude leaves the integer's
/// two's complement in the low mantissa bits, a conversion without the saturating checks of
/// `as` that vectorizes.
pub(super) const MAGIC: f64 = 6_755_399_441_055_744.0;

/// The canonical residue in `[0, 2^k)` of a centered residue held as f64 (an exact integer
/// by the caller's contract).
#[inline(always)]
pub(super) fn canon(x: f64, mask: u32) -> u32 {
    ((x + MAGIC).to_bits() as u32) & mask
}

/// `(lo, hi)` of a centered residue held as f64.
#[inline(always)]
pub(super) fn limbs(x: f64, h: u32, mask: u32) -> (u32, u32) {
    let c = canon(x, mask);
    (c & ((1 << h) - 1), c >> h)
}

/// Which limb goes in the low half of a cross word: the left operand's tiles pair
/// `(hi, lo)`, the right operand's panels `(lo, hi)`, so one `vpdpwssd` lane sums
/// `hi_a lo_b + lo_a hi_b`.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Lhs,
    Rhs,
}

/// Lo-lo words of one step across lanes: `dst[i] = (lo(first[i]), lo(second[i]))`, the second
/// limb zero past an odd reduction's end. A plain zip the compiler vectorizes.
#[inline(always)]
fn lo_lo_words(dst: &mut [i32], first: &[f64], second: Option<&[f64]>, (h, mask): (u32, u32)) {
    let lom = (1u32 << h) - 1;
    match second {
        Some(second) => {
            for ((d, &x0), &x1) in dst.iter_mut().zip(first).zip(second) {
                *d = pair(canon(x0, mask) & lom, canon(x1, mask) & lom);
            }
        }
        None => {
            for (d, &x0) in dst.iter_mut().zip(first) {
                *d = pair(canon(x0, mask) & lom, 0);
            }
        }
    }
}

/// Packs one lane (a tile row or a panel column) element by element, for layouts the vector
/// loops do not cover: cross word `s` at `out[s * stride]` for `s` in `from..kc`, then lo-lo
/// word `s` at `out[(kc + s) * stride]` for `s` in `from / 2..ceil(kc / 2)`, reading reduction
/// index `kk` from `x(kk)`. `from` (even) is how many indices a vector loop already packed.
#[inline(always)]
fn pack_lane(
    out: &mut [i32],
    (stride, from, kc): (usize, usize, usize),
    side: Side,
    x: impl Fn(usize) -> f64,
    (h, mask): (u32, u32),
) {
    for s in from..kc {
        let (lo, hi) = limbs(x(s), h, mask);
        out[s * stride] = match side {
            Side::Lhs => pair(hi, lo),
            Side::Rhs => pair(lo, hi),
        };
    }
    for s in from / 2..kc.div_ceil(2) {
        let l1 = if 2 * s + 1 < kc {
            limbs(x(2 * s + 1), h, mask).0
        } else {
            0
        };
        out[(kc + s) * stride] = pair(limbs(x(2 * s), h, mask).0, l1);
    }
}

/// Where word `s` of tile row `r` lies in a packed tile: `r * row + s * step`. Row-major
/// operands are packed row by row (each row a contiguous read), all others step by step
/// (a transposed operand's tile rows are contiguous at each reduction index).
pub(super) fn tile_strides(row_major: bool, steps: usize) -> (usize, usize) {
    if row_major { (steps, 1) } else { (1, MR) }
}

/// Packs rows `r0..r0 + MR` and reduction indices `k0..k0 + kc` of `a` (m x k) in the layout
/// of [`tile_strides`].
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
pub(super) fn pack_tile(
    out: &mut [i32],
    a: View<'_, f64>,
    m: usize,
    r0: usize,
    ks: (usize, usize),
    hm: (u32, u32),
) {
    if a.cs == 1 {
        pack_tile_rows(out, a, m, r0, ks, hm)
    } else {
        pack_tile_steps(out, a, m, r0, ks, hm)
    }
}

/// [`pack_tile`] step by step: `kc` cross words `(hi, lo)` of the `MR` rows, then
/// `ceil(kc / 2)` lo-lo words; rows past `m` are zero.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
fn pack_tile_steps(
    out: &mut [i32],
    a: View<'_, f64>,
    m: usize,
    r0: usize,
    (k0, kc): (usize, usize),
    hm: (u32, u32),
) {
    let (h, mask) = hm;
    let lom = (1u32 << h) - 1;
    let rows = MR.min(m - r0);
    let (cross, ll) = out[..(kc + kc.div_ceil(2)) * MR].split_at_mut(kc * MR);
    if rows < MR {
        cross.fill(0);
        ll.fill(0);
    }
    if a.rs == 1 && rows == MR {
        // The tile's rows are contiguous at each reduction index: vectors of MR.
        let run = |kk: usize| &a.data[a.off + r0 + (k0 + kk) * a.cs..][..MR];
        for (s, dst) in cross.chunks_exact_mut(MR).enumerate() {
            for (d, &x) in dst.iter_mut().zip(run(s)) {
                let c = canon(x, mask);
                *d = pair(c >> h, c & lom);
            }
        }
        for (s, dst) in ll.chunks_exact_mut(MR).enumerate() {
            lo_lo_words(
                dst,
                run(2 * s),
                (2 * s + 1 < kc).then(|| run(2 * s + 1)),
                hm,
            );
        }
        return;
    }
    // Element by element: the rows' lanes interleave at a stride of MR words.
    let words = &mut out[..(kc + kc.div_ceil(2)) * MR];
    for r in 0..rows {
        let base = a.off + (r0 + r) * a.rs + k0 * a.cs;
        pack_lane(
            &mut words[r..],
            (MR, 0, kc),
            Side::Lhs,
            |kk| a.data[base + kk * a.cs],
            hm,
        );
    }
}

/// Packs rows `r0..r0 + MR` and reduction indices `k0..k0 + kc` of `a` (m x k), row by row:
/// `kc` cross words `(hi, lo)`, then `ceil(kc / 2)` lo-lo words; rows past `m` are zero.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
fn pack_tile_rows(
    out: &mut [i32],
    a: View<'_, f64>,
    m: usize,
    r0: usize,
    (k0, kc): (usize, usize),
    hm: (u32, u32),
) {
    let (h, mask) = hm;
    let lom = (1u32 << h) - 1;
    let steps = kc + kc.div_ceil(2);
    for (r, dst) in out.chunks_mut(steps).enumerate().take(MR) {
        let row = r0 + r;
        if row >= m {
            dst.fill(0);
            continue;
        }
        let (cross, ll) = dst.split_at_mut(kc);
        if a.cs == 1 {
            let src = &a.data[a.off + row * a.rs + k0..][..kc];
            for (d, &x) in cross.iter_mut().zip(src) {
                let c = canon(x, mask);
                *d = pair(c >> h, c & lom);
            }
            let pairs = src.chunks_exact(2);
            let last = pairs.remainder().first().map(|&x| canon(x, mask) & lom);
            for (d, p) in ll.iter_mut().zip(pairs) {
                *d = pair(canon(p[0], mask) & lom, canon(p[1], mask) & lom);
            }
            if let Some(l) = last {
                ll[kc / 2] = pair(l, 0);
            }
        } else {
            let base = a.off + row * a.rs + k0 * a.cs;
            pack_lane(
                dst,
                (1, 0, kc),
                Side::Lhs,
                |kk| a.data[base + kk * a.cs],
                hm,
            );
        }
    }
}

/// Packs columns `j0..j0 + NR` and reduction indices `k0..k0 + kc` of `b` (k x n): `kc` cross
/// words `(lo, hi)`, then `ceil(kc / 2)` lo-lo words, `NR` per step; columns past `n` are zero.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f,avx512bw"))]
pub(super) fn pack_panel(
    out: &mut [i32],
    b: View<'_, f64>,
    n: usize,
    j0: usize,
    (k0, kc): (usize, usize),
    hm: (u32, u32),
) {
    let (h, mask) = hm;
    let lom = (1u32 << h) - 1;
    let cols = NR.min(n - j0);
    let sl = kc.div_ceil(2);
    if cols < NR {
        out.fill(0);
    }
    let (cross, ll) = out.split_at_mut(kc * NR);
    if b.cs == 1 {
        let row = |kk: usize| &b.data[b.off + (k0 + kk) * b.rs + j0..][..cols];
        for (s, dst) in cross.chunks_exact_mut(NR).enumerate() {
            for (d, &x) in dst.iter_mut().zip(row(s)) {
                let c = canon(x, mask);
                *d = pair(c & lom, c >> h);
            }
        }
        for (s, dst) in ll.chunks_exact_mut(NR).enumerate().take(sl) {
            lo_lo_words(
                dst,
                row(2 * s),
                (2 * s + 1 < kc).then(|| row(2 * s + 1)),
                hm,
            );
        }
    } else {
        // A transposed operand (each column contiguous): blocks of 16 reduction indices by
        // vector transposition, the rest element by element.
        #[cfg(target_arch = "x86_64")]
        let done = if b.rs == 1 && cols == NR {
            // SAFETY: this function requires AVX-512 F and BW, all `transposed` needs.
            unsafe { super::transposed::pack(cross, ll, b, (j0, k0, kc), hm) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // A column's lane interleaves at a stride of NR words.
        for j in 0..cols {
            let base = b.off + k0 * b.rs + (j0 + j) * b.cs;
            let x = |kk: usize| b.data[base + kk * b.rs];
            pack_lane(&mut out[j..], (NR, done, kc), Side::Rhs, x, hm);
        }
    }
}
