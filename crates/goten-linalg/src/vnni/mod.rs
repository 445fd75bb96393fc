//! The exact modular GEMM on 16-bit integer limbs with AVX-512 VNNI (`vpdpwssd`), for CPUs
//! that have it; [`crate::gemm::mod_gemm`] calls it instead of the chunked f64 GEMM.
//!
//! Where it sits: inside every CPU device product on shares (`goten-device` -> `RingArith` ->
//! `mod_gemm`). It sees only shares, like the f64 path it replaces.
//!
//! Why it is exact: residues are taken canonically in `[0, 2^k)` and split at `h = ceil(k/2)`
//! bits, `x = lo + 2^h hi` with `lo < 2^h`, `hi < 2^(k-h)`, both below 2^13 for rings up to
//! 2^26, so both fit signed 16-bit lanes. Then
//! `a b = lo_a lo_b + 2^h (hi_a lo_b + lo_a hi_b) + 2^(2h) hi_a hi_b`, and the last term is a
//! multiple of 2^k because `2h >= k`: modulo 2^k it vanishes. `vpdpwssd` adds pairs of 16-bit
//! products into 32-bit lanes with wraparound (no saturation), and 2^k divides 2^32, so every
//! partial sum, in any order and however long the reduction, is exact modulo 2^k: no chunking
//! and no reduction passes, unlike the f64 path.
//!
//! Why it is faster: one 512-bit `vpdpwssd` does 32 16-bit multiply-adds. The lo-lo term pairs
//! two consecutive reduction indices per lane, the cross term pairs `(hi_a, lo_a)` with
//! `(lo_b, hi_b)` for one index, so a ring product costs 1.5 lane-pairs: 10.7 ring
//! multiply-adds per instruction against 8 for an f64 FMA, with half the bytes per operand.
//!
//! Layout: the reduction is cut into blocks of [`KC`]; per block, `lhs` is packed in tiles of
//! [`MR`] rows and `rhs` in panels of [`NR`] columns, the cross steps first, then the lo-lo
//! steps, so the microkernel keeps one set of accumulators: it sums the cross term, shifts it
//! by `h`, and adds the lo-lo term into the same registers.
//!
//! Measured (docs/PERFORMANCE.md, "Exact products on 16-bit limbs"): faster than the f64
//! kernel where `rhs` is row-major (convolution forward +20 %, input gradient +40 to +60 %)
//! or transposed in whole panels (module `transposed`: weight gradients +15 to +35 %); other
//! strides are packed element by element, slower than f64, so [`crate::gemm::mod_gemm`]
//! keeps them there ([`packs_fast`]).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use goten_field::Ring;
use rayon::prelude::*;

use crate::gemm::View;
use crate::scratch::Scratch;

mod pack;
mod transposed;

#[cfg(test)]
use pack::limbs;
use pack::{pack_panel, pack_tile, tile_strides};

/// Rows per tile (16 accumulators of 16 lanes for two 16-column vectors per row).
pub const MR: usize = 8;
/// Columns per panel: two 512-bit vectors of 32-bit lanes.
pub const NR: usize = 32;
/// Reduction indices per packed block: a panel block is `1.5 * KC * NR * 4` bytes (192 KiB),
/// a tile block 48 KiB, so both stay in L2 while the tile's panels stream past.
pub const KC: usize = 1024;

/// Which exact GEMM the CPU devices use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16-bit limbs with AVX-512 VNNI (this module).
    Vnni,
    /// Centered residues as f64 in chunks (the `gemm` crate).
    F64,
}

/// The kernel for this process: VNNI where the CPU has AVX-512 F, BW and VNNI, unless the
/// environment variable `GOTEN_MOD_GEMM=f64` asks for the f64 path (for comparisons; any
/// other value is ignored with a warning). Decided once.
pub fn kernel() -> Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        let forced = std::env::var("GOTEN_MOD_GEMM").ok();
        match forced.as_deref() {
            Some("f64") => return Kernel::F64,
            Some("auto") | None => {}
            Some(other) => eprintln!(
                "warning: GOTEN_MOD_GEMM={other:?} is neither \"f64\" nor \"auto\"; choosing the kernel automatically"
            ),
        }
        if cpu_has_vnni() {
            Kernel::Vnni
        } else {
            Kernel::F64
        }
    })
}

/// What the CPU devices' exact products run on in this process, for benchmark reports: `vnni`
/// (16-bit limbs where [`packs_fast`] holds, f64 elsewhere) or `f64`.
pub fn describe(ring: Ring) -> &'static str {
    if crate::gemm::uses_vnni(ring) {
        "vnni"
    } else {
        "f64"
    }
}

/// Whether [`mod_gemm`] packs `rhs` (k x n) with vector code: row-major, or transposed (each
/// column contiguous) in whole panels of [`NR`] columns. (conv1's weight gradient, 27 columns,
/// ran at 0.6x of f64 packed element by element.)
pub fn packs_fast(rhs: View<'_, f64>, n: usize) -> bool {
    rhs.cs == 1 || (rhs.rs == 1 && n.is_multiple_of(NR))
}

/// Whether this CPU can run [`mod_gemm`].
pub fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`mod_gemm`] serves `ring` on this CPU.
pub fn supports(ring: Ring) -> bool {
    ring.bits() <= 26 && cpu_has_vnni()
}

/// The limb split of a ring: `(h, mask of k bits)`.
fn split(ring: Ring) -> (u32, u32) {
    let k = ring.bits();
    (k.div_ceil(2), ((1u64 << k) - 1) as u32)
}

/// `c[r][j] = (sum of the cross steps) << h + (sum of the lo-lo steps)` for one tile and one
/// panel, wrapping. `a` and `b` are a packed tile and panel of `kc + sl` steps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn microkernel(
    a: &[i32],
    (rstride, sstride): (usize, usize),
    b: &[i32],
    (kc, sl): (usize, usize),
    h: u32,
    c: &mut [[i32; NR]; MR],
) {
    use std::arch::x86_64::*;
    let steps = kc + sl;
    assert!(a.len() >= steps * MR && b.len() >= steps * NR);
    let mut acc = [[_mm512_setzero_si512(); 2]; MR];
    // `vpdpwssd` by inline assembly: LLVM rewrites the intrinsic into `vpmaddwd` + `vpaddd`
    // unless it tunes for a CPU known to run it fast, which doubles the instructions here.
    macro_rules! dot {
        ($acc:expr, $a:expr, $b:expr) => {
            // Used inside `step`'s unsafe block: a register-only AVX-512 VNNI instruction,
            // and this function requires the feature.
            std::arch::asm!(
                "vpdpwssd {acc}, {a}, {b}",
                acc = inout(zmm_reg) $acc,
                a = in(zmm_reg) $a,
                b = in(zmm_reg) $b,
                options(pure, nomem, nostack),
            )
        };
    }
    // A macro, not a closure: the step must inline into this function's AVX-512 code.
    macro_rules! step {
        ($s:expr) => {{
            let s = $s;
            // SAFETY: s < steps, and the assertion above bounds every read: the panel's
            // 2 x 16 words at s * NR and the tile's word s of each of its MR rows.
            unsafe {
                let p = b.as_ptr().add(s * NR);
                let b0 = _mm512_loadu_si512(p.cast());
                let b1 = _mm512_loadu_si512(p.add(16).cast());
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*a.as_ptr().add(r * rstride + s * sstride));
                    dot!(row[0], av, b0);
                    dot!(row[1], av, b1);
                }
            }
        }};
    }
    for s in 0..kc {
        step!(s);
    }
    let count = _mm_cvtsi32_si128(h as i32);
    for row in acc.iter_mut() {
        row[0] = _mm512_sll_epi32(row[0], count);
        row[1] = _mm512_sll_epi32(row[1], count);
    }
    for s in kc..steps {
        step!(s);
    }
    for (row, out) in acc.iter().zip(c.iter_mut()) {
        // SAFETY: each row of `c` holds NR = 32 i32, two unaligned 512-bit stores.
        unsafe {
            let p = out.as_mut_ptr();
            _mm512_storeu_si512(p.cast(), row[0]);
            _mm512_storeu_si512(p.add(16).cast(), row[1]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn microkernel(
    _: &[i32],
    _: (usize, usize),
    _: &[i32],
    _: (usize, usize),
    _: u32,
    _: &mut [[i32; NR]; MR],
) {
    unreachable!("the VNNI kernel is only dispatched on x86-64 CPUs that have it")
}

/// One tile row band of the result: rows `r0..r0 + MR` of `c` (row-major m x n, wrapping
/// accumulation), over every panel of the packed block.
fn tile_rows(
    c: &mut [u32],
    n: usize,
    rows: usize,
    tile: (&[i32], (usize, usize)),
    panels: &[i32],
    ks: (usize, usize),
    h: u32,
) {
    let per_panel = (ks.0 + ks.1) * NR;
    let mut out = [[0i32; NR]; MR];
    for (p, panel) in panels.chunks(per_panel).enumerate() {
        // SAFETY: only dispatched after `supports` confirmed AVX-512 F, BW and VNNI.
        unsafe { microkernel(tile.0, tile.1, panel, ks, h, &mut out) };
        let j0 = p * NR;
        let cols = NR.min(n - j0);
        for (r, o) in out.iter().enumerate().take(rows) {
            let dst = &mut c[r * n + j0..][..cols];
            for (d, &v) in dst.iter_mut().zip(o) {
                *d = d.wrapping_add(v as u32);
            }
        }
    }
}

/// A left operand packed once for several products (a convolution's weights, shared by every
/// group of images): every reduction block's tiles, in the order of `pack::tile_strides`.
pub struct PackedLhs {
    ring: Ring,
    m: usize,
    k: usize,
    /// Whether the source was row-major (decides the tile layout).
    rows: bool,
    data: Vec<i32>,
}

impl PackedLhs {
    /// `(m, k)` of the packed operand.
    pub fn shape(&self) -> (usize, usize) {
        (self.m, self.k)
    }

    /// Packs `lhs` (m x k) for products modulo `ring`. Call only where [`supports`] holds.
    pub fn new(ring: Ring, (m, k): (usize, usize), lhs: View<'_, f64>, threads: usize) -> Self {
        assert!(
            supports(ring),
            "the VNNI kernel was dispatched without VNNI"
        );
        lhs.check(m, k);
        let hm = split(ring);
        let tiles = m.div_ceil(MR);
        let mut data = vec![0i32; tiles * MR * (k + k.div_ceil(KC) + k / 2)];
        let mut rest = &mut data[..];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let per_tile = (kc + kc.div_ceil(2)) * MR;
            let (block, tail) = rest.split_at_mut(tiles * per_tile);
            rest = tail;
            // SAFETY: `supports` confirmed AVX-512 F, BW and VNNI above.
            let pack = |(t, out): (usize, &mut [i32])| unsafe {
                pack_tile(out, lhs, m, t * MR, (k0, kc), hm)
            };
            if threads > 1 {
                block.par_chunks_mut(per_tile).enumerate().for_each(pack);
            } else {
                block.chunks_mut(per_tile).enumerate().for_each(pack);
            }
            k0 += kc;
        }
        PackedLhs {
            ring,
            m,
            k,
            rows: lhs.cs == 1,
            data,
        }
    }
}

/// `lhs (m x k) * rhs (k x n)` modulo 2^bits, exactly, as centered residues (row-major m x n):
/// the same contract as [`crate::gemm::mod_gemm`]. Call only where [`supports`] holds.
pub fn mod_gemm(
    ring: Ring,
    (m, n, k): (usize, usize, usize),
    lhs: View<'_, f64>,
    rhs: View<'_, f64>,
    threads: usize,
) -> Vec<i32> {
    let packed = PackedLhs::new(ring, (m, k), lhs, threads);
    mod_gemm_packed(&packed, n, rhs, threads)
}

/// [`mod_gemm`] with a packed left operand: `lhs (m x k) * rhs (k x n)` in the ring it was
/// packed for.
pub fn mod_gemm_packed(lhs: &PackedLhs, n: usize, rhs: View<'_, f64>, threads: usize) -> Vec<i32> {
    let (ring, m, k) = (lhs.ring, lhs.m, lhs.k);
    rhs.check(k, n);
    if m == 0 || n == 0 {
        return Vec::new();
    }
    let hm = split(ring);
    let mut c = vec![0u32; m * n];
    let (tiles, panels) = (m.div_ceil(MR), n.div_ceil(NR));
    let parallel = threads > 1;
    let mut panel_buf = Scratch::<i32>::take();
    let mut tiles_at = 0;
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let sl = kc.div_ceil(2);
        let (per_tile, per_panel) = ((kc + sl) * MR, (kc + sl) * NR);
        let strides = tile_strides(lhs.rows, kc + sl);
        let packed_tiles = &lhs.data[tiles_at..][..tiles * per_tile];
        tiles_at += tiles * per_tile;
        let packed_panels = panel_buf.get(panels * per_panel);
        // SAFETY: `PackedLhs::new` confirmed AVX-512 F, BW and VNNI.
        let pack_p = |(p, out): (usize, &mut [i32])| unsafe {
            pack_panel(out, rhs, n, p * NR, (k0, kc), hm)
        };
        if parallel {
            packed_panels
                .par_chunks_mut(per_panel)
                .enumerate()
                .for_each(pack_p);
        } else {
            packed_panels
                .chunks_mut(per_panel)
                .enumerate()
                .for_each(pack_p);
        }
        let packed_panels = &*packed_panels;
        let body = |(t, band): (usize, &mut [u32])| {
            let tile = &packed_tiles[t * per_tile..][..per_tile];
            tile_rows(
                band,
                n,
                band.len() / n,
                (tile, strides),
                packed_panels,
                (kc, sl),
                hm.0,
            );
        };
        if parallel {
            c.par_chunks_mut(MR * n).enumerate().for_each(body);
        } else {
            c.chunks_mut(MR * n).enumerate().for_each(body);
        }
        k0 += kc;
    }
    if parallel {
        c.par_iter()
            .with_min_len(crate::gemm::PAR_CHUNK)
            .map(|&w| ring.reduce_u32(w))
            .collect()
    } else {
        c.iter().map(|&w| ring.reduce_u32(w)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        ring: Ring,
        (m, n, k): (usize, usize, usize),
        a: View<'_, f64>,
        b: View<'_, f64>,
    ) -> Vec<i32> {
        let at = |v: View<'_, f64>, i: usize, j: usize| v.data[v.off + i * v.rs + j * v.cs] as i128;
        let mut c = Vec::with_capacity(m * n);
        for i in 0..m {
            for j in 0..n {
                let s: i128 = (0..k).map(|kk| at(a, i, kk) * at(b, kk, j)).sum();
                c.push(ring.reduce_i128(s));
            }
        }
        c
    }

    /// Residues of `ring`: random, or all at one extreme, or alternating extremes.
    fn operand(ring: Ring, len: usize, seed: u64, kind: u8) -> Vec<f64> {
        let half = 1i64 << (ring.bits() - 1);
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = match kind {
                    0 => ring.reduce_i64(s as i64),
                    1 => ring.reduce_i64(-half),
                    2 => ring.reduce_i64(half - 1),
                    _ => ring.reduce_i64(if i % 3 == 0 { half - 1 } else { -half }),
                };
                f64::from(v)
            })
            .collect()
    }

    #[test]
    fn equals_the_i128_reference_on_random_and_extreme_residues() {
        if !cpu_has_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI (the f64 kernel serves it)");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 2),
            (9, 33, 1),
            (13, 70, KC + 3),
            (16, 64, 2 * KC + 1),
            (5, 3, 0),
            (9, 64, 37),
            (3, 96, 50),
        ];
        for bits in [2, 7, 13, 21, 22, 26] {
            let ring = Ring::new(bits).unwrap();
            for (si, &(m, n, k)) in shapes.iter().enumerate() {
                for kind in 0..4u8 {
                    let seed = (bits as u64) << 20 | (si as u64) << 8 | u64::from(kind);
                    let a = operand(ring, m * k, seed, kind);
                    let b = operand(ring, k * n, seed ^ 0xABCD, if kind == 3 { 1 } else { kind });
                    // Row-major views, and transposed copies read through strided views.
                    let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
                    let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
                    let want = reference(ring, (m, n, k), View::rows(&a, k), View::rows(&b, n));
                    for threads in [1, 2] {
                        let got = mod_gemm(
                            ring,
                            (m, n, k),
                            View::rows(&a, k),
                            View::rows(&b, n),
                            threads,
                        );
                        assert_eq!(
                            got, want,
                            "ring {bits} bits, {m}x{n}x{k}, kind {kind}, {threads} threads"
                        );
                        let got = mod_gemm(
                            ring,
                            (m, n, k),
                            View::transposed(&at, m),
                            View::transposed(&bt, k),
                            threads,
                        );
                        assert_eq!(
                            got, want,
                            "transposed views: ring {bits} bits, {m}x{n}x{k}, kind {kind}"
                        );
                    }
                    let f64s = crate::gemm::mod_gemm_f64(
                        ring,
                        (m, n, k),
                        View::rows(&a, k),
                        View::rows(&b, n),
                        1,
                    );
                    assert_eq!(f64s, want, "the f64 kernel: ring {bits} bits, {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    fn one_packed_operand_serves_several_products() {
        if !cpu_has_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI (the f64 kernel serves it)");
            return;
        }
        let ring = Ring::DEFAULT;
        let (m, k) = (19, KC + 5);
        let a = operand(ring, m * k, 7, 0);
        let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        for (lhs, threads) in [(View::rows(&a, k), 1), (View::transposed(&at, m), 2)] {
            let packed = PackedLhs::new(ring, (m, k), lhs, threads);
            assert_eq!(packed.shape(), (m, k));
            for (seed, n) in [(8, 40), (9, 3), (10, 64)] {
                let b = operand(ring, k * n, seed, if seed == 9 { 3 } else { 0 });
                let want = reference(ring, (m, n, k), View::rows(&a, k), View::rows(&b, n));
                let got = mod_gemm_packed(&packed, n, View::rows(&b, n), threads);
                assert_eq!(got, want, "{m}x{n}x{k}, {threads} threads");
            }
        }
    }

    /// The dispatch above the kernel: where VNNI runs, `RingArith` packs a prepared operand and
    /// its products, with a row-major, a transposed and a strided right operand (the last on
    /// f64), equal the f64 kernel's.
    #[test]
    fn ring_arith_dispatches_to_vnni_and_falls_back_exactly() {
        use crate::{Arith, RingArith};
        let ring = Ring::DEFAULT;
        let ra = RingArith { ring, threads: 2 };
        let (m, n, k) = (16, 64, 40);
        let a = operand(ring, m * k, 11, 0);
        let b = operand(ring, 2 * k * n, 12, 3);
        let prepared = ra.prepare(View::rows(&a, k), (m, k));
        assert_eq!(
            prepared.packed.is_some(),
            crate::gemm::uses_vnni(ring),
            "prepare packs exactly where the VNNI kernel runs"
        );
        let bt: Vec<f64> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
        let rhs = [
            View::rows(&b, n),
            View::transposed(&bt, k),
            View {
                data: &b,
                off: 0,
                rs: 2 * n,
                cs: 2,
            },
        ];
        for v in rhs {
            let want = crate::gemm::mod_gemm_f64(ring, (m, n, k), View::rows(&a, k), v, 1);
            assert_eq!(ra.gemm_prepared((m, n, k), &prepared, v, 2), want);
            assert_eq!(ra.gemm((m, n, k), View::rows(&a, k), v, 2), want);
        }
    }

    #[test]
    fn the_limbs_recompose_every_residue() {
        for bits in [2, 13, 21, 26] {
            let ring = Ring::new(bits).unwrap();
            let (h, mask) = split(ring);
            for v in [-(1i64 << (bits - 1)), -1, 0, 1, (1 << (bits - 1)) - 1] {
                let (lo, hi) = limbs(v as f64, h, mask);
                assert!(lo < 1 << 13 && hi < 1 << 13, "limbs fit 16-bit lanes");
                assert_eq!(
                    ring.reduce_i64(i64::from(lo) + (i64::from(hi) << h)),
                    ring.reduce_i64(v)
                );
            }
        }
    }
}
