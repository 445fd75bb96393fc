//! Per-thread reusable buffers for the kernels' temporaries (im2col columns, the exact GEMM's
//! f64 accumulator).
//!
//! Where it sits: under [`crate::algo`] and [`crate::gemm`]. A fresh `Vec` per convolution
//! group cost a zero-fill (and, above the allocator's mmap threshold, page faults and the
//! kernel's page clearing) for a buffer that the kernel then overwrites completely: at serving
//! batches of a dozen images that was 3-4 % of all CPU samples. A buffer taken here keeps its
//! length between uses, so after the first use of a size nothing is zeroed again.
//!
//! Contract: [`Scratch::get`] returns memory whose contents are whatever an earlier user on this
//! thread left, so a caller must write every element it reads (im2col and a GEMM with
//! `accumulate = false` do). The buffers hold only what the calling kernels held anyway (shares
//! on a device, float temporaries inside an enclave), and stay in the same process.

use std::any::Any;
use std::cell::RefCell;

/// Buffers kept per thread at most.
const KEEP: usize = 4;

/// A buffer larger than this is dropped instead of kept (bounds what a thread holds).
const MAX_BYTES: usize = 32 << 20;

thread_local! {
    static FREE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer borrowed from this thread's free list; it goes back to the free list of the thread
/// that drops it.
pub struct Scratch<T: 'static>(Vec<T>);

impl<T: Copy + Default + 'static> Scratch<T> {
    /// The longest kept buffer of element type `T`, or an empty one. Taking the longest makes
    /// the buffers of a kernel that holds two at once (im2col columns and the accumulator)
    /// settle after one use each: the first taken gets the longest, the second grows once.
    pub fn take() -> Self {
        let kept = FREE
            .try_with(|f| {
                let mut f = f.try_borrow_mut().ok()?;
                let i = (0..f.len())
                    .filter_map(|i| Some((i, f[i].downcast_ref::<Vec<T>>()?.len())))
                    .max_by_key(|&(_, len)| len)?
                    .0;
                f.swap_remove(i).downcast::<Vec<T>>().ok()
            })
            .ok()
            .flatten();
        Scratch(kept.map_or_else(Vec::new, |b| *b))
    }

    /// The first `len` elements, grown (and only the growth zeroed) when the buffer is shorter.
    /// Their contents are whatever the previous user left: write every element you read.
    pub fn get(&mut self, len: usize) -> &mut [T] {
        if self.0.len() < len {
            self.0.resize(len, T::default());
        }
        &mut self.0[..len]
    }
}

impl<T: Copy + Default + 'static> Default for Scratch<T> {
    fn default() -> Self {
        Scratch::take()
    }
}

impl<T: 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.is_empty() || v.len() * std::mem::size_of::<T>() > MAX_BYTES {
            return;
        }
        // During thread teardown the free list may be gone: then the buffer is simply freed.
        let _ = FREE.try_with(|f| {
            if let Ok(mut f) = f.try_borrow_mut()
                && f.len() < KEEP
            {
                f.push(Box::new(v));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn a_returned_buffer_is_reused_with_its_length_and_contents() {
        let ptr = {
            let mut s = Scratch::<f64>::take();
            s.get(1000).fill(7.0);
            s.0.as_ptr()
        };
        let mut s = Scratch::<f64>::take();
        // The same allocation comes back, and a shorter request sees the old contents (the
        // contract callers rely on: nothing is zeroed again).
        assert_eq!(s.0.as_ptr(), ptr);
        assert!(s.get(10).iter().all(|&x| x == 7.0));
        // Growing zeroes only the new part.
        let g = s.get(1500);
        assert!(g[..1000].iter().all(|&x| x == 7.0));
        assert!(g[1000..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn buffers_are_kept_per_type_and_bounded() {
        let mut held: Vec<Scratch<f32>> = (0..8).map(|_| Scratch::take()).collect();
        for s in &mut held {
            s.get(16);
        }
        drop(held);
        // At most KEEP f32 buffers came back; a request for another type never receives one.
        let again: Vec<Scratch<f32>> = (0..8).map(|_| Scratch::take()).collect();
        assert_eq!(
            again.iter().filter(|s| !s.0.is_empty()).count(),
            super::KEEP
        );
        assert!(Scratch::<u16>::take().0.is_empty());
        // Oversized buffers are not kept.
        drop(again);
        {
            let mut big = Scratch::<u8>::take();
            big.get(super::MAX_BYTES + 1);
        }
        assert!(Scratch::<u8>::take().0.is_empty());
    }
}
