//! The bilinear ops as im2col / col2im around one GEMM, generic over the arithmetic.
//!
//! The same code runs the modular products on shares ([`crate::RingArith`]: centered residues
//! lifted to f64, exact chunked GEMM, wrapping integer accumulation) and the plain float
//! references of the benchmarks (`float_ref`), so a benchmark ratio compares arithmetic, not
//! two different algorithms. No Winograd or FFT: only exact sums of products.

use goten_field::ops::ConvDims;
use rayon::prelude::*;

pub use crate::arith::{Arith, Prepared};
use crate::gemm::{PAR_CHUNK, View};
use crate::scratch::Scratch;

fn lift_all<A: Arith>(a: &A, x: &[A::Elem]) -> Vec<A::F> {
    // An indexed collect writes the output once, without zero-filling it first.
    let mut out = Vec::new();
    x.par_iter()
        .with_min_len(PAR_CHUNK)
        .map(|&s| a.lift(s))
        .collect_into_vec(&mut out);
    out
}

fn finish_all<A: Arith>(a: &A, x: &mut [A::Elem]) {
    x.par_chunks_mut(PAR_CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = a.finish(*v)));
}

/// `y = x W^T`: x `[m, k]`, w `[n, k]`.
pub fn matmul_forward<A: Arith>(
    a: &A,
    (m, n, k): (usize, usize, usize),
    x: &[A::Elem],
    w: &[A::Elem],
) -> Vec<A::Elem> {
    let (xf, wf) = (lift_all(a, x), lift_all(a, w));
    a.gemm(
        (m, n, k),
        View::rows(&xf, k),
        View::transposed(&wf, k),
        a.threads(),
    )
}

/// `dx = dy W`: dy `[m, n]`, w `[n, k]`.
pub fn matmul_input_grad<A: Arith>(
    a: &A,
    (m, n, k): (usize, usize, usize),
    dy: &[A::Elem],
    w: &[A::Elem],
) -> Vec<A::Elem> {
    let (df, wf) = (lift_all(a, dy), lift_all(a, w));
    a.gemm(
        (m, k, n),
        View::rows(&df, n),
        View::rows(&wf, k),
        a.threads(),
    )
}

/// `dW = dy^T x`: dy `[m, n]`, x `[m, k]`.
pub fn matmul_weight_grad<A: Arith>(
    a: &A,
    (m, n, k): (usize, usize, usize),
    dy: &[A::Elem],
    x: &[A::Elem],
) -> Vec<A::Elem> {
    let (df, xf) = (lift_all(a, dy), lift_all(a, x));
    a.gemm(
        (n, k, m),
        View::transposed(&df, n),
        View::rows(&xf, k),
        a.threads(),
    )
}

/// Lifted elements of one im2col buffer at most (32 MiB of f64): bounds memory at any batch.
const COLS_BUDGET: usize = 1 << 22;

/// Weight-gradient partial elements held at once at most (64 MiB of f32 or i32).
const PARTIALS_BUDGET: usize = 1 << 24;

/// Accumulators of a CPU weight gradient (enough to keep two to four cores busy).
const DW_LANES: usize = 4;

/// How a convolution walks its batch: groups of `size` images (the last may be smaller).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Plan {
    /// Images per group.
    size: usize,
    /// Groups run in parallel (each writes its own part of the output).
    parallel: bool,
    /// Workers of each group's GEMM.
    gemm_threads: usize,
}

impl Plan {
    /// The plan for `n` images of `p` output positions and `per_image` im2col elements.
    fn new<A: Arith>(a: &A, n: usize, p: usize, per_image: usize) -> Plan {
        let budget = (COLS_BUDGET / per_image.max(1)).clamp(1, n.max(1));
        let threads = a.threads().max(1);
        match a.group_cols() {
            None => Plan {
                size: budget,
                parallel: false,
                gemm_threads: threads,
            },
            Some(cols) => {
                let size = cols.div_ceil(p.max(1)).clamp(1, budget);
                let groups = n.div_ceil(size);
                let parallel = groups > 1 && threads > 1;
                Plan {
                    size,
                    parallel,
                    gemm_threads: if parallel {
                        (threads / groups).max(1)
                    } else {
                        threads
                    },
                }
            }
        }
    }

    /// Runs `f(index, chunk)` over `buf` in chunks of `chunk` elements, inside one group: in
    /// parallel when groups run one after another, serially when they already run in parallel
    /// (nested tasks of a few hundred elements would cost more than they save).
    fn inner<T: Send>(&self, buf: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
        if buf.is_empty() || chunk == 0 {
            return;
        }
        if self.parallel {
            buf.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
        } else {
            buf.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
        }
    }

    /// Runs `f(scratch, first image, images, output part)` for every group over `out`, split
    /// in parts of `per_image` elements per image. `scratch` is a buffer reused by the groups
    /// one task runs (its contents are whatever the previous group left); as a
    /// [`Scratch`] it also comes from, and returns to, the running thread's kept buffers, so
    /// the large im2col buffers are not allocated and zeroed again at every call.
    fn for_each<T: Send, S: Default>(
        &self,
        out: &mut [T],
        per_image: usize,
        f: impl Fn(&mut S, usize, usize, &mut [T]) + Sync,
    ) {
        if out.is_empty() || per_image == 0 {
            return;
        }
        let run = |scratch: &mut S, (i, part): (usize, &mut [T])| {
            f(scratch, i * self.size, part.len() / per_image, part)
        };
        if self.parallel {
            out.par_chunks_mut(self.size * per_image)
                .enumerate()
                .for_each_init(S::default, run);
        } else {
            let mut scratch = S::default();
            out.chunks_mut(self.size * per_image)
                .enumerate()
                .for_each(|c| run(&mut scratch, c));
        }
    }
}

/// The output positions `lo..hi` whose input index `o * stride + k - pad` lies in `0..inp`
/// (every other position reads zero padding).
fn span(out: usize, inp: usize, stride: usize, k: usize, pad: usize) -> (usize, usize) {
    let lo = if k >= pad {
        0
    } else {
        (pad - k).div_ceil(stride)
    };
    let hi = if inp + pad <= k {
        0
    } else {
        (inp + pad - k - 1) / stride + 1
    };
    let hi = hi.min(out);
    (lo.min(hi), hi)
}

/// Whether output position `i` of a plane reads input `i + const` for every tap: unit strides
/// and as many output as input columns ("same" padding, every VGG layer). Then the valid rows
/// of a tap are one contiguous run; the columns that wrapped around a row edge are padding.
fn flat(d: &ConvDims) -> bool {
    d.params.stride == (1, 1) && d.wo == d.w
}

/// For a [`flat`] convolution, tap `(ki, kj)` over output rows `oh0..oh1` (non-empty, with a
/// non-empty column span): output positions `oh0 * wo + skip ..` and plane elements
/// `from ..`, `len` of each, correspond. Positions of the run outside them are wrapped columns.
fn flat_run(d: &ConvDims, (ki, kj): (usize, usize), (oh0, oh1): (usize, usize)) -> [usize; 3] {
    let (ph, pw) = d.params.padding;
    // Signed plane index of output position oh0 * wo; only a wrapped column can precede the
    // plane or follow its end.
    let start = ((oh0 + ki) * d.w + kj) as isize - (ph * d.w + pw) as isize;
    let skip = usize::try_from(-start).unwrap_or(0);
    let from = (start + skip as isize) as usize;
    let len = ((oh1 - oh0) * d.wo - skip).min(d.h * d.w - from);
    [skip, from, len]
}

/// im2col of images `g0 .. g0 + gn` into `cols` (every element of the returned part is
/// written, so a reused buffer's previous contents do not matter): row `(ci, ki, kj)`, column
/// `(g, oh, ow)`.
fn im2col<'c, A: Arith>(
    a: &A,
    plan: &Plan,
    d: &ConvDims,
    x: &[A::Elem],
    (g0, gn): (usize, usize),
    cols: &'c mut Scratch<A::F>,
) -> &'c [A::F] {
    let p = d.ho * d.wo;
    let (sh, sw) = d.params.stride;
    let (ph, pw) = d.params.padding;
    let zero = A::F::default();
    let cols = cols.get(d.c * d.kh * d.kw * gn * p);
    plan.inner(cols, gn * p, |r, row| {
        let (ci, ki, kj) = (r / (d.kh * d.kw), (r / d.kw) % d.kh, r % d.kw);
        // Rows and columns outside these spans read zero padding, written explicitly.
        let (oh0, oh1) = span(d.ho, d.h, sh, ki, ph);
        let (ow0, ow1) = span(d.wo, d.w, sw, kj, pw);
        if ow0 == ow1 || oh0 == oh1 {
            row.fill(zero);
            return;
        }
        let iw0 = ow0 * sw + kj - pw;
        let flat = flat(d);
        for (g, img) in row.chunks_mut(p).enumerate() {
            let plane = &x[((g0 + g) * d.c + ci) * d.h * d.w..][..d.h * d.w];
            img[..oh0 * d.wo].fill(zero);
            img[oh1 * d.wo..].fill(zero);
            let dst = &mut img[oh0 * d.wo..oh1 * d.wo];
            if flat {
                // One contiguous copy, then the wrapped columns back to zero padding (the run's
                // positions outside `skip .. skip + len` are all wrapped columns: flat_run).
                let [skip, from, len] = flat_run(d, (ki, kj), (oh0, oh1));
                dst[skip..skip + len]
                    .iter_mut()
                    .zip(&plane[from..from + len])
                    .for_each(|(o, &s)| *o = a.lift(s));
                for r in dst.chunks_mut(d.wo) {
                    r[..ow0].fill(zero);
                    r[ow1..].fill(zero);
                }
                continue;
            }
            for (oh, r) in (oh0..oh1).zip(dst.chunks_mut(d.wo)) {
                let ih = oh * sh + ki - ph;
                r[..ow0].fill(zero);
                r[ow1..].fill(zero);
                let src = &plane[ih * d.w + iw0..];
                if sw == 1 {
                    r[ow0..ow1]
                        .iter_mut()
                        .zip(src)
                        .for_each(|(o, &s)| *o = a.lift(s));
                } else {
                    r[ow0..ow1]
                        .iter_mut()
                        .zip(src.iter().step_by(sw))
                        .for_each(|(o, &s)| *o = a.lift(s));
                }
            }
        }
    });
    cols
}

/// dy of images `g0 .. g0 + gn` as `[o, (g, oh, ow)]` (every element written).
fn gather_dy<'s, A: Arith>(
    a: &A,
    plan: &Plan,
    d: &ConvDims,
    dy: &[A::Elem],
    (g0, gn): (usize, usize),
    out: &'s mut Scratch<A::F>,
) -> &'s [A::F] {
    let p = d.ho * d.wo;
    let out = out.get(d.o * gn * p);
    plan.inner(out, gn * p, |oc, row| {
        for g in 0..gn {
            let src = &dy[((g0 + g) * d.o + oc) * p..][..p];
            row[g * p..(g + 1) * p]
                .iter_mut()
                .zip(src)
                .for_each(|(o, &s)| *o = a.lift(s));
        }
    });
    out
}

/// Convolution forward: x `[n, c, h, w]`, w `[o, c, kh, kw]` -> y `[n, o, ho, wo]`.
pub fn conv_forward<A: Arith>(a: &A, d: &ConvDims, x: &[A::Elem], w: &[A::Elem]) -> Vec<A::Elem> {
    let kk = d.c * d.kh * d.kw;
    let p = d.ho * d.wo;
    let wf = lift_all(a, w);
    let mut y = vec![A::Elem::default(); d.n * d.o * p];
    let plan = Plan::new(a, d.n, p, kk * p);
    // Every group multiplies the same weights: packed once, not once per group.
    let wp = a.prepare(View::rows(&wf, kk), (d.o, kk));
    plan.for_each(&mut y, d.o * p, |cols: &mut Scratch<A::F>, g0, gn, part| {
        let cols = im2col(a, &plan, d, x, (g0, gn), cols);
        let out = a.gemm_prepared(
            (d.o, gn * p, kk),
            &wp,
            View::rows(cols, gn * p),
            plan.gemm_threads,
        );
        plan.inner(part, d.o * p, |g, img| {
            for oc in 0..d.o {
                img[oc * p..(oc + 1) * p].copy_from_slice(&out[oc * gn * p + g * p..][..p]);
            }
        });
    });
    y
}

/// Input gradient (transposed convolution): dy `[n, o, ho, wo]`, w `[o, c, kh, kw]` ->
/// dx `[n, c, h, w]`.
pub fn conv_input_grad<A: Arith>(
    a: &A,
    d: &ConvDims,
    dy: &[A::Elem],
    w: &[A::Elem],
) -> Vec<A::Elem> {
    let kk = d.c * d.kh * d.kw;
    let p = d.ho * d.wo;
    let (sh, sw) = d.params.stride;
    let (ph, pw) = d.params.padding;
    let wf = lift_all(a, w);
    let mut dx = vec![A::Elem::default(); d.n * d.c * d.h * d.w];
    let plan = Plan::new(a, d.n, p, kk * p);
    let wp = a.prepare(View::transposed(&wf, kk), (kk, d.o));
    plan.for_each(
        &mut dx,
        d.c * d.h * d.w,
        |dyt: &mut Scratch<A::F>, g0, gn, part| {
            let dyt = gather_dy(a, &plan, d, dy, (g0, gn), dyt);
            let colg = a.gemm_prepared(
                (kk, gn * p, d.o),
                &wp,
                View::rows(dyt, gn * p),
                plan.gemm_threads,
            );
            let flat = flat(d);
            // col2im: each (image, channel) plane is written only by its own rows, so planes are
            // independent parallel tasks and the accumulation order is fixed.
            plan.inner(part, d.h * d.w, |idx, plane| {
                let (g, ci) = (idx / d.c, idx % d.c);
                for ki in 0..d.kh {
                    let (oh0, oh1) = span(d.ho, d.h, sh, ki, ph);
                    for kj in 0..d.kw {
                        let (ow0, ow1) = span(d.wo, d.w, sw, kj, pw);
                        if ow0 == ow1 {
                            continue;
                        }
                        let iw0 = ow0 * sw + kj - pw;
                        let r = (ci * d.kh + ki) * d.kw + kj;
                        let row = &colg[r * gn * p + g * p..][..p];
                        // A tap with no wrapped column adds its valid rows as one run (zeroing
                        // the wrapped columns of the others first was measured slower).
                        if flat && oh0 < oh1 && ow0 == 0 && ow1 == d.wo {
                            let [skip, from, len] = flat_run(d, (ki, kj), (oh0, oh1));
                            plane[from..from + len]
                                .iter_mut()
                                .zip(&row[oh0 * d.wo + skip..][..len])
                                .for_each(|(t, &v)| *t = a.acc(*t, v));
                            continue;
                        }
                        for oh in oh0..oh1 {
                            let ih = oh * sh + ki - ph;
                            let src = &row[oh * d.wo..][ow0..ow1];
                            let dst = &mut plane[ih * d.w + iw0..];
                            if sw == 1 {
                                dst.iter_mut()
                                    .zip(src)
                                    .for_each(|(t, &v)| *t = a.acc(*t, v));
                            } else {
                                dst.iter_mut()
                                    .step_by(sw)
                                    .zip(src)
                                    .for_each(|(t, &v)| *t = a.acc(*t, v));
                            }
                        }
                    }
                }
            });
        },
    );
    finish_all(a, &mut dx);
    dx
}

/// Weight gradient: dy `[n, o, ho, wo]`, x `[n, c, h, w]` -> dW `[o, c, kh, kw]`.
pub fn conv_weight_grad<A: Arith>(
    a: &A,
    d: &ConvDims,
    dy: &[A::Elem],
    x: &[A::Elem],
) -> Vec<A::Elem> {
    let kk = d.c * d.kh * d.kw;
    let p = d.ho * d.wo;
    let grouping = Plan::new(a, d.n, p, kk * p);
    let groups: Vec<(usize, usize)> = (0..d.n)
        .step_by(grouping.size)
        .map(|g0| (g0, grouping.size.min(d.n - g0)))
        .collect();
    // Lane `j` accumulates groups j, j + lanes, ... in order into its own buffer (the GEMM adds
    // into it: no partial buffer per group), and the lanes are added in order at the end. The
    // number of lanes depends on the shapes only, so float sums are the same whatever the
    // thread count; lanes run in parallel.
    let lanes = if a.group_cols().is_some() {
        DW_LANES
            .min(groups.len())
            .min(PARTIALS_BUDGET / (d.o * kk).max(1))
            .max(1)
    } else {
        1
    };
    let threads = a.threads().max(1);
    let plan = Plan {
        parallel: lanes > 1 && threads > 1,
        gemm_threads: (threads / lanes).max(1),
        ..grouping
    };
    let lane = |j: usize| {
        let mut acc = vec![A::Elem::default(); d.o * kk];
        let (mut dyt, mut cols) = (Scratch::take(), Scratch::take());
        for &(g0, gn) in groups.iter().skip(j).step_by(lanes) {
            let dyt = gather_dy(a, &plan, d, dy, (g0, gn), &mut dyt);
            let cols = im2col(a, &plan, d, x, (g0, gn), &mut cols);
            a.gemm_acc(
                &mut acc,
                (d.o, kk, gn * p),
                View::rows(dyt, gn * p),
                View::transposed(cols, gn * p),
                plan.gemm_threads,
            );
        }
        acc
    };
    let mut parts: Vec<Vec<A::Elem>> = if plan.parallel {
        (0..lanes).into_par_iter().map(lane).collect()
    } else {
        (0..lanes).map(lane).collect()
    };
    let mut dw = parts.remove(0);
    for part in parts {
        dw.par_chunks_mut(PAR_CHUNK)
            .zip(part.par_chunks(PAR_CHUNK))
            .for_each(|(t, v)| t.iter_mut().zip(v).for_each(|(t, &v)| *t = a.acc(*t, v)));
    }
    finish_all(a, &mut dw);
    dw
}

#[cfg(test)]
mod tests {
    use super::{ConvDims, flat_run, span};
    use goten_field::Conv2dParams;

    /// What im2col relies on now that its buffer is reused: in a flat convolution every
    /// position that reads the input lies inside flat_run's run and reads the right element,
    /// so the positions outside the run are all wrapped columns, which im2col zeroes.
    #[test]
    fn flat_run_covers_every_valid_position() {
        for h in 1usize..7 {
            for w in 1usize..7 {
                for (k, pad) in [(1usize, 0usize), (3, 1), (5, 2)] {
                    for kh in [1, k] {
                        let ph = if kh == k { pad } else { 0 };
                        if h + 2 * ph < kh {
                            continue;
                        }
                        let d = ConvDims {
                            n: 1,
                            c: 1,
                            h,
                            w,
                            o: 1,
                            kh,
                            kw: k,
                            ho: h + 2 * ph + 1 - kh,
                            wo: w,
                            params: Conv2dParams {
                                stride: (1, 1),
                                padding: (ph, pad),
                            },
                        };
                        for ki in 0..kh {
                            for kj in 0..k {
                                let (oh0, oh1) = span(d.ho, h, 1, ki, ph);
                                let (ow0, ow1) = span(d.wo, w, 1, kj, pad);
                                if oh0 == oh1 || ow0 == ow1 {
                                    continue;
                                }
                                let [skip, from, len] = flat_run(&d, (ki, kj), (oh0, oh1));
                                for q in 0..(oh1 - oh0) * d.wo {
                                    let (oh, ow) = (oh0 + q / d.wo, q % d.wo);
                                    if (ow0..ow1).contains(&ow) {
                                        let at = (oh + ki - ph) * w + ow + kj - pad;
                                        assert!((skip..skip + len).contains(&q), "{d:?}");
                                        assert_eq!(from + q - skip, at, "{d:?} {ki} {kj} {q}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn span_matches_brute_force() {
        for out in 0usize..9 {
            for inp in 0usize..9 {
                for stride in 1usize..4 {
                    for k in 0usize..5 {
                        for pad in 0usize..5 {
                            let inside: Vec<usize> = (0..out)
                                .filter(|&o| {
                                    (o * stride + k).checked_sub(pad).is_some_and(|i| i < inp)
                                })
                                .collect();
                            let (lo, hi) = span(out, inp, stride, k, pad);
                            if inside.is_empty() {
                                assert_eq!(lo, hi, "{out} {inp} {stride} {k} {pad}");
                            } else {
                                assert_eq!((lo, hi), (inside[0], inside[inside.len() - 1] + 1));
                                assert_eq!(inside.len(), hi - lo, "contiguous");
                            }
                        }
                    }
                }
            }
        }
    }
}
