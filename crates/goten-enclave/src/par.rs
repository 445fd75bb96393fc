//! Chunked passes over the enclave's buffers: on the worker pool when there is more than one
//! chunk, on the calling thread when there is one.
//!
//! Where it sits: under every elementwise pass of the linear op ([`crate::shares`],
//! [`crate::quant`]) and the check's contractions ([`crate::check_conv`]). Chunks are fixed
//! ([`CHUNK`] elements at fixed offsets), so a result never depends on where, or on how many
//! threads, a chunk ran. A pass of one chunk runs inline because handing it to the pool from
//! the enclave's own thread costs a cross-thread wake-up and wait, which on the small batches
//! of private prediction cost more than the pass itself.
//!
//! Work that is not on the enclave's path (the next op's masks, the pad sum, the check's
//! operand side: [`crate::shares::Pending`]) runs on a pool of its own, [`background`]. On the
//! shared pool a foreground pass queued behind a background task's chunks: rayon's workers
//! finish their own queued chunks before taking a job from outside, so the op that waited
//! for its devices then waited again for the *next* op's mask expansion. With two pools the
//! operating system shares the cores between both, and a foreground pass never waits for a
//! background job to drain (a test holds every background worker and runs a pass).

use std::sync::OnceLock;

use rayon::prelude::*;

/// The pool of background tasks: as many threads as the foreground pool (rayon's default,
/// which follows `RAYON_NUM_THREADS`), named `goten-bg-N`.
pub(crate) fn background() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("goten-bg-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the enclave's background threads: {e}"))
    })
}

/// Elements per task: 16 Ki i32 = 64 KiB per operand, small enough for a core's L2 with a
/// stream's chunk beside it, large enough that a task's fixed cost is negligible.
pub(crate) const CHUNK: usize = 1 << 14;

/// Chunk `k` of `x` (the same chunking as the output of a pass).
#[inline]
pub(crate) fn chunk<T>(x: &[T], k: usize) -> &[T] {
    &x[k * CHUNK..x.len().min((k + 1) * CHUNK)]
}

/// `f(state, k, out_k)` for every chunk `k` of `out`; `init` makes one `state` per worker (a
/// scratch buffer).
pub(crate) fn chunks_mut_init<T: Send, S>(
    out: &mut [T],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    if out.len() <= CHUNK {
        if !out.is_empty() {
            f(&mut init(), 0, out);
        }
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each_init(init, |s, (k, c)| f(s, k, c));
    }
}

/// `f(k, out_k)` for every chunk `k` of `out`.
pub(crate) fn chunks_mut<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    chunks_mut_init(out, || (), |_, k, c| f(k, c));
}

/// `f(k, a_k, b_k)` for every chunk `k` of two outputs of the same length.
pub(crate) fn chunks_mut2<T: Send>(
    a: &mut [T],
    b: &mut [T],
    f: impl Fn(usize, &mut [T], &mut [T]) + Sync + Send,
) {
    assert_eq!(a.len(), b.len(), "two outputs of one pass");
    if a.len() <= CHUNK {
        if !a.is_empty() {
            f(0, a, b);
        }
    } else {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(k, (p, q))| f(k, p, q));
    }
}

/// `x.map(f)` collected, in parallel over chunks when there is more than one (an indexed
/// collect: the output is written once, never zero-filled first).
pub(crate) fn map_collect<T: Sync, U: Send>(x: &[T], f: impl Fn(&T) -> U + Sync + Send) -> Vec<U> {
    if x.len() <= CHUNK {
        x.iter().map(f).collect()
    } else {
        x.par_iter().with_min_len(CHUNK).map(f).collect()
    }
}

/// `fold` over each chunk of `x`, partial results combined with `merge` (which must make the
/// result independent of the grouping, as max and field sums are).
pub(crate) fn fold_chunks<T: Sync, A: Send>(
    x: &[T],
    fold: impl Fn(&[T]) -> A + Sync + Send,
    merge: impl Fn(A, A) -> A + Sync + Send,
    empty: impl Fn() -> A + Sync + Send,
) -> A {
    if x.len() <= CHUNK {
        fold(x)
    } else {
        x.par_chunks(CHUNK).map(fold).reduce(empty, merge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A foreground pass completes while every background worker is busy (on one shared pool
    /// it would wait for them: here they never finish until the pass has), and background
    /// tasks run on their own named threads.
    #[test]
    fn foreground_passes_never_wait_for_background_tasks() {
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let workers = background().current_num_threads();
        let (release_tx, release_rx) = channel::<()>();
        let release = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, started_rx) = channel();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (release, started) = (release.clone(), started_tx.clone());
                crate::shares::Pending::spawn(move || {
                    let name = std::thread::current().name().map(str::to_owned);
                    started.send(name).unwrap();
                    // Held until the foreground pass below is done (or the test gives up).
                    let held = release.lock().unwrap();
                    let _ = held.recv_timeout(Duration::from_secs(30));
                })
            })
            .collect();
        // Every worker holds one task before the pass starts.
        let names: Vec<String> = (0..workers)
            .map(|_| started_rx.recv().unwrap().unwrap_or_default())
            .collect();
        let (done_tx, done_rx) = channel();
        std::thread::spawn(move || {
            let mut out = vec![0u64; 8 * CHUNK];
            chunks_mut(&mut out, |k, c| c.iter_mut().for_each(|v| *v = k as u64));
            done_tx.send(out.iter().sum::<u64>()).unwrap();
        });
        let sum = done_rx.recv_timeout(Duration::from_secs(20));
        for _ in 0..workers {
            let _ = release_tx.send(());
        }
        tasks.into_iter().for_each(|t| assert!(t.wait().is_some()));
        let want = (0..8u64).map(|k| k * CHUNK as u64).sum::<u64>();
        assert_eq!(
            sum.ok(),
            Some(want),
            "a foreground pass waited for busy background workers"
        );
        for name in names {
            assert!(name.starts_with("goten-bg-"), "background task on {name:?}");
        }
    }

    /// Inline and pooled paths see the same chunks: every element once, with its chunk index.
    #[test]
    fn every_element_once_with_its_chunk() {
        for n in [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let mut out = vec![usize::MAX; n];
            chunks_mut(&mut out, |k, c| c.iter_mut().for_each(|v| *v = k));
            assert!(out.iter().enumerate().all(|(i, &k)| k == i / CHUNK), "{n}");
            let x: Vec<u64> = (0..n as u64).collect();
            assert_eq!(
                map_collect(&x, |&v| v * 2),
                x.iter().map(|v| v * 2).collect::<Vec<_>>()
            );
            let sum = fold_chunks(&x, |c| c.iter().sum::<u64>(), |a, b| a + b, || 0);
            assert_eq!(sum, x.iter().sum::<u64>());
            if n > 0 {
                let last = (n - 1) / CHUNK;
                assert_eq!(chunk(&x, last).last(), x.last());
            }
        }
    }
}
