//! Bodies of the ecall codec: the training configuration, dataset splits, loss windows and
//! wrapped keys, on top of the wire format's integers, shapes and evidence.
//!
//! Where it sits: under [`super::codec`], which frames these. Every reader checks lengths
//! against the bytes left before using them.

use goten_enclave::keys::{Hello, WrappedKey};
use goten_enclave::nn::export::Named;
use goten_enclave::nn::input::InputSpec;
use goten_enclave::nn::optim::Schedule;
use goten_enclave::session::{Protection, Split, TrainConfig, WindowLoss};
use goten_field::{Ring, RingTensor, codec};

use crate::transport::Message;
use crate::wire::{self, R, W, WireError};

pub(super) fn bad(what: &'static str, detail: impl Into<String>) -> WireError {
    WireError::Malformed {
        what,
        detail: detail.into(),
    }
}

impl W {
    pub(crate) fn blob(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.bytes(b);
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.blob(s.as_bytes());
    }
    /// A ring tensor as canonical u32 words: on a local socket, bytes are cheap and packing
    /// at k bits is not (the wire between machines packs; this channel does not).
    pub(super) fn tensor(&mut self, t: &RingTensor) {
        self.shape(t.shape());
        let ring = t.ring();
        self.0.reserve(4 * t.len());
        // Through a small buffer that stays in cache: the frame's memory is written once (no
        // zeroing first), and the fixed-size loop vectorises (this runs on every share).
        let mut tmp = [0u8; 4096];
        for chunk in t.data().chunks(tmp.len() / 4) {
            let out = &mut tmp[..4 * chunk.len()];
            for (dst, &x) in out.chunks_exact_mut(4).zip(chunk) {
                dst.copy_from_slice(&ring.to_canonical(x).to_le_bytes());
            }
            self.0.extend_from_slice(out);
        }
    }
    pub(super) fn hello(&mut self, h: &Hello) {
        self.blob(&wire::encode(&Message::Hello(h.clone()), 0));
    }
    pub(crate) fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }
}

impl<'a> R<'a> {
    pub(crate) fn blob(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let n = self.u64(what)?;
        if n > self.0.len() as u64 {
            return Err(WireError::Truncated(what));
        }
        self.take(n as usize, what)
    }
    pub(crate) fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        String::from_utf8(self.blob(what)?.to_vec()).map_err(|_| bad(what, "not UTF-8"))
    }
    pub(super) fn tensor(&mut self, ring: Ring) -> Result<RingTensor, WireError> {
        let shape = self.shape()?;
        let len = shape
            .iter()
            .try_fold(4usize, |acc, &d| acc.checked_mul(d))
            .ok_or(WireError::Truncated("ring tensor"))?;
        let bytes = self.take(len, "ring tensor")?;
        codec::decode_u32_tensor(ring, &shape, bytes).map_err(|e| bad("ring tensor", e.to_string()))
    }
    pub(super) fn hello(&mut self) -> Result<Hello, WireError> {
        match wire::decode(self.blob("hello")?, Ring::DEFAULT)?.1 {
            Message::Hello(h) => Ok(h),
            m => Err(bad("hello", format!("got {}", m.kind()))),
        }
    }
    pub(crate) fn f32(&mut self, what: &'static str) -> Result<f32, WireError> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    pub(crate) fn flag(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(bad(what, format!("flag {v}"))),
        }
    }
}

pub(super) fn put_config(w: &mut W, c: &TrainConfig) {
    super::arch::put_arch(w, &c.model);
    w.u64(c.classes as u64);
    w.u64(c.seed);
    w.u64(c.epochs);
    w.u64(c.batch as u64);
    w.f32(c.lr);
    match c.schedule {
        Schedule::Constant => w.u8(0),
        Schedule::Step { every, gamma } => {
            w.u8(1);
            w.u64(every as u64);
            w.f32(gamma);
        }
        Schedule::Cosine { total } => {
            w.u8(2);
            w.u64(total);
        }
    }
    w.u64(c.total_steps);
    w.u64(c.loss_window);
    w.u8(u8::from(c.protection == Protection::Protected));
    w.bytes(&c.fingerprint);
    match &c.model_owner {
        Some(k) => {
            w.u8(1);
            w.bytes(k);
        }
        None => w.u8(0),
    }
    w.u8(u8::from(c.danger_plaintext_export));
    let i = &c.input;
    i.shape.iter().for_each(|&d| w.u64(d as u64));
    for v in [&i.mean, &i.std] {
        w.u64(v.len() as u64);
        v.iter().for_each(|&x| w.f32(x));
    }
    w.u64(i.pad as u64);
    w.u8(u8::from(i.flip));
    w.u8(u8::from(i.from_training));
    match &c.init {
        None => w.u8(0),
        Some(ts) => {
            w.u8(1);
            w.u64(ts.len() as u64);
            for t in ts {
                w.str(&t.name);
                w.shape(&t.shape);
                t.data.iter().for_each(|&x| w.f32(x));
            }
        }
    }
}

/// Starting weights: at most this many tensors (each value's 4 bytes must be in the frame,
/// whose own limit bounds the total).
const MAX_INIT_TENSORS: u64 = 100_000;

fn get_init(r: &mut R<'_>) -> Result<Option<Vec<Named>>, WireError> {
    if !r.flag("init")? {
        return Ok(None);
    }
    let n = r.u64("init")?;
    if n > MAX_INIT_TENSORS {
        return Err(bad("init", format!("{n} tensors")));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let name = r.str("init name")?;
        let shape = r.shape()?;
        let len: usize = shape.iter().product();
        // `take` refuses a length beyond the frame before anything is allocated.
        let bytes = r.take(
            len.checked_mul(4)
                .ok_or(WireError::Truncated("init data"))?,
            "init data",
        )?;
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.push(Named { name, shape, data });
    }
    Ok(Some(out))
}

/// Per-channel statistics: at most this many channels.
const MAX_CHANNELS: u64 = 64;

fn get_input(r: &mut R<'_>) -> Result<InputSpec, WireError> {
    let mut shape = [0usize; 3];
    for d in &mut shape {
        *d = r.u64("input shape")? as usize;
    }
    let mut stats = [Vec::new(), Vec::new()];
    for v in &mut stats {
        let n = r.u64("input statistics")?;
        if n > MAX_CHANNELS {
            return Err(bad("input statistics", format!("{n} channels")));
        }
        for _ in 0..n {
            v.push(r.f32("input statistics")?);
        }
    }
    let [mean, std] = stats;
    Ok(InputSpec {
        shape,
        mean,
        std,
        pad: r.u64("input")? as usize,
        flip: r.flag("input")?,
        from_training: r.flag("input")?,
    })
}

pub(super) fn get_config(r: &mut R<'_>) -> Result<TrainConfig, WireError> {
    let model = super::arch::get_arch(r)?;
    let classes = r.u64("config")? as usize;
    let (seed, epochs, batch) = (
        r.u64("config")?,
        r.u64("config")?,
        r.u64("config")? as usize,
    );
    let lr = r.f32("config")?;
    let schedule = match r.u8("schedule")? {
        0 => Schedule::Constant,
        1 => Schedule::Step {
            every: r.u64("schedule")? as usize,
            gamma: r.f32("schedule")?,
        },
        2 => Schedule::Cosine {
            total: r.u64("schedule")?,
        },
        k => return Err(bad("schedule", format!("kind {k}"))),
    };
    Ok(TrainConfig {
        model,
        classes,
        seed,
        epochs,
        batch,
        lr,
        schedule,
        total_steps: r.u64("config")?,
        loss_window: r.u64("config")?,
        protection: if r.flag("config")? {
            Protection::Protected
        } else {
            Protection::None
        },
        fingerprint: r.arr("config")?,
        model_owner: if r.flag("model owner")? {
            Some(r.arr("model owner")?)
        } else {
            None
        },
        danger_plaintext_export: r.flag("config")?,
        input: get_input(r)?,
        init: get_init(r)?,
    })
}

pub(super) fn put_split(w: &mut W, s: &Split) {
    match s {
        Split::Plain { images, labels } => {
            w.u8(0);
            w.blob(images);
            w.blob(labels);
        }
        Split::Sealed {
            split,
            version,
            records,
            key,
        } => {
            w.u8(1);
            w.str(split);
            w.u64(u64::from(*version));
            w.u64(records.len() as u64);
            records.iter().for_each(|r| w.blob(r));
            match key {
                Some(k) => {
                    w.u8(1);
                    w.bytes(&k[..]);
                }
                None => w.u8(0),
            }
        }
    }
}

pub(super) fn get_split(r: &mut R<'_>) -> Result<Split, WireError> {
    match r.u8("split")? {
        0 => Ok(Split::Plain {
            images: r.blob("split images")?.to_vec(),
            labels: r.blob("split labels")?.to_vec(),
        }),
        1 => {
            let split = r.str("split name")?;
            let version = r.u64("split version")?;
            let version =
                u32::try_from(version).map_err(|_| bad("split version", format!("{version}")))?;
            let n = r.u64("split records")?;
            // Each record takes at least its 8-byte length: bounds the count by the frame.
            if n > r.0.len() as u64 / 8 {
                return Err(WireError::Truncated("split records"));
            }
            let records = (0..n)
                .map(|_| r.blob("sealed record").map(<[u8]>::to_vec))
                .collect::<Result<_, _>>()?;
            let key = if r.flag("data key")? {
                Some(zeroize::Zeroizing::new(r.arr("data key")?))
            } else {
                None
            };
            Ok(Split::Sealed {
                split,
                version,
                records,
                key,
            })
        }
        k => Err(bad("split", format!("kind {k}"))),
    }
}

pub(super) fn put_window(w: &mut W, l: &Option<WindowLoss>) {
    match l {
        None => w.u8(0),
        Some(l) => {
            w.u8(1);
            w.u64(l.first_step);
            w.u64(l.last_step);
            w.f32(l.mean);
        }
    }
}

pub(super) fn get_window(r: &mut R<'_>) -> Result<Option<WindowLoss>, WireError> {
    Ok(if r.flag("loss window")? {
        Some(WindowLoss {
            first_step: r.u64("loss window")?,
            last_step: r.u64("loss window")?,
            mean: r.f32("loss window")?,
        })
    } else {
        None
    })
}

pub(super) fn put_wrapped(w: &mut W, k: &Option<WrappedKey>) {
    match k {
        None => w.u8(0),
        Some(k) => {
            w.u8(1);
            w.bytes(&k.ciphertext);
            w.bytes(&k.tag);
        }
    }
}

pub(super) fn get_wrapped(r: &mut R<'_>) -> Result<Option<WrappedKey>, WireError> {
    Ok(if r.flag("wrapped key")? {
        Some(WrappedKey {
            ciphertext: r.arr("wrapped key")?,
            tag: r.arr("wrapped key")?,
        })
    } else {
        None
    })
}
