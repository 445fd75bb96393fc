//! One outsourced bilinear op on the enclave side (PROTOCOL.md section 2, steps 1-3 and 6).
//!
//! Where it sits: called by the training program inside E0/E1 for every linear layer. It
//! quantizes, plans the split that rules out wraparound ([`crate::bound`]), derives every mask
//! from the session seeds, hands each part's shares to the host through [`HostServices`] (the
//! ocall boundary), and reconstructs the exact integer result from what comes back.
//!
//! What crosses the boundary is typed: [`Share`] can only be built here, from a value that
//! carries a fresh one-time pad (E = aQ - U, F = bQ - V, A0, A1 = aQ - A0, ...) or a pad itself.

use std::sync::{Arc, Mutex};

use goten_field::{BilinearOp, Ring, RingTensor, ShapeError};

use crate::bound::{self, PlanError, reduction_axes};
use crate::check;
use crate::keys::Role;
use crate::prefetch::{self, Expanded, OpStreams, Prefetcher};
use crate::quant::Quantized;
use crate::seeds::{PairPurpose, SeedBook};
use crate::shares::{self, Pending};

/// Public description of one part of an op: all a host or S2 needs, nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpHeader {
    /// Caller-chosen id, unique per op within an iteration (below 2^47).
    pub op_id: u64,
    /// Training iteration (PRG position).
    pub iteration: u64,
    /// 0 for the first computation of the op, 1 for the recomputation after a failed check.
    pub attempt: u8,
    /// This part's index.
    pub part: u32,
    /// Number of parts the reduction was split into.
    pub parts: u32,
    /// The op.
    pub op: BilinearOp,
    /// Shape of this part's first operand.
    pub a_shape: Vec<usize>,
    /// Shape of this part's second operand.
    pub b_shape: Vec<usize>,
}

/// Largest op id: leaves 1 bit for the attempt and 16 for the part index in PRG stream ids.
pub const MAX_OP_ID: u64 = (1 << 46) - 1;

impl OpHeader {
    /// PRG stream id of this part: op id, attempt and part index, never shared by two parts,
    /// so no mask is ever used twice (a recomputation draws fresh masks).
    pub fn stream_id(&self) -> u64 {
        (self.op_id << 17) | (u64::from(self.attempt & 1) << 16) | u64::from(self.part)
    }

    /// Shape of this part's result.
    pub fn output_shape(&self) -> Result<Vec<usize>, ShapeError> {
        self.op.output_shape(&self.a_shape, &self.b_shape)
    }
}

/// A one-time-padded ring tensor released to an untrusted host. Only this crate constructs
/// one, which keeps plaintext from reaching a host by accident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share(RingTensor);

impl Share {
    /// The padded values.
    pub fn tensor(&self) -> &RingTensor {
        &self.0
    }

    /// Takes the padded values.
    pub fn into_tensor(self) -> RingTensor {
        self.0
    }
}

/// The device work for one part: `sum_i f(terms_i) - pad` (step 4 of the protocol).
#[derive(Clone, Debug)]
pub struct DeviceJob {
    /// What to compute.
    pub header: OpHeader,
    /// The products to sum.
    pub terms: Vec<(Share, Share)>,
    /// The output pad to subtract.
    pub pad: Share,
}

impl DeviceJob {
    /// Rebuilds a job that an enclave in another process encoded (the host side of the
    /// process boundary). The buffers were shares when the enclave made them; the host only
    /// carries them on to its device.
    pub fn from_parts(
        header: OpHeader,
        terms: Vec<(RingTensor, RingTensor)>,
        pad: RingTensor,
    ) -> Self {
        DeviceJob {
            header,
            terms: terms
                .into_iter()
                .map(|(a, b)| (Share(a), Share(b)))
                .collect(),
            pad: Share(pad),
        }
    }
}

/// What the host brings back for a part: its own product, the peer's, and S2's.
#[derive(Clone, Debug)]
pub struct JobReply {
    /// This server's product (C0 at S0, C1 at S1).
    pub own: RingTensor,
    /// The other server's product, received over the network.
    pub peer: RingTensor,
    /// Z' from S2.
    pub dealer: RingTensor,
}

/// The host-services ("ocall") boundary of the enclave.
pub trait HostServices {
    /// Announces a part before its shares are ready, so that S2 (which needs only the public
    /// header) can compute Z while the enclave prepares shares. Optional.
    fn announce(
        &mut self,
        _header: &OpHeader,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    /// Seconds the host has spent in device calls and in transport so far (for reports).
    fn busy_secs(&self) -> (f64, f64) {
        (0.0, 0.0)
    }

    /// Runs a device job, exchanges products with the peer and S2, and returns all three.
    fn run_job(
        &mut self,
        job: DeviceJob,
    ) -> Result<JobReply, Box<dyn std::error::Error + Send + Sync>>;
}

/// Why an op failed inside the enclave.
#[derive(Debug, thiserror::Error)]
pub enum LinearError {
    /// Operand shapes do not fit the op (caller error).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// No exact plan exists.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A quantized operand is outside the configured width (caller error).
    #[error("quantized operand out of range: entry {index} = {value}, limit {limit}")]
    Range {
        /// Position.
        index: usize,
        /// Value.
        value: i32,
        /// Largest magnitude allowed.
        limit: i64,
    },
    /// The host failed (device error, peer gone, timeout).
    #[error("host failed during op {op_id} part {part}: {source}")]
    Host {
        /// Op.
        op_id: u64,
        /// Part.
        part: u32,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A returned product has the wrong ring or shape (faulty host, device or peer).
    #[error("{which} product for op {op_id} part {part} is malformed: {detail}")]
    BadReply {
        /// Which product: own, peer or dealer.
        which: &'static str,
        /// Op.
        op_id: u64,
        /// Part.
        part: u32,
        /// What is wrong.
        detail: String,
    },
    /// The reconstructed result fails the integrity check although no wraparound was possible
    /// (or persists after recomputation): a device, host or peer returned a wrong share.
    #[error(
        "op {op_id} (iteration {iteration}): the reconstructed result fails the integrity check; a device, host or peer returned a wrong share"
    )]
    Integrity {
        /// Op.
        op_id: u64,
        /// Iteration.
        iteration: u64,
    },
    /// Op id outside the allowed range, or keys not established.
    #[error("{0}")]
    Usage(String),
}

/// The exact integer result of an op: a single part's residues as they were reconstructed (no
/// widening pass: the check and dequantization read them directly), or the i64 sum of parts.
pub(crate) enum Exact {
    /// One part: centered residues, exact because the check passed.
    Residues(Vec<i32>),
    /// Several parts added in i64.
    Wide(Vec<i64>),
}

impl Exact {
    /// The result as i64 (for callers that want one type).
    pub(crate) fn into_wide(self) -> Vec<i64> {
        match self {
            Exact::Residues(v) => shares::widen(&v),
            Exact::Wide(v) => v,
        }
    }

    fn matches(&self, want: &check::Expected) -> Result<bool, ShapeError> {
        match self {
            Exact::Residues(c) => want.matches(c),
            Exact::Wide(c) => want.matches(c),
        }
    }

    /// The float result `c * 2^-(shift_a + shift_b)`.
    pub(crate) fn dequantize(&self, shift_a: i32, shift_b: i32) -> Vec<f32> {
        match self {
            Exact::Residues(c) => crate::quant::dequantize(c, shift_a, shift_b),
            Exact::Wide(c) => crate::quant::dequantize(c, shift_a, shift_b),
        }
    }
}

/// Runs `op` on quantized operands through the three-party protocol and returns the exact
/// integer result `aQ (x) bQ` (row-major, output shape of the op). `ahead` holds the enclave's
/// guess of the op sequence and this op's tensors if they were expanded ahead
/// ([`crate::prefetch`]). `max_abs`: the operands' range, checked here (`None` when they come
/// from this enclave's quantizer, whose clamp guarantees it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    role: Role,
    ring: Ring,
    seeds: &SeedBook,
    ahead: Ahead<'_>,
    host: &mut dyn HostServices,
    (op_id, iteration): (u64, u64),
    op: &BilinearOp,
    (sa, qa): (&[usize], &Arc<Quantized>),
    (sb, qb): (&[usize], &Arc<Quantized>),
    max_abs: Option<i64>,
) -> Result<Exact, LinearError> {
    if op_id > MAX_OP_ID {
        return Err(LinearError::Usage(format!(
            "op id {op_id} exceeds {MAX_OP_ID}"
        )));
    }
    op.output_shape(sa, sb)?;
    let checked = max_abs.map(|limit| (limit, [&qa.values, &qb.values]));
    for (limit, v) in checked
        .iter()
        .flat_map(|(l, vs)| vs.iter().map(move |v| (*l, v)))
    {
        if let Some(index) = v.iter().position(|&x| i64::from(x).abs() > limit) {
            return Err(LinearError::Range {
                index,
                value: v[index],
                limit,
            });
        }
    }
    if qa.values.len() != sa.iter().product::<usize>()
        || qb.values.len() != sb.iter().product::<usize>()
    {
        return Err(ShapeError::new("quantized operand length does not match its shape").into());
    }
    let mut r = vec![0u32; check::challenge_len(op, sa, sb)?];
    seeds
        .pair(PairPurpose::Check, op_id)
        .fill_u32(iteration, 0, &mut r);
    // The check's operand side needs no result: it is computed on the background pool while
    // the devices compute the products (started when the first part is handed to the host).
    let mut pending_check = None;
    let mut start_check = || {
        let (op, sa, sb, qa, qb, r) = (
            *op,
            sa.to_vec(),
            sb.to_vec(),
            qa.clone(),
            qb.clone(),
            r.clone(),
        );
        pending_check = Some(Pending::spawn(move || {
            check::expected(&op, (&sa, &qa.values), (&sb, &qb.values), &r)
        }));
    };
    let ctx = Ctx {
        role,
        ring,
        seeds,
        prefetch: (ahead.prefetcher, ahead.noise),
        op,
        ids: (op_id, iteration),
        a: (sa, &qa.values),
        b: (sb, &qb.values),
    };
    // First attempt: the whole op in one part. When the Cauchy-Schwarz bound fits, it cannot
    // wrap; when it does not, actual results are usually still far below the headroom (the bound
    // assumes perfectly aligned operands), so try, and let the check decide.
    let len = sa[reduction_axes(op).0];
    let c = execute(&ctx, host, (0, ahead.ready), &[(0, len)], &mut start_check)?;
    let want = match pending_check.and_then(Pending::wait) {
        Some(want) => want,
        None => check::expected(op, ctx.a, ctx.b, &r),
    }?;
    if c.matches(&want)? {
        return Ok(c);
    }
    // Only a failed check needs the bound: if it rules out wraparound, a share was wrong.
    let limit = u128::from(ring.headroom()).pow(2);
    if bound::bound_sq(op, ctx.a, ctx.b)? <= limit {
        return Err(LinearError::Integrity { op_id, iteration });
    }
    // A reduction wrapped (or a share was wrong): recompute, split so that no part can wrap.
    // Weight gradients are first cut into one-output-row bands so they can split below one image.
    let (op2, sa2, a2, sb2, b2) = bound::conv_dw_bands(op, ctx.a, ctx.b)?;
    let ranges = bound::plan(&op2, (&sa2, &a2), (&sb2, &b2), ring.headroom())?;
    let ctx2 = Ctx {
        op: &op2,
        a: (&sa2, &a2),
        b: (&sb2, &b2),
        ..ctx
    };
    let c = execute(&ctx2, host, (1, None), &ranges, &mut || ())?;
    if c.matches(&want)? {
        Ok(c)
    } else {
        Err(LinearError::Integrity { op_id, iteration })
    }
}

/// The enclave's prefetcher as one op sees it.
pub(crate) struct Ahead<'a> {
    /// The prefetcher (it learns from this op and starts the next op's expansion).
    pub prefetcher: &'a Mutex<Prefetcher>,
    /// Which operands this op quantized with stochastic rounding (the next op's guess expands
    /// the rounding noise of the operands it quantized last time).
    pub noise: [bool; 2],
    /// This op's tensors, if they were expanded ahead (taken before its quantization).
    pub ready: Option<Expanded>,
}

/// What every part of one op shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    role: Role,
    ring: Ring,
    seeds: &'a SeedBook,
    /// The enclave's prefetcher, and which operands this op quantized.
    prefetch: (&'a Mutex<Prefetcher>, [bool; 2]),
    op: &'a BilinearOp,
    ids: (u64, u64),
    a: (&'a [usize], &'a [i32]),
    b: (&'a [usize], &'a [i32]),
}

/// Runs the op as the given slices of its reduction axis and sums the parts in i64.
/// `submitted` runs once the first part's job is formed, just before the host runs it; `ready`
/// holds the first part's tensors if they were expanded ahead.
fn execute(
    ctx: &Ctx<'_>,
    host: &mut dyn HostServices,
    (attempt, mut ready): (u8, Option<Expanded>),
    ranges: &[(usize, usize)],
    submitted: &mut dyn FnMut(),
) -> Result<Exact, LinearError> {
    let (ax_a, ax_b) = reduction_axes(ctx.op);
    let out_len: usize = ctx.op.output_shape(ctx.a.0, ctx.b.0)?.iter().product();
    let parts = ranges.len() as u32;
    // One part (the usual case) widens its result in one pass; more add into an accumulator.
    let mut acc = if parts > 1 {
        vec![0i64; out_len]
    } else {
        Vec::new()
    };
    for (part, &(s, e)) in ranges.iter().enumerate() {
        // One part (the usual case) uses the operands as they are; more take slices.
        let sliced = |(shape, v): (&[usize], &[i32]), ax| {
            (parts > 1).then(|| bound::slice_axis(v, shape, ax, s, e))
        };
        let (sa, sb) = (sliced(ctx.a, ax_a), sliced(ctx.b, ax_b));
        let (pa, psa) = sa
            .as_ref()
            .map_or((ctx.a.1, ctx.a.0), |(v, sh)| (&v[..], &sh[..]));
        let (pb, psb) = sb
            .as_ref()
            .map_or((ctx.b.1, ctx.b.0), |(v, sh)| (&v[..], &sh[..]));
        let header = OpHeader {
            op_id: ctx.ids.0,
            iteration: ctx.ids.1,
            attempt,
            part: part as u32,
            parts,
            op: *ctx.op,
            a_shape: psa.to_vec(),
            b_shape: psb.to_vec(),
        };
        let c = run_part(ctx, host, &header, (pa, pb), (ready.take(), submitted))?;
        if parts == 1 {
            return Ok(Exact::Residues(c.into_data()));
        }
        acc.iter_mut()
            .zip(c.data())
            .for_each(|(t, &v)| *t += i64::from(v));
    }
    Ok(Exact::Wide(acc))
}

/// One part: shares and masks, the ocall, reconstruction. Every pass runs on all cores over
/// fixed chunks ([`crate::shares`]), so results do not depend on the thread count. The first
/// attempt's data-independent tensors usually come expanded already ([`crate::prefetch`]);
/// before its products are awaited, the next op's start expanding.
fn run_part(
    ctx: &Ctx<'_>,
    host: &mut dyn HostServices,
    h: &OpHeader,
    (aq, bq): (&[i32], &[i32]),
    (ready, submitted): (Option<Expanded>, &mut dyn FnMut()),
) -> Result<RingTensor, LinearError> {
    let (role, ring) = (ctx.role, ctx.ring);
    if role == Role::S2 {
        return Err(LinearError::Usage("S2 has no enclave".into()));
    }
    let id = h.stream_id();
    let it = h.iteration;
    let out = h.output_shape()?;
    host.announce(h).map_err(|source| LinearError::Host {
        op_id: h.op_id,
        part: h.part,
        source,
    })?;
    // Every buffer below is a PRG stream or ring arithmetic on residues: reduced already.
    let tensor = |shape: &[usize], v: Vec<i32>| RingTensor::from_reduced(ring, shape, v);
    let n_out: usize = out.iter().product();
    // Only first attempts are guessed (a recomputation is rare and splits differently).
    let key = (h.attempt == 0 && h.parts == 1).then_some(prefetch::Key {
        stream_id: id,
        iteration: it,
        lens: [aq.len(), bq.len(), n_out],
        noise: ctx.prefetch.1,
    });
    // Tensors expanded ahead are used only by the part they were expanded for.
    let ready = ready.filter(|t| Some(t.key) == key);
    // The masked operands E = aQ - U and F = bQ - V (the same in both enclaves), and this
    // enclave's shares. S0: C0 = A0 (x) F + E (x) (B0 - F) - CM0;  S1: C1 = A1 (x) F + E (x) B1
    // - CM1, with A1 = aQ - A0 and B1 = bQ - B0. Outputs that read the same operand are formed
    // in one pass: (E, A0 or A1) from aQ with U and A0, (F, B0 - F or B1) from bQ with V and B0.
    let ga = |a: i32, su: i32, sa: i32| match role {
        Role::S0 => (ring.sub(a, su), sa),
        _ => (ring.sub(a, su), ring.sub(a, sa)),
    };
    let gb = |b: i32, sv: i32, sb: i32| {
        let f = ring.sub(b, sv);
        match role {
            Role::S0 => (f, ring.sub(sb, f)),
            _ => (f, ring.sub(b, sb)),
        }
    };
    let (pads, (e, x), (f, y), pad) = match ready {
        Some(t) => {
            let ([mut e, mut x], [mut f, mut y]) = (t.a, t.b);
            shares::two_in_place(aq, &mut e, &mut x, ga);
            shares::two_in_place(bq, &mut f, &mut y, gb);
            (Pending::ready(t.pad_sum), (e, x), (f, y), t.pad)
        }
        None => {
            let OpStreams { a, b, pads, .. } = OpStreams::of(role, ctx.seeds, id);
            let [own, other, dealer] = pads;
            // The own pad is expanded once, for the job; the pad sum CM0 + CM1 + CMZ for the
            // reconstruction adds the other two streams to a copy of it in the background
            // from now on (as the prefetch task does): one copy instead of a second expansion.
            let pad = shares::expand(&own, ring, it, n_out);
            let first = pad.clone();
            let pads =
                Pending::spawn(move || shares::plus_streams(first, &[other, dealer], ring, it));
            let [u, a0] = &a;
            let [v, b0] = &b;
            (
                pads,
                shares::two_streams(ring, it, aq, [u, a0], ga),
                shares::two_streams(ring, it, bq, [v, b0], gb),
                pad,
            )
        }
    };
    // The audit's negative test only (feature `danger-test-expose`): A0 = aQ, so A1 = 0.
    #[cfg(feature = "danger-test-expose")]
    let x = if crate::danger::leak_operand() {
        match role {
            Role::S0 => aq.to_vec(),
            _ => vec![0; aq.len()],
        }
    } else {
        x
    };
    let job = DeviceJob {
        header: h.clone(),
        terms: vec![
            (Share(tensor(&h.a_shape, x)?), Share(tensor(&h.b_shape, f)?)),
            (Share(tensor(&h.a_shape, e)?), Share(tensor(&h.b_shape, y)?)),
        ],
        pad: Share(tensor(&out, pad)?),
    };
    // The check's operand side, then the next op's tensors, are computed on the background
    // pool while this op's products are (in that order: the check is needed first).
    submitted();
    if let Some(k) = key {
        let mut p = ctx.prefetch.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = p.observe(k) {
            p.spawn(role, ring, ctx.seeds, next);
        }
    }
    let reply = host.run_job(job).map_err(|source| LinearError::Host {
        op_id: h.op_id,
        part: h.part,
        source,
    })?;
    for (which, t) in [
        ("own", &reply.own),
        ("peer", &reply.peer),
        ("dealer", &reply.dealer),
    ] {
        if t.ring() != ring || t.shape() != out.as_slice() {
            return Err(LinearError::BadReply {
                which,
                op_id: h.op_id,
                part: h.part,
                detail: format!("got {t:?}, expected {ring} shape {out:?}"),
            });
        }
    }
    // c = C0' + C1' + Z' + CM0 + CM1 + CMZ = aQ (x) bQ, exactly, by the plan's bound.
    let pads = pads.wait().ok_or_else(|| {
        LinearError::Usage("the pad expansion task ended without a result".into())
    })?;
    let mut c = reply.own;
    shares::reconstruct(
        ring,
        c.data_mut(),
        [reply.peer.data(), reply.dealer.data(), &pads],
    );
    Ok(c)
}
