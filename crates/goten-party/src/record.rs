//! Recording wrappers: capture every buffer an untrusted device or host receives.
//!
//! Where it sits: in privacy audits (tests) between a party and its real device / transport.
//! Recording changes nothing about what is computed or sent.

use std::sync::{Arc, Mutex};

use goten_device::{Device, DeviceError};
use goten_enclave::Role;
use goten_field::{BilinearOp, RingTensor};

use crate::transport::{Message, NetError, Transport};

/// One captured buffer.
#[derive(Clone, Debug)]
pub struct Record {
    /// Which server's host or device received it.
    pub party: Role,
    /// Where it was captured.
    pub source: &'static str,
    /// The values.
    pub tensor: RingTensor,
}

/// One captured byte message: its receiver and bytes.
type ByteMessage = (Role, Vec<u8>);

/// A shared log of captured buffers (ring tensors) and byte messages (sealed queries).
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Record>>>, Arc<Mutex<Vec<ByteMessage>>>);

impl Recorder {
    /// Every byte message captured so far (sealed queries a host received), with its receiver.
    pub fn messages(&self) -> Vec<(Role, Vec<u8>)> {
        self.1.lock().expect("recorder lock").clone()
    }

    fn push(&self, party: Role, source: &'static str, t: &RingTensor) {
        self.0.lock().expect("recorder lock").push(Record {
            party,
            source,
            tensor: t.clone(),
        });
    }

    /// Everything captured so far.
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().expect("recorder lock").clone()
    }
}

/// A device that records its inputs.
pub struct RecordingDevice {
    inner: Box<dyn Device>,
    party: Role,
    rec: Recorder,
}

impl RecordingDevice {
    /// Wraps `inner` for `party`.
    pub fn new(inner: Box<dyn Device>, party: Role, rec: Recorder) -> Self {
        RecordingDevice { inner, party, rec }
    }
}

impl Device for RecordingDevice {
    fn name(&self) -> String {
        format!("recording {}", self.inner.name())
    }

    fn bilinear(
        &self,
        op: &BilinearOp,
        a: &RingTensor,
        b: &RingTensor,
    ) -> Result<RingTensor, DeviceError> {
        self.rec.push(self.party, "device operand", a);
        self.rec.push(self.party, "device operand", b);
        self.inner.bilinear(op, a, b)
    }

    fn combine(
        &self,
        op: &BilinearOp,
        terms: &[(&RingTensor, &RingTensor)],
        pad: Option<&RingTensor>,
    ) -> Result<RingTensor, DeviceError> {
        for (a, b) in terms {
            self.rec.push(self.party, "device operand", a);
            self.rec.push(self.party, "device operand", b);
        }
        if let Some(p) = pad {
            self.rec.push(self.party, "device pad", p);
        }
        self.inner.combine(op, terms, pad)
    }
}

/// A transport that records every tensor it receives.
pub struct RecordingTransport {
    inner: Box<dyn Transport>,
    rec: Recorder,
}

impl RecordingTransport {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Transport>, rec: Recorder) -> Self {
        RecordingTransport { inner, rec }
    }
}

impl Transport for RecordingTransport {
    fn me(&self) -> Role {
        self.inner.me()
    }

    fn send(&mut self, to: Role, msg: Message) -> Result<(), NetError> {
        self.inner.send(to, msg)
    }

    fn recv(&mut self, from: Role) -> Result<Message, NetError> {
        let m = self.inner.recv(from)?;
        match &m {
            Message::Product { tensor, .. } => {
                self.rec.push(self.inner.me(), "received product", tensor);
            }
            Message::Queries(qs) => {
                let mut log = self.rec.1.lock().expect("recorder lock");
                log.extend(qs.iter().map(|q| (self.inner.me(), q.clone())));
            }
            _ => {}
        }
        Ok(m)
    }

    fn busy_secs(&self) -> f64 {
        self.inner.busy_secs()
    }

    fn elements_sent(&self) -> u64 {
        self.inner.elements_sent()
    }

    fn traffic(&self) -> crate::transport::Traffic {
        self.inner.traffic()
    }
}

/// A transport that lets a test alter every message it sends (tampering and man-in-the-middle
/// tests). Recording counters pass through.
pub struct Tamper<F: FnMut(&mut Message) + Send> {
    inner: Box<dyn Transport>,
    alter: F,
}

impl<F: FnMut(&mut Message) + Send> Tamper<F> {
    /// Wraps `inner`; `alter` sees each outgoing message before it is sent.
    pub fn new(inner: Box<dyn Transport>, alter: F) -> Self {
        Tamper { inner, alter }
    }
}

impl<F: FnMut(&mut Message) + Send> Transport for Tamper<F> {
    fn me(&self) -> Role {
        self.inner.me()
    }

    fn send(&mut self, to: Role, mut msg: Message) -> Result<(), NetError> {
        (self.alter)(&mut msg);
        self.inner.send(to, msg)
    }

    fn recv(&mut self, from: Role) -> Result<Message, NetError> {
        self.inner.recv(from)
    }

    fn busy_secs(&self) -> f64 {
        self.inner.busy_secs()
    }

    fn elements_sent(&self) -> u64 {
        self.inner.elements_sent()
    }

    fn traffic(&self) -> crate::transport::Traffic {
        self.inner.traffic()
    }
}
