//! Per-thread reusable buffers for the CPU products.
//!
//! A batched step makes hundreds of products, each wanting a zeroed accumulator of tens of KiB
//! to a few MiB. Freshly allocated, such a buffer is a `calloc` of a size the allocator serves
//! from whole pages: it zeroes them by handing them back to the kernel (`madvise`), which must
//! shoot the stale mappings out of every core's TLB (an interrupt to each thread of the process)
//! and then fault every page in again. On a two-core machine serving 16 sequences that was more
//! than a third of the run. A reused buffer is zeroed with a plain `memset` over pages that stay
//! mapped.

use std::cell::RefCell;

/// Buffers kept per thread, at most (a product nests at most one level: the caller's buffer and
/// a task's).
const KEPT: usize = 4;

/// Largest buffer kept for reuse, in `f32`s (16 MiB, so a thread keeps at most 64 MiB): a
/// larger one is an unusual product (a big batch), and holding it would cost more memory than
/// its allocation costs time.
const KEPT_MAX: usize = 4 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer of `n` values from this thread's pool (or a new one): hand it back with
/// [`recycle`] when done, or keep it (a result).
pub(crate) fn take_zeroed(n: usize) -> Vec<f32> {
    let mut buf = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    buf.clear();
    buf.resize(n, 0.0);
    buf
}

/// Returns a buffer to this thread's pool (dropped if the pool is full or it is too large).
pub(crate) fn recycle(buf: Vec<f32>) {
    if buf.capacity() <= KEPT_MAX {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEPT {
                p.push(buf);
            }
        });
    }
}

/// Runs `f` on a zeroed buffer of `n` values borrowed from this thread's pool, then returns the
/// buffer to it. Re-entrant: a nested call (a work-stealing thread running another product
/// while it waits) borrows another buffer.
pub(crate) fn with_zeroed<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = take_zeroed(n);
    let r = f(&mut buf);
    recycle(buf);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_zeroed_and_nest() {
        with_zeroed(8, |a| {
            assert!(a.iter().all(|&v| v == 0.0));
            a.fill(7.0);
            with_zeroed(8, |b| {
                assert!(b.iter().all(|&v| v == 0.0), "a nested call gets its own buffer");
                b.fill(3.0);
            });
            assert!(a.iter().all(|&v| v == 7.0));
        });
        // The same buffers again (reused, dirty): zeroed to the asked length.
        with_zeroed(16, |a| assert_eq!(a, &[0.0; 16][..]));
        with_zeroed(4, |a| assert_eq!(a.len(), 4));
    }
}
