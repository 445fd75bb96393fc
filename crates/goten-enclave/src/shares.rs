//! Share formation and reconstruction for one part of a linear op: fused passes on all cores.
//!
//! Where it sits: inside [`crate::linear`]'s `run_part`, between the quantized operands and the
//! device job, and between the device's products and the exact result. Each pass reads its
//! operands once and writes each buffer that goes to the host once: PRG streams are expanded
//! chunk by chunk straight into the arithmetic (no full-size temporaries for masks), and the
//! chunks are fixed (`CHUNK` elements at fixed offsets of the stream), so the result is the
//! same bit for bit on any number of threads. `tests` compares every function with the plain
//! composition of PRG expansion and ring arithmetic it replaces.

use goten_field::{Prg, Ring};
use rayon::prelude::*;

/// Elements per task: 16 Ki i32 = 64 KiB per operand, small enough for a core's L2 with the
/// stream's chunk beside it, large enough that a task's fixed cost is negligible.
const CHUNK: usize = 1 << 14;

/// `prg`'s ring stream of `iteration`, elements `[0, n)`.
pub(crate) fn expand(prg: &Prg, ring: Ring, iteration: u64, n: usize) -> Vec<i32> {
    let mut out = vec![0i32; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, c)| {
        prg.fill_ring(ring, iteration, (k * CHUNK) as u64, c);
    });
    out
}

/// `prg`'s unit-interval stream of `iteration` into `out` (stochastic rounding noise).
pub(crate) fn expand_unit(prg: &Prg, iteration: u64, out: &mut [f32]) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, c)| {
        prg.fill_unit_f32(iteration, (k * CHUNK) as u64, c);
    });
}

/// `x - stream` elementwise in the ring (a masked or shared operand).
pub(crate) fn minus_stream(prg: &Prg, ring: Ring, iteration: u64, x: &[i32]) -> Vec<i32> {
    with_stream(prg, ring, iteration, x, |x, s| ring.sub(x, s))
}

/// `stream - x` elementwise in the ring.
pub(crate) fn stream_minus(prg: &Prg, ring: Ring, iteration: u64, x: &[i32]) -> Vec<i32> {
    with_stream(prg, ring, iteration, x, |x, s| ring.sub(s, x))
}

/// `f(x[i], stream[i])` for every `i`, the stream expanded chunk by chunk into the output.
fn with_stream(
    prg: &Prg,
    ring: Ring,
    iteration: u64,
    x: &[i32],
    f: impl Fn(i32, i32) -> i32 + Sync,
) -> Vec<i32> {
    let mut out = vec![0i32; x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(k, (o, x))| {
            prg.fill_ring(ring, iteration, (k * CHUNK) as u64, o);
            for (o, &x) in o.iter_mut().zip(x) {
                *o = f(x, *o);
            }
        });
    out
}

/// `own + peer + dealer + pad + stream_1 + stream_2`, into `own`: the reconstruction of a
/// part's result from the three products, this enclave's pad and the two pads it expands.
pub(crate) fn reconstruct(
    ring: Ring,
    iteration: u64,
    own: &mut [i32],
    [peer, dealer, pad]: [&[i32]; 3],
    streams: [&Prg; 2],
) {
    own.par_chunks_mut(CHUNK)
        .zip(peer.par_chunks(CHUNK))
        .zip(dealer.par_chunks(CHUNK))
        .zip(pad.par_chunks(CHUNK))
        .enumerate()
        // The two stream buffers are made once per worker's share of the chunks, not per chunk.
        .for_each_init(
            || [vec![0i32; CHUNK], vec![0i32; CHUNK]],
            |bufs, (k, (((o, p), d), m))| {
                let [s0, s1] = bufs;
                let s = [&mut s0[..o.len()], &mut s1[..o.len()]];
                for (buf, prg) in s.into_iter().zip(streams) {
                    prg.fill_ring(ring, iteration, (k * CHUNK) as u64, buf);
                }
                let s = [&s0[..o.len()], &s1[..o.len()]];
                for i in 0..o.len() {
                    let sum = [p[i], d[i], m[i], s[0][i], s[1][i]]
                        .iter()
                        .fold(o[i] as u32, |acc, &v| acc.wrapping_add(v as u32));
                    o[i] = ring.reduce_u32(sum);
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use goten_field::SecretKey;

    fn prg(b: u8) -> Prg {
        Prg::new(&SecretKey::from_bytes([b; 32]), "test/shares", 3)
    }

    fn reference(p: &Prg, ring: Ring, it: u64, n: usize) -> Vec<i32> {
        let mut v = vec![0; n];
        p.fill_ring(ring, it, 0, &mut v);
        v
    }

    /// Lengths around the chunk size, extreme residues, several ring widths, one and several
    /// threads: every fused function equals the unfused composition.
    #[test]
    fn fused_passes_equal_the_plain_composition_on_any_thread_count() {
        for bits in [2, 21, 26] {
            let ring = Ring::new(bits).unwrap();
            for n in [0, 1, 5, CHUNK - 1, CHUNK, CHUNK + 3, 3 * CHUNK + 17] {
                let x: Vec<i32> = (0..n)
                    .map(|i| match i % 4 {
                        0 => ring.min_centered(),
                        1 => ring.max_centered(),
                        2 => 0,
                        _ => ring.reduce_u32((i as u32).wrapping_mul(2_654_435_761)),
                    })
                    .collect();
                let (p, q, r) = (prg(1), prg(2), prg(3));
                let sp = reference(&p, ring, 7, n);
                let sq = reference(&q, ring, 7, n);
                let sr = reference(&r, ring, 7, n);
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        assert_eq!(expand(&p, ring, 7, n), sp);
                        let (mut unit, mut want) = (vec![0f32; n], vec![0f32; n]);
                        p.fill_unit_f32(7, 0, &mut want);
                        expand_unit(&p, 7, &mut unit);
                        assert_eq!(unit, want);
                        let want: Vec<i32> =
                            x.iter().zip(&sp).map(|(&a, &s)| ring.sub(a, s)).collect();
                        assert_eq!(minus_stream(&p, ring, 7, &x), want);
                        let want: Vec<i32> =
                            x.iter().zip(&sp).map(|(&a, &s)| ring.sub(s, a)).collect();
                        assert_eq!(stream_minus(&p, ring, 7, &x), want);
                        let mut own = sp.clone();
                        reconstruct(ring, 7, &mut own, [&x, &sq, &x], [&q, &r]);
                        let want: Vec<i32> = (0..n)
                            .map(|i| {
                                [x[i], sq[i], x[i], sq[i], sr[i]]
                                    .iter()
                                    .fold(sp[i], |acc, &v| ring.add(acc, v))
                            })
                            .collect();
                        assert_eq!(own, want);
                    });
                }
            }
        }
    }
}
