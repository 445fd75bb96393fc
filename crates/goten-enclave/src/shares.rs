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

use crate::par::{self, CHUNK, chunk};

/// `prg`'s ring stream of `iteration`, elements `[0, n)`.
pub(crate) fn expand(prg: &Prg, ring: Ring, iteration: u64, n: usize) -> Vec<i32> {
    let mut out = vec![0i32; n];
    par::chunks_mut(&mut out, |k, c| {
        prg.fill_ring(ring, iteration, (k * CHUNK) as u64, c);
    });
    out
}

/// `x - stream` elementwise in the ring (a masked or shared operand).
#[cfg(test)]
fn minus_stream(prg: &Prg, ring: Ring, iteration: u64, x: &[i32]) -> Vec<i32> {
    with_stream(prg, ring, iteration, x, |x, s| ring.sub(x, s))
}

/// `f(x[i], stream[i])` for every `i`, the stream expanded chunk by chunk into the output.
#[cfg(test)]
fn with_stream(
    prg: &Prg,
    ring: Ring,
    iteration: u64,
    x: &[i32],
    f: impl Fn(i32, i32) -> i32 + Sync + Send,
) -> Vec<i32> {
    let mut out = vec![0i32; x.len()];
    par::chunks_mut(&mut out, |k, o| {
        prg.fill_ring(ring, iteration, (k * CHUNK) as u64, o);
        for (o, &x) in o.iter_mut().zip(chunk(x, k)) {
            *o = f(x, *o);
        }
    });
    out
}

/// `g(x[i], s0[i], s1[i])` for every `i`, two outputs from one read of `x`, where `s0` and
/// `s1` are the streams of `prgs` (expanded chunk by chunk into the two outputs).
pub(crate) fn two_streams(
    ring: Ring,
    iteration: u64,
    x: &[i32],
    prgs: [&Prg; 2],
    g: impl Fn(i32, i32, i32) -> (i32, i32) + Sync + Send,
) -> (Vec<i32>, Vec<i32>) {
    let (mut o0, mut o1) = (vec![0i32; x.len()], vec![0i32; x.len()]);
    par::chunks_mut2(&mut o0, &mut o1, |k, p, q| {
        let off = (k * CHUNK) as u64;
        prgs[0].fill_ring(ring, iteration, off, p);
        prgs[1].fill_ring(ring, iteration, off, q);
        for ((p, q), &x) in p.iter_mut().zip(q.iter_mut()).zip(chunk(x, k)) {
            (*p, *q) = g(x, *p, *q);
        }
    });
    (o0, o1)
}

/// The residues as i64 (a part's result into the op's exact result); an indexed collect
/// writes the output once, without zero-filling it first.
pub(crate) fn widen(c: &[i32]) -> Vec<i64> {
    par::map_collect(c, |&v| i64::from(v))
}

/// `first + streams`, elementwise: the pad sum CM0 + CM1 + CMZ of a reconstruction (the part
/// that does not depend on the products) from the own pad, which the job needs expanded anyway
/// (so it is not drawn twice), and the other two pad streams.
pub(crate) fn plus_streams(
    first: Vec<i32>,
    streams: &[Prg],
    ring: Ring,
    iteration: u64,
) -> Vec<i32> {
    let mut out = first;
    par::chunks_mut_init(
        &mut out,
        || vec![0i32; CHUNK],
        |buf, k, o| add_chunk(streams, ring, iteration, (buf, k, o)),
    );
    out
}

/// Adds chunk `k` of each stream into `o` (`buf`: scratch of at least `o.len()`).
fn add_chunk(
    streams: &[Prg],
    ring: Ring,
    iteration: u64,
    (buf, k, o): (&mut [i32], usize, &mut [i32]),
) {
    for prg in streams {
        let s = &mut buf[..o.len()];
        prg.fill_ring(ring, iteration, (k * CHUNK) as u64, s);
        for (o, &v) in o.iter_mut().zip(s.iter()) {
            *o = ring.reduce_u32((*o as u32).wrapping_add(v as u32));
        }
    }
}

/// A value computed on the enclave's background pool, started now and collected later: the pads
/// of a part expand while its shares are formed and while the devices compute (the overlap of
/// PROTOCOL.md's step 6 with steps 4-5), and the next op's streams ([`crate::prefetch`]) while
/// this op's products are in flight.
pub(crate) struct Pending<T>(std::sync::mpsc::Receiver<T>);

impl<T: Send + 'static> Pending<T> {
    /// Starts `work` on the background pool ([`crate::par::background`]: the passes it runs
    /// are parallel there, and never queue ahead of the enclave's own passes).
    pub(crate) fn spawn(work: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        crate::par::background().spawn(move || {
            // The receiver is gone only when the op already failed or the value is no longer
            // wanted; nothing to report then.
            let _ = tx.send(work());
        });
        Pending(rx)
    }

    /// A value that is ready already (so callers wait on one type either way).
    pub(crate) fn ready(value: T) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send(value).expect("the receiver is alive");
        Pending(rx)
    }

    /// Waits for the value (`None` if the task died, which would be a bug). On a worker of a
    /// pool (an enclave run inside `install`, or a background task waiting for another), it
    /// runs that pool's other tasks while it waits, since the task may be queued behind it on
    /// that very worker.
    pub(crate) fn wait(self) -> Option<T> {
        use std::sync::mpsc::TryRecvError;
        if rayon::current_thread_index().is_none() {
            return self.0.recv().ok();
        }
        loop {
            match self.0.try_recv() {
                Ok(v) => return Some(v),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

/// `(p[i], q[i]) = g(x[i], p[i], q[i])` for every `i`: [`two_streams`] for streams expanded
/// ahead of time into `p` and `q` (the same arithmetic, in place, with no PRG in the pass).
pub(crate) fn two_in_place(
    x: &[i32],
    p: &mut [i32],
    q: &mut [i32],
    g: impl Fn(i32, i32, i32) -> (i32, i32) + Sync + Send,
) {
    assert_eq!(x.len(), p.len(), "an operand and its stream");
    par::chunks_mut2(p, q, |k, p, q| {
        for ((p, q), &x) in p.iter_mut().zip(q.iter_mut()).zip(chunk(x, k)) {
            (*p, *q) = g(x, *p, *q);
        }
    });
}

/// `own + peer + dealer + pads`, into `own`: the reconstruction of a part's result from the
/// three products and the pad sum.
pub(crate) fn reconstruct(ring: Ring, own: &mut [i32], [peer, dealer, pads]: [&[i32]; 3]) {
    par::chunks_mut(own, |k, o| {
        let (p, d, m) = (chunk(peer, k), chunk(dealer, k), chunk(pads, k));
        for i in 0..o.len() {
            let sum = (o[i] as u32)
                .wrapping_add(p[i] as u32)
                .wrapping_add(d[i] as u32)
                .wrapping_add(m[i] as u32);
            o[i] = ring.reduce_u32(sum);
        }
    });
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
                        let want: Vec<i32> =
                            x.iter().zip(&sp).map(|(&a, &s)| ring.sub(a, s)).collect();
                        assert_eq!(minus_stream(&p, ring, 7, &x), want);
                        let sub2 = |a, s0, s1| (ring.sub(a, s0), ring.sub(s1, a));
                        let want: (Vec<i32>, Vec<i32>) =
                            (0..n).map(|i| sub2(x[i], sp[i], sq[i])).unzip();
                        assert_eq!(two_streams(ring, 7, &x, [&p, &q], sub2), want);
                        let pads: Vec<i32> = (0..n)
                            .map(|i| ring.add(ring.add(sp[i], sq[i]), sr[i]))
                            .collect();
                        let streams = [p.clone(), q.clone(), r.clone()];
                        assert_eq!(plus_streams(sp.clone(), &streams[1..], ring, 7), pads);
                        let (mut pp, mut qq) = (sp.clone(), sq.clone());
                        two_in_place(&x, &mut pp, &mut qq, sub2);
                        assert_eq!((pp, qq), two_streams(ring, 7, &x, [&p, &q], sub2));
                        let mut own = sp.clone();
                        reconstruct(ring, &mut own, [&x, &sq, &pads]);
                        let want: Vec<i32> = (0..n)
                            .map(|i| {
                                [x[i], sq[i], pads[i]]
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
