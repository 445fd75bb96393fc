//! The wire format of [`Message`]s: length-prefixed frames with strict decoding.
//!
//! Where it sits: under the TCP transport (the networking issue); the in-process transport
//! passes messages without encoding. Frame: `"GT"`, version ([`VERSION`]), kind u8, sequence number u64,
//! body length u32, body. Shares travel packed at the ring's width (`goten_field::codec`).
//! Decoding checks every length against the frame before using it, bounds ranks, element counts
//! and frame size, checks a product's shape against its op header, and rejects trailing bytes,
//! so a malformed or hostile frame is an error, never a panic or an allocation of a claimed
//! size.

use goten_enclave::attest::Evidence;
use goten_enclave::keys::{Hello, WrappedKey};
use goten_enclave::{OpHeader, Role};
use goten_field::{BilinearOp, Conv2dParams, Ring, codec};
use thiserror::Error;

use crate::transport::Message;

/// Largest frame body accepted (1 GiB): bounds memory per message.
pub const MAX_BODY: usize = 1 << 30;

/// Version of the frame format (2: the job description carries the deployment hash and the
/// sender's session nonce; hellos may carry hardware evidence).
pub const VERSION: u8 = 2;
const MAX_RANK: usize = 4;
pub(crate) const HEADER: usize = 16;

/// Why bytes are not a valid frame.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the frame needs.
    #[error("truncated frame: {0}")]
    Truncated(&'static str),
    /// Not a goten frame.
    #[error("bad frame magic: not a goten party")]
    Magic,
    /// A goten frame of another version: the other side runs another goten build.
    #[error(
        "frame version {found}, but this build speaks version {expected}: the other side runs a different goten build"
    )]
    Version {
        /// The version received.
        found: u8,
        /// This build's.
        expected: u8,
    },
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A length or count beyond the limits.
    #[error("frame too large or malformed: {0}")]
    Limit(String),
    /// Structurally invalid content.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which part.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

pub(crate) struct W(pub(crate) Vec<u8>);

impl W {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(crate) fn shape(&mut self, s: &[usize]) {
        self.u8(s.len() as u8);
        s.iter().for_each(|&d| self.u64(d as u64));
    }
    pub(crate) fn header(&mut self, h: &OpHeader) {
        self.u64(h.op_id);
        self.u64(h.iteration);
        self.u8(h.attempt);
        self.u32(h.part);
        self.u32(h.parts);
        let (kind, p, extra) = match h.op {
            BilinearOp::MatmulForward => (1, None, (0, 0)),
            BilinearOp::MatmulInputGrad => (2, None, (0, 0)),
            BilinearOp::MatmulWeightGrad => (3, None, (0, 0)),
            BilinearOp::Conv2dForward(p) => (4, Some(p), (0, 0)),
            BilinearOp::Conv2dInputGrad { params, input_hw } => (5, Some(params), input_hw),
            BilinearOp::Conv2dWeightGrad { params, kernel_hw } => (6, Some(params), kernel_hw),
        };
        self.u8(kind);
        let p = p.unwrap_or(Conv2dParams {
            stride: (0, 0),
            padding: (0, 0),
        });
        for v in [
            p.stride.0,
            p.stride.1,
            p.padding.0,
            p.padding.1,
            extra.0,
            extra.1,
        ] {
            self.u32(v as u32);
        }
        self.shape(&h.a_shape);
        self.shape(&h.b_shape);
    }
}

impl W {
    pub(crate) fn evidence(&mut self, e: &Evidence) {
        match e {
            Evidence::Simulated {
                measurement,
                report_data,
                signature,
            } => {
                self.u8(1);
                self.bytes(measurement);
                self.bytes(report_data);
                self.bytes(signature);
            }
            Evidence::Dealer {
                report_data,
                signature,
            } => {
                self.u8(2);
                self.bytes(report_data);
                self.bytes(signature);
            }
            Evidence::Hardware { tee, quote } => {
                self.u8(3);
                self.u8(*tee);
                self.blob(quote);
            }
        }
    }
}

/// The largest hardware quote or report accepted (DCAP quotes with their certification data
/// are a few KiB; SEV-SNP reports 1184 bytes).
const MAX_QUOTE: usize = 64 * 1024;

pub(crate) struct R<'a>(pub(crate) &'a [u8]);

impl R<'_> {
    pub(crate) fn evidence(&mut self) -> Result<Evidence, WireError> {
        Ok(match self.u8("evidence")? {
            1 => Evidence::Simulated {
                measurement: self.arr("evidence")?,
                report_data: self.arr("evidence")?,
                signature: self.arr("evidence")?,
            },
            2 => Evidence::Dealer {
                report_data: self.arr("evidence")?,
                signature: self.arr("evidence")?,
            },
            3 => {
                let tee = self.u8("evidence")?;
                let quote = self.blob("hardware evidence")?;
                if quote.len() > MAX_QUOTE {
                    return Err(WireError::Limit(format!(
                        "hardware evidence of {} bytes",
                        quote.len()
                    )));
                }
                Evidence::Hardware {
                    tee,
                    quote: quote.to_vec(),
                }
            }
            k => {
                return Err(WireError::Malformed {
                    what: "evidence",
                    detail: format!("kind {k}"),
                });
            }
        })
    }
}

impl<'a> R<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    pub(crate) fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }
    pub(crate) fn shape(&mut self) -> Result<Vec<usize>, WireError> {
        let rank = usize::from(self.u8("shape rank")?);
        if rank > MAX_RANK {
            return Err(WireError::Limit(format!("rank {rank}")));
        }
        let mut s = Vec::with_capacity(rank);
        let mut elems: u64 = 1;
        for _ in 0..rank {
            let d = self.u64("shape")?;
            elems = elems
                .checked_mul(d)
                .filter(|&e| e <= MAX_BODY as u64)
                .ok_or_else(|| WireError::Limit("shape has too many elements".into()))?;
            s.push(d as usize);
        }
        Ok(s)
    }
    pub(crate) fn header(&mut self) -> Result<OpHeader, WireError> {
        let (op_id, iteration) = (self.u64("op header")?, self.u64("op header")?);
        let attempt = self.u8("op header")?;
        let (part, parts) = (self.u32("op header")?, self.u32("op header")?);
        let kind = self.u8("op header")?;
        let mut v = [0usize; 6];
        for x in &mut v {
            *x = self.u32("op header")? as usize;
        }
        let params = Conv2dParams {
            stride: (v[0], v[1]),
            padding: (v[2], v[3]),
        };
        let op = match kind {
            1 => BilinearOp::MatmulForward,
            2 => BilinearOp::MatmulInputGrad,
            3 => BilinearOp::MatmulWeightGrad,
            4 => BilinearOp::Conv2dForward(params),
            5 => BilinearOp::Conv2dInputGrad {
                params,
                input_hw: (v[4], v[5]),
            },
            6 => BilinearOp::Conv2dWeightGrad {
                params,
                kernel_hw: (v[4], v[5]),
            },
            k => {
                return Err(WireError::Malformed {
                    what: "op header",
                    detail: format!("op kind {k}"),
                });
            }
        };
        let (a_shape, b_shape) = (self.shape()?, self.shape()?);
        let h = OpHeader {
            op_id,
            iteration,
            attempt,
            part,
            parts,
            op,
            a_shape,
            b_shape,
        };
        // The op must be well formed: shapes that fit it, an output of bounded size.
        let out = h.output_shape().map_err(|e| WireError::Malformed {
            what: "op header",
            detail: e.to_string(),
        })?;
        if out
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .is_none_or(|n| n > MAX_BODY as u64)
        {
            return Err(WireError::Limit("op output too large".into()));
        }
        Ok(h)
    }
}

fn role(b: u8) -> Result<Role, WireError> {
    Role::ALL
        .get(usize::from(b))
        .copied()
        .ok_or(WireError::Malformed {
            what: "hello",
            detail: format!("role {b}"),
        })
}

/// Evidence alone, in the hello's encoding (kind byte, then its fields; a hardware quote with
/// its length): what the provisioning answer and the serving attestation endpoint carry.
pub fn encode_evidence(e: &Evidence) -> Vec<u8> {
    let mut w = W(Vec::new());
    w.evidence(e);
    w.0
}

/// Decodes [`encode_evidence`]'s bytes, all of them.
pub fn decode_evidence(b: &[u8]) -> Result<Evidence, WireError> {
    let mut r = R(b);
    let e = r.evidence()?;
    if !r.0.is_empty() {
        return Err(WireError::Malformed {
            what: "evidence",
            detail: format!("{} trailing bytes", r.0.len()),
        });
    }
    Ok(e)
}

/// Encodes `msg` as one frame with sequence number `seq`; products are packed at their ring's
/// width.
pub fn encode(msg: &Message, seq: u64) -> Vec<u8> {
    let mut b = W(Vec::new());
    let kind = match msg {
        Message::Hello(h) => {
            b.u8(h.role.index() as u8);
            b.bytes(&h.public);
            b.evidence(&h.evidence);
            1
        }
        Message::WrappedKey(w) => {
            b.bytes(&w.ciphertext);
            b.bytes(&w.tag);
            2
        }
        Message::DealerRequest(h) => {
            b.header(h);
            3
        }
        Message::Product { header, tensor } => {
            b.header(header);
            b.bytes(&codec::encode_packed(tensor.ring(), tensor.data()));
            4
        }
        Message::StateDigest { step, digest } => {
            b.u64(*step);
            b.bytes(digest);
            5
        }
        Message::Done => 6,
        Message::Job {
            ring_bits,
            digest,
            deployment,
            nonce,
        } => {
            b.u32(*ring_bits);
            b.bytes(digest);
            b.bytes(deployment);
            b.bytes(nonce);
            7
        }
        Message::Resume { step } => {
            b.u64(*step);
            8
        }
        Message::Receipt { step, mac } => {
            b.u64(*step);
            b.bytes(mac);
            9
        }
        Message::Queries(qs) => {
            b.u32(qs.len() as u32);
            qs.iter().for_each(|q| b.blob(q));
            10
        }
        Message::Idle => 11,
        Message::Model(m) => {
            b.blob(m);
            13
        }
        Message::Evidence { nonce, evidence } => {
            b.bytes(nonce);
            b.blob(evidence);
            12
        }
    };
    let mut f = Vec::with_capacity(HEADER + b.0.len());
    f.extend_from_slice(b"GT");
    f.push(VERSION);
    f.push(kind);
    f.extend_from_slice(&seq.to_le_bytes());
    f.extend_from_slice(&(b.0.len() as u32).to_le_bytes());
    f.extend_from_slice(&b.0);
    f
}

/// Length of `msg`'s frame, without building it for products (traffic accounting of
/// transports that pass messages in memory).
pub fn frame_len(msg: &Message) -> usize {
    match msg {
        Message::Product { header, tensor } => {
            let mut w = W(Vec::new());
            w.header(header);
            HEADER + w.0.len() + codec::packed_len(tensor.ring(), tensor.len())
        }
        m => encode(m, 0).len(),
    }
}

/// Body length announced by a frame header (after checking magic, version and the limit):
/// what a stream reader must read next.
pub fn body_len(header: &[u8; HEADER]) -> Result<usize, WireError> {
    if &header[..2] != b"GT" {
        return Err(WireError::Magic);
    }
    if header[2] != VERSION {
        return Err(WireError::Version {
            found: header[2],
            expected: VERSION,
        });
    }
    let n = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
    if n > MAX_BODY {
        return Err(WireError::Limit(format!("body of {n} bytes")));
    }
    Ok(n)
}

/// Decodes one complete frame: its sequence number and message. Products must be in `ring`.
pub fn decode(frame: &[u8], ring: Ring) -> Result<(u64, Message), WireError> {
    let head: [u8; HEADER] = frame
        .get(..HEADER)
        .ok_or(WireError::Truncated("frame header"))?
        .try_into()
        .expect("16 bytes");
    let n = body_len(&head)?;
    let kind = head[3];
    let seq = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
    if frame.len() != HEADER + n {
        return Err(WireError::Truncated(
            "frame body length differs from the header",
        ));
    }
    let mut r = R(&frame[HEADER..]);
    let msg = match kind {
        1 => {
            let role = role(r.u8("hello")?)?;
            let public = r.arr::<32>("hello")?;
            let evidence = r.evidence()?;
            Message::Hello(Hello {
                role,
                public,
                evidence,
            })
        }
        2 => Message::WrappedKey(WrappedKey {
            ciphertext: r.arr("wrapped key")?,
            tag: r.arr("wrapped key")?,
        }),
        3 => Message::DealerRequest(r.header()?),
        4 => {
            let header = r.header()?;
            let shape = header.output_shape().expect("checked in header()");
            let rest = std::mem::take(&mut r.0);
            let tensor = codec::decode_packed_tensor(ring, &shape, rest).map_err(|e| {
                WireError::Malformed {
                    what: "product",
                    detail: e.to_string(),
                }
            })?;
            Message::Product { header, tensor }
        }
        5 => Message::StateDigest {
            step: r.u64("state digest")?,
            digest: r.arr("state digest")?,
        },
        6 => Message::Done,
        7 => Message::Job {
            ring_bits: r.u32("job description")?,
            digest: r.arr("job description")?,
            deployment: r.arr("job description")?,
            nonce: r.arr("job description")?,
        },
        8 => Message::Resume {
            step: r.u64("resume point")?,
        },
        9 => Message::Receipt {
            step: r.u64("checkpoint receipt")?,
            mac: r.arr("checkpoint receipt")?,
        },
        10 => {
            let n = r.u32("sealed queries")? as usize;
            // Each query takes at least its 4-byte length: bounds the count by the frame.
            if n > r.0.len() / 4 {
                return Err(WireError::Limit(format!("{n} sealed queries")));
            }
            let mut qs = Vec::with_capacity(n);
            for _ in 0..n {
                qs.push(r.blob("sealed query")?.to_vec());
            }
            Message::Queries(qs)
        }
        11 => Message::Idle,
        13 => Message::Model(r.blob("sealed model")?.to_vec()),
        12 => Message::Evidence {
            nonce: r.arr("evidence")?,
            evidence: r.blob("evidence")?.to_vec(),
        },
        k => return Err(WireError::Kind(k)),
    };
    if !r.0.is_empty() {
        return Err(WireError::Malformed {
            what: "frame",
            detail: format!("{} trailing bytes", r.0.len()),
        });
    }
    Ok((seq, msg))
}
