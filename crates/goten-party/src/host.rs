//! The S0 / S1 host: runs the enclave's device jobs and exchanges products with the peer and S2.
//!
//! Where it sits: it implements the enclave's ocall trait ([`HostServices`]). It only ever
//! handles [`goten_enclave::Share`]s and padded products.

use std::time::Instant;

use goten_device::Device;
use goten_enclave::{DeviceJob, HostServices, JobReply, Role};
use goten_field::RingTensor;

use crate::transport::{Message, NetError, Transport};

/// The untrusted half of S0 or S1.
pub struct EnclaveHost {
    me: Role,
    device: Box<dyn Device>,
    transport: Box<dyn Transport>,
    device_secs: f64,
    jobs: u64,
}

impl EnclaveHost {
    /// A host for `me` (S0 or S1).
    pub fn new(device: Box<dyn Device>, transport: Box<dyn Transport>) -> Self {
        EnclaveHost {
            me: transport.me(),
            device,
            transport,
            device_secs: 0.0,
            jobs: 0,
        }
    }

    /// The peer server (S1 for S0 and vice versa).
    pub fn peer(&self) -> Role {
        if self.me == Role::S0 {
            Role::S1
        } else {
            Role::S0
        }
    }

    /// The transport (for the key exchange and shutdown).
    pub fn transport(&mut self) -> &mut dyn Transport {
        &mut *self.transport
    }

    /// Seconds spent in device calls.
    pub fn device_secs(&self) -> f64 {
        self.device_secs
    }

    /// Seconds spent sending and waiting on the network.
    pub fn transport_secs(&self) -> f64 {
        self.transport.busy_secs()
    }

    /// Device jobs (op parts) run since the last reset.
    pub fn jobs_run(&self) -> u64 {
        self.jobs
    }

    /// Resets the job counter.
    pub fn reset_jobs_run(&mut self) {
        self.jobs = 0;
    }

    /// Ring elements sent.
    pub fn elements_sent(&self) -> u64 {
        self.transport.elements_sent()
    }
}

/// Receives the product for `header` from `from`.
pub(crate) fn expect_product(
    t: &mut dyn Transport,
    from: Role,
    header: &goten_enclave::OpHeader,
) -> Result<RingTensor, NetError> {
    match t.recv(from)? {
        Message::Product { header: h, tensor } if &h == header => Ok(tensor),
        Message::Product { header: h, .. } => Err(NetError::Unexpected {
            peer: from,
            expected: format!(
                "product of op {} attempt {} part {} (iteration {})",
                header.op_id, header.attempt, header.part, header.iteration
            ),
            got: format!(
                "product of op {} attempt {} part {} (iteration {})",
                h.op_id, h.attempt, h.part, h.iteration
            ),
        }),
        other => Err(NetError::Unexpected {
            peer: from,
            expected: "product".into(),
            got: other.kind().into(),
        }),
    }
}

impl HostServices for EnclaveHost {
    fn busy_secs(&self) -> (f64, f64) {
        (self.device_secs, self.transport.busy_secs())
    }

    fn announce(
        &mut self,
        header: &goten_enclave::OpHeader,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // S2 needs only the header: it starts on Z while the enclave prepares shares.
        Ok(self
            .transport
            .send(Role::S2, Message::DealerRequest(header.clone()))?)
    }

    fn run_job(
        &mut self,
        job: DeviceJob,
    ) -> Result<JobReply, Box<dyn std::error::Error + Send + Sync>> {
        self.jobs += 1;
        let t = Instant::now();
        let terms: Vec<_> = job
            .terms
            .iter()
            .map(|(a, b)| (a.tensor(), b.tensor()))
            .collect();
        let own = self
            .device
            .combine(&job.header.op, &terms, Some(job.pad.tensor()))?;
        self.device_secs += t.elapsed().as_secs_f64();
        let peer = self.peer();
        self.transport.send(
            peer,
            Message::Product {
                header: job.header.clone(),
                tensor: own.clone(),
            },
        )?;
        let peer_product = expect_product(&mut *self.transport, peer, &job.header)?;
        let dealer = expect_product(&mut *self.transport, Role::S2, &job.header)?;
        Ok(JobReply {
            own,
            peer: peer_product,
            dealer,
        })
    }
}
