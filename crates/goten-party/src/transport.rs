//! Typed messages between the servers, the [`Transport`] seam, and the in-process transport.
//!
//! Where it sits: under the hosts. Every receive has a timeout, and a peer that disappears is an
//! error naming it, so no party ever hangs on a dead one.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use goten_enclave::keys::{Hello, WrappedKey};
use goten_enclave::{OpHeader, Role};
use goten_field::RingTensor;
use thiserror::Error;

/// Everything servers say to each other.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Key exchange opening.
    Hello(Hello),
    /// E0's dealer key for E1.
    WrappedKey(WrappedKey),
    /// S0/S1 to S2: compute Z for this part.
    DealerRequest(OpHeader),
    /// A padded product (C0', C1' or Z').
    Product {
        /// Which op part.
        header: OpHeader,
        /// The padded product.
        tensor: RingTensor,
    },
    /// E0/E1 state digest at a training step (divergence check).
    StateDigest {
        /// Step.
        step: u64,
        /// SHA-256 of the training state.
        digest: [u8; 32],
    },
    /// The job a party was started with (handshake before the key exchange): S0 and S1 must
    /// agree on both fields; S2 adopts the ring of the job.
    Job {
        /// Width k of the share ring Z_2^k.
        ring_bits: u32,
        /// SHA-256 of model, data and hyper-parameters.
        digest: [u8; 32],
        /// SHA-256 of the cluster file and the danger setting.
        deployment: [u8; 32],
        /// The sender's nonce for this session's hellos.
        nonce: [u8; 32],
    },
    /// On resume: the step of the newest checkpoint this enclave can restore.
    Resume {
        /// Step.
        step: u64,
    },
    /// E0/E1: a receipt that the sender's enclave sealed its checkpoint of `step`.
    Receipt {
        /// Step sealed.
        step: u64,
        /// The receipt's MAC (pair key).
        mac: [u8; 32],
    },
    /// Serving, S0 to S1: a batch of sealed queries (ciphertext for the enclaves' service key)
    /// that both enclaves answer in lockstep.
    Queries(Vec<Vec<u8>>),
    /// Serving, S0 to S1: the model owner's model, sealed to the enclaves' service key.
    Model(Vec<u8>),
    /// Serving: no work now, the sender is alive (keeps idle peers within their timeouts).
    Idle,
    /// Serving, between S0 and S1: S0 asks for E1's evidence over the service key for a
    /// client's nonce (empty `evidence`); S1 answers with it (`wire::encode_evidence`).
    Evidence {
        /// The client's nonce.
        nonce: [u8; 32],
        /// The encoded evidence (empty in the request).
        evidence: Vec<u8>,
    },
    /// The sender has no more work.
    Done,
}

impl Message {
    /// Short name for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::WrappedKey(_) => "wrapped key",
            Message::DealerRequest(_) => "dealer request",
            Message::Product { .. } => "product",
            Message::StateDigest { .. } => "state digest",
            Message::Job { .. } => "job description",
            Message::Resume { .. } => "resume point",
            Message::Receipt { .. } => "checkpoint receipt",
            Message::Queries(_) => "sealed queries",
            Message::Idle => "idle",
            Message::Model(_) => "sealed model",
            Message::Evidence { .. } => "evidence",
            Message::Done => "done",
        }
    }

    /// Ring elements carried (for traffic accounting).
    pub fn elements(&self) -> usize {
        match self {
            Message::Product { tensor, .. } => tensor.len(),
            _ => 0,
        }
    }
}

/// Transport failures, each naming the peer.
#[derive(Debug, Error)]
pub enum NetError {
    /// Nothing arrived in time.
    #[error("timed out after {secs:.1} s waiting for {peer}")]
    Timeout {
        /// Peer.
        peer: Role,
        /// Timeout.
        secs: f64,
    },
    /// The peer's end is gone (crashed or exited).
    #[error("{peer} disconnected")]
    PeerGone {
        /// Peer.
        peer: Role,
    },
    /// A message of the wrong kind or for the wrong op.
    #[error("{peer} sent {got}, expected {expected}")]
    Unexpected {
        /// Peer.
        peer: Role,
        /// What was expected.
        expected: String,
        /// What came.
        got: String,
    },
    /// No route to that party.
    #[error("no channel from {from} to {to}")]
    NoRoute {
        /// Sender.
        from: Role,
        /// Receiver.
        to: Role,
    },
}

/// Sends and receives typed messages between servers.
pub trait Transport: Send {
    /// Who this endpoint belongs to.
    fn me(&self) -> Role;
    /// Sends `msg` to `to`.
    fn send(&mut self, to: Role, msg: Message) -> Result<(), NetError>;
    /// Receives the next message from `from`, within the transport's timeout.
    fn recv(&mut self, from: Role) -> Result<Message, NetError>;
    /// Seconds spent sending and waiting so far.
    fn busy_secs(&self) -> f64;
    /// Ring elements sent so far.
    fn elements_sent(&self) -> u64;
    /// Bytes sent and received so far, counted as wire frames ([`crate::wire`]) whether or
    /// not this transport encodes them.
    fn traffic(&self) -> Traffic;
}

/// Bytes on the wire, in frames (TLS adds about 22 bytes per 16 KiB record on top).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, o: Traffic) -> Traffic {
        Traffic {
            sent: self.sent - o.sent,
            received: self.received - o.received,
        }
    }
}

/// One endpoint of the in-process mesh.
pub struct InProcess {
    me: Role,
    tx: [Option<Sender<Message>>; 3],
    rx: [Option<Receiver<Message>>; 3],
    timeout: Duration,
    busy: f64,
    sent: u64,
    traffic: Traffic,
}

/// Three connected endpoints (index = role), one channel per ordered pair.
pub fn in_process_mesh(timeout: Duration) -> [InProcess; 3] {
    let mut ends: [InProcess; 3] = Role::ALL.map(|me| InProcess {
        me,
        tx: [None, None, None],
        rx: [None, None, None],
        timeout,
        busy: 0.0,
        sent: 0,
        traffic: Traffic::default(),
    });
    for from in Role::ALL {
        for to in Role::ALL {
            if from != to {
                let (tx, rx) = channel();
                ends[from.index()].tx[to.index()] = Some(tx);
                ends[to.index()].rx[from.index()] = Some(rx);
            }
        }
    }
    ends
}

impl Transport for InProcess {
    fn me(&self) -> Role {
        self.me
    }

    fn send(&mut self, to: Role, msg: Message) -> Result<(), NetError> {
        let t = Instant::now();
        self.sent += msg.elements() as u64;
        self.traffic.sent += crate::wire::frame_len(&msg) as u64;
        let tx = self.tx[to.index()]
            .as_ref()
            .ok_or(NetError::NoRoute { from: self.me, to })?;
        let r = tx.send(msg).map_err(|_| NetError::PeerGone { peer: to });
        self.busy += t.elapsed().as_secs_f64();
        r
    }

    fn recv(&mut self, from: Role) -> Result<Message, NetError> {
        let t = Instant::now();
        let rx = self.rx[from.index()]
            .as_ref()
            .ok_or(NetError::NoRoute { from, to: self.me })?;
        let r = rx.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => NetError::Timeout {
                peer: from,
                secs: self.timeout.as_secs_f64(),
            },
            RecvTimeoutError::Disconnected => NetError::PeerGone { peer: from },
        });
        self.busy += t.elapsed().as_secs_f64();
        if let Ok(m) = &r {
            self.traffic.received += crate::wire::frame_len(m) as u64;
        }
        r
    }

    fn busy_secs(&self) -> f64 {
        self.busy
    }

    fn elements_sent(&self) -> u64 {
        self.sent
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}
