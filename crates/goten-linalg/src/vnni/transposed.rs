//! Packing a transposed right operand for the VNNI kernel: 16 x 16 blocks of 32-bit words
//! transposed in registers.
//!
//! Where it sits: under [`super::pack`], for the products whose second operand is stored
//! column by column (weight gradients: both operands run along the reduction). A panel step
//! wants 32 columns at one reduction index; the source has each column's indices contiguous,
//! so 16 indices of 16 columns are loaded as 16 rows, converted to canonical residues, and
//! transposed with the usual unpack / 128-bit-lane shuffle network.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::NR;
use super::pack::MAGIC;
use crate::gemm::View;

/// Transposes 16 rows of 16 words: `out[c]` holds word `c` of every row.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + q], lane L: word 4L + q of rows 4g..4g + 4.
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let b = 4 * g;
        u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    let mut out = [_mm512_setzero_si512(); 16];
    for q in 0..4 {
        let x = [u[q], u[4 + q], u[8 + q], u[12 + q]];
        let p0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(x[0], x[1]);
        let p1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(x[0], x[1]);
        let p2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(x[2], x[3]);
        let p3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(x[2], x[3]);
        out[q] = _mm512_shuffle_i32x4::<0b10_00_10_00>(p0, p2);
        out[4 + q] = _mm512_shuffle_i32x4::<0b11_01_11_01>(p0, p2);
        out[8 + q] = _mm512_shuffle_i32x4::<0b10_00_10_00>(p1, p3);
        out[12 + q] = _mm512_shuffle_i32x4::<0b11_01_11_01>(p1, p3);
    }
    out
}

/// Packs the cross and lo-lo words of a full panel (`NR` columns from `j0`) for reduction
/// indices `k0..k0 + 16 * (kc / 16)` of `b` (k x n, `b.rs == 1`), in the layout of
/// `pack_panel`; returns how many indices it packed (the caller packs the rest).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pack(
    cross: &mut [i32],
    ll: &mut [i32],
    b: View<'_, f64>,
    (j0, k0, kc): (usize, usize, usize),
    (h, mask): (u32, u32),
) -> usize {
    let blocks = kc / 16;
    let last = b.off + (j0 + NR - 1) * b.cs + k0 + blocks * 16;
    assert!(
        b.rs == 1 && last <= b.data.len(),
        "transposed panel out of bounds"
    );
    assert!(cross.len() >= blocks * 16 * NR && ll.len() >= blocks * 8 * NR);
    let (magic, maskv) = (_mm512_set1_pd(MAGIC), _mm512_set1_epi32(mask as i32));
    let lom = _mm512_set1_epi32(((1u32 << h) - 1) as i32);
    let count = _mm_cvtsi32_si128(h as i32);
    let sixteen = _mm_cvtsi32_si128(16);
    for kb in 0..blocks {
        for half in 0..2 {
            let mut rows = [_mm512_setzero_si512(); 16];
            for (t, row) in rows.iter_mut().enumerate() {
                let at = b.off + (j0 + 16 * half + t) * b.cs + k0 + 16 * kb;
                // SAFETY: at + 16 <= last + 1 by the assertion above (t < 16, kb < blocks).
                let (x0, x1) = unsafe {
                    let p = b.data.as_ptr().add(at);
                    (_mm512_loadu_pd(p), _mm512_loadu_pd(p.add(8)))
                };
                // Exact integers: adding 1.5 * 2^52 leaves each one's two's complement in
                // the low 32 bits, which the narrowing move keeps.
                let lo = _mm512_cvtepi64_epi32(_mm512_castpd_si512(_mm512_add_pd(x0, magic)));
                let hi = _mm512_cvtepi64_epi32(_mm512_castpd_si512(_mm512_add_pd(x1, magic)));
                let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                *row = _mm512_and_si512(both, maskv);
            }
            let cols = transpose16(rows);
            for pairk in 0..8 {
                let (c0, c1) = (cols[2 * pairk], cols[2 * pairk + 1]);
                let (l0, l1) = (_mm512_and_si512(c0, lom), _mm512_and_si512(c1, lom));
                let (h0, h1) = (_mm512_srl_epi32(c0, count), _mm512_srl_epi32(c1, count));
                let s = 16 * kb + 2 * pairk;
                let x0 = _mm512_or_si512(l0, _mm512_sll_epi32(h0, sixteen));
                let x1 = _mm512_or_si512(l1, _mm512_sll_epi32(h1, sixteen));
                let w = _mm512_or_si512(l0, _mm512_sll_epi32(l1, sixteen));
                // SAFETY: s + 1 < blocks * 16 and s / 2 < blocks * 8: inside the asserted
                // lengths; each store writes 16 words at column offset 16 * half.
                unsafe {
                    let c = cross.as_mut_ptr();
                    _mm512_storeu_si512(c.add(s * NR + 16 * half).cast(), x0);
                    _mm512_storeu_si512(c.add((s + 1) * NR + 16 * half).cast(), x1);
                    let l = ll.as_mut_ptr();
                    _mm512_storeu_si512(l.add((s / 2) * NR + 16 * half).cast(), w);
                }
            }
        }
    }
    blocks * 16
}
