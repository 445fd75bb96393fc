//! The next op's data-independent streams, expanded while this op's products are in flight.
//!
//! Where it sits: beside [`crate::shares`], inside [`crate::linear`]'s `run_part`. Of a part's
//! random tensors, the masks U and V, S0's shares A0 and B0 and the output pads depend on no
//! data: only on the session seeds, the part's stream id, the iteration and the lengths. A
//! model runs the same sequence of ops every step (and every serving batch), so after op k the
//! enclave knows op k+1's stream id and lengths from the previous step and expands them on its
//! background pool while its thread waits for op k's products (the prototype's asynchrony, issue
//! "enclave work at accelerator speed", item 4). Op k+1 then quantizes, forms its shares and
//! reconstructs with no PRG on its path.
//!
//! Safety of the guess: the prefetched tensors are keyed by everything that determines them
//! ([`Key`]); an op whose key differs (a different batch size, a recomputation, a first step)
//! drops them and expands its own, so a wrong guess costs time, never a wrong or reused mask.
//! What is prefetched is exactly what the op would expand itself (tests compare them), so
//! results are bit-identical with and without it. The buffers hold masks and pads: they stay
//! in enclave memory like every other share buffer and are never printed (only the counts in
//! [`PrefetchStats`] are public).

use std::collections::HashMap;

use goten_field::{Prg, Ring};

use crate::keys::Role;
use crate::par::{self, CHUNK};
use crate::seeds::{DealerPurpose, PairPurpose, SeedBook};
use crate::shares::{self, Pending};

/// Everything that determines a part's data-independent tensors (with the enclave's role,
/// ring and seeds, which are fixed while a [`Prefetcher`] lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// The part's PRG stream id (`OpHeader::stream_id`).
    pub stream_id: u64,
    /// The PRG iteration.
    pub iteration: u64,
    /// Elements of the first operand, the second operand and the result.
    pub lens: [usize; 3],
    /// Which operands the op quantizes with stochastic rounding (their noise is expanded; an
    /// operand quantized by an earlier op of the step, or already integers, needs none).
    pub noise: [bool; 2],
}

impl Key {
    /// The key of op `op_id`'s first attempt, which runs as one part (the only one guessed).
    pub(crate) fn first(op_id: u64, iteration: u64, lens: [usize; 3], noise: [bool; 2]) -> Self {
        Key {
            stream_id: op_id << 17,
            iteration,
            lens,
            noise,
        }
    }
}

/// A part's PRG streams, owned (so a task on the background pool can expand them).
pub(crate) struct OpStreams {
    /// U and A0 (the first operand's mask and S0's share of it).
    pub a: [Prg; 2],
    /// V and B0.
    pub b: [Prg; 2],
    /// This enclave's output pad, the other enclave's, and S2's (CM0/CM1 and CMZ).
    pub pads: [Prg; 3],
    /// The op's rounding noise (stochastic rounding only).
    pub noise: Option<Prg>,
}

impl OpStreams {
    /// The streams of stream id `id` for `role`'s enclave.
    pub(crate) fn of(role: Role, seeds: &SeedBook, id: u64) -> Self {
        let (own, other) = if role == Role::S0 {
            (PairPurpose::PadC0, PairPurpose::PadC1)
        } else {
            (PairPurpose::PadC1, PairPurpose::PadC0)
        };
        OpStreams {
            a: [
                seeds.dealer(DealerPurpose::MaskU, id),
                seeds.pair(PairPurpose::ShareA0, id),
            ],
            b: [
                seeds.dealer(DealerPurpose::MaskV, id),
                seeds.pair(PairPurpose::ShareB0, id),
            ],
            pads: [
                seeds.pair(own, id),
                seeds.pair(other, id),
                seeds.dealer(DealerPurpose::PadZ, id),
            ],
            noise: None,
        }
    }

    /// Every tensor, expanded (what [`Prefetcher::spawn`] runs on the background pool).
    fn expand(&self, ring: Ring, key: Key) -> Expanded {
        let it = key.iteration;
        let [na, nb, nc] = key.lens;
        let two = |p: &[Prg; 2], n| p.each_ref().map(|p| shares::expand(p, ring, it, n));
        let pad = shares::expand(&self.pads[0], ring, it, nc);
        // The quantizer's stream, `[0, na + nb)`, as one buffer per operand it quantizes (an
        // operand that arrives quantized gets none).
        let noise = [(0, na, key.noise[0]), (na, nb, key.noise[1])].map(|(at, n, fill)| {
            let prg = self.noise.as_ref().filter(|_| fill)?;
            let mut v = vec![0f32; n];
            par::chunks_mut(&mut v, |k, c| {
                prg.fill_unit_f32(it, (at + k * CHUNK) as u64, c)
            });
            Some(v)
        });
        Expanded {
            key,
            noise,
            a: two(&self.a, na),
            b: two(&self.b, nb),
            pad_sum: shares::plus_streams(pad.clone(), &self.pads[1..], ring, it),
            pad,
        }
    }
}

/// A part's data-independent tensors, expanded ahead of time.
pub(crate) struct Expanded {
    /// Whose they are.
    pub key: Key,
    /// The rounding noise of the first operand's elements and of the second's (the quantizer's
    /// stream, `[0, na)` and `[na, na + nb)`), for the operands the key says are quantized.
    pub noise: [Option<Vec<f32>>; 2],
    /// U and A0.
    pub a: [Vec<i32>; 2],
    /// V and B0.
    pub b: [Vec<i32>; 2],
    /// This enclave's output pad.
    pub pad: Vec<i32>,
    /// CM0 + CM1 + CMZ.
    pub pad_sum: Vec<i32>,
}

/// What followed an op the last time it ran.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Next {
    /// The following op's stream id.
    stream_id: u64,
    /// How far its iteration was ahead (0 within a step, 1 across a step boundary).
    step: u64,
    /// Its lengths.
    lens: [usize; 3],
    /// Which of its operands it quantized.
    noise: [bool; 2],
}

/// How the guesses went (public counts, for tests and reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchStats {
    /// Parts whose masks and pads were expanded ahead.
    pub ready: u64,
    /// Guesses dropped because the op that came was another one.
    pub dropped: u64,
}

/// Learns the op sequence and keeps the next op's tensors expanding. One per keyed enclave;
/// reset whenever the enclave's seeds change.
#[derive(Default)]
pub(crate) struct Prefetcher {
    /// Counts since the enclave's keys were set.
    pub stats: PrefetchStats,
    /// For each stream id: what followed it last time, and whether that was also what followed
    /// it the time before (only a repeated sequence is worth guessing: serving batches of
    /// varying size would otherwise expand tensors that are never used).
    follows: HashMap<u64, (Next, bool)>,
    /// The op that ran last.
    last: Option<Key>,
    /// The tensors being expanded, and for which op.
    pending: Option<(Key, Pending<Expanded>)>,
}

impl Prefetcher {
    /// The tensors expanded for `key`, if the last guess was right (waits for the task if it
    /// is still running). A wrong guess is dropped.
    pub(crate) fn take(&mut self, key: Key) -> Option<Expanded> {
        match self.pending.take() {
            Some((k, p)) if k == key => {
                self.stats.ready += 1;
                p.wait()
            }
            Some(_) => {
                self.stats.dropped += 1;
                None
            }
            None => None,
        }
    }

    /// Records that `key` ran after the previous op, and returns the guess for the op after
    /// `key`, if its sequence repeated.
    pub(crate) fn observe(&mut self, key: Key) -> Option<Key> {
        if let Some(prev) = self.last.replace(key)
            && let Some(step) = key.iteration.checked_sub(prev.iteration)
        {
            let next = Next {
                stream_id: key.stream_id,
                step,
                lens: key.lens,
                noise: key.noise,
            };
            let seen = self.follows.get(&prev.stream_id);
            // A first sighting counts as repeated: training repeats from its second step on.
            let steady = seen.is_none_or(|(n, _)| *n == next);
            self.follows.insert(prev.stream_id, (next, steady));
        }
        let (next, steady) = self.follows.get(&key.stream_id)?;
        steady.then(|| Key {
            stream_id: next.stream_id,
            iteration: key.iteration + next.step,
            lens: next.lens,
            noise: next.noise,
        })
    }

    /// Starts expanding `key`'s tensors on the background pool (replacing any earlier guess),
    /// with the rounding noise of the operands it quantizes.
    pub(crate) fn spawn(&mut self, role: Role, ring: Ring, seeds: &SeedBook, key: Key) {
        let mut streams = OpStreams::of(role, seeds, key.stream_id);
        if key.noise.contains(&true) {
            streams.noise = Some(seeds.pair(PairPurpose::RoundingNoise, key.stream_id >> 17));
        }
        let task = Pending::spawn(move || streams.expand(ring, key));
        self.pending = Some((key, task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::par::CHUNK;
    use goten_field::SecretKey;

    fn key(stream_id: u64, iteration: u64, n: usize) -> Key {
        Key {
            stream_id,
            iteration,
            lens: [n, n + 1, n + 2],
            noise: [true, true],
        }
    }

    /// Guesses follow the previous step's sequence, across the step boundary too; a sequence
    /// that changed is not guessed until it repeats.
    #[test]
    fn guesses_the_repeated_sequence() {
        let mut p = Prefetcher::default();
        for (id, want) in [(1, None), (2, None), (3, None)] {
            assert_eq!(p.observe(key(id, 0, 10)), want);
        }
        assert_eq!(p.observe(key(1, 1, 10)), Some(key(2, 1, 10)));
        assert_eq!(p.observe(key(2, 1, 10)), Some(key(3, 1, 10)));
        assert_eq!(p.observe(key(3, 1, 10)), Some(key(1, 2, 10)));
        // A different batch size after op 1: the guess for op 1's successor is withheld.
        assert_eq!(p.observe(key(1, 2, 10)), Some(key(2, 2, 10)));
        assert_eq!(p.observe(key(2, 2, 20)), Some(key(3, 2, 10)));
        assert_eq!(p.observe(key(3, 2, 20)), Some(key(1, 3, 10)));
        assert_eq!(p.observe(key(1, 3, 20)), None);
        assert_eq!(p.observe(key(2, 3, 20)), None);
        // The step boundary changed at step 3 too; each transition is guessed again once it
        // has repeated.
        assert_eq!(p.observe(key(3, 3, 20)), None);
        assert_eq!(p.observe(key(1, 4, 20)), Some(key(2, 4, 20)));
        assert_eq!(p.observe(key(2, 4, 20)), Some(key(3, 4, 20)));
        assert_eq!(p.observe(key(3, 4, 20)), Some(key(1, 5, 20)));
    }

    /// A prefetched op's tensors are exactly the streams it would expand itself; a wrong guess
    /// is never handed out.
    #[test]
    fn prefetched_tensors_equal_the_streams_and_only_for_their_key() {
        let seeds = SeedBook::new(
            SecretKey::from_bytes([5; 32]),
            SecretKey::from_bytes([6; 32]),
        );
        let ring = Ring::new(21).unwrap();
        for role in [Role::S0, Role::S1] {
            let k = Key::first(77, 9, [CHUNK + 5, 3, 2 * CHUNK + 1], [true, true]);
            let mut p = Prefetcher::default();
            p.spawn(role, ring, &seeds, k);
            assert!(p.take(Key { iteration: 10, ..k }).is_none());
            assert!(p.take(k).is_none(), "a wrong guess is dropped");
            p.spawn(role, ring, &seeds, k);
            let got = p.take(k).expect("the guessed op's tensors");
            let stats = PrefetchStats {
                ready: 1,
                dropped: 1,
            };
            assert_eq!(p.stats, stats);
            let s = OpStreams::of(role, &seeds, k.stream_id);
            let fresh = |prg: &Prg, n| shares::expand(prg, ring, 9, n);
            assert_eq!(
                got.a,
                [fresh(&s.a[0], k.lens[0]), fresh(&s.a[1], k.lens[0])]
            );
            assert_eq!(
                got.b,
                [fresh(&s.b[0], k.lens[1]), fresh(&s.b[1], k.lens[1])]
            );
            assert_eq!(got.pad, fresh(&s.pads[0], k.lens[2]));
            let pads = s.pads.each_ref().map(|p| fresh(p, k.lens[2]));
            let sum: Vec<i32> = (0..k.lens[2])
                .map(|i| ring.add(ring.add(pads[0][i], pads[1][i]), pads[2][i]))
                .collect();
            assert_eq!(got.pad_sum, sum);
            assert_eq!(got.key, k);
            // The noise is the quantizer's stream: both operands quantize to the same integers.
            let [Some(na_noise), Some(nb_noise)] = got.noise else {
                panic!("noise was asked for both operands")
            };
            let prg = seeds.pair(PairPurpose::RoundingNoise, 77);
            let q = crate::quant::QuantConfig::default();
            let (na, nb) = (k.lens[0], k.lens[1]);
            let x: Vec<f32> = (0..na + nb).map(|i| (i as f32 * 0.37).sin()).collect();
            let (xa, xb) = x.split_at(na);
            let ints = |r: Result<crate::quant::Quantized, _>| {
                let r = r.unwrap();
                (r.values.clone(), r.shift)
            };
            assert_eq!(
                ints(q.quantize(xa, &na_noise)),
                ints(q.quantize_stream(xa, (&prg, 9, 0)))
            );
            assert_eq!(
                ints(q.quantize(xb, &nb_noise)),
                ints(q.quantize_stream(xb, (&prg, 9, na as u64)))
            );
            // An op that quantizes only its second operand gets only that noise, the same, and
            // a guess for the other combination does not match it.
            let only_b = Key {
                noise: [false, true],
                ..k
            };
            p.spawn(role, ring, &seeds, only_b);
            assert!(p.take(k).is_none());
            p.spawn(role, ring, &seeds, only_b);
            let got = p.take(only_b).unwrap().noise;
            assert!(got[0].is_none());
            assert_eq!(got[1].as_ref(), Some(&nb_noise));
            let none = Key {
                noise: [false, false],
                ..k
            };
            p.spawn(role, ring, &seeds, none);
            assert_eq!(p.take(none).unwrap().noise, [None, None]);
        }
    }
}
