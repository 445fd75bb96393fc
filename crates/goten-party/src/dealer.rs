//! S2, the dealer: computes Z = U (x) V - CMZ for every op part S0 and S1 agree on.
//!
//! Where it sits: a host with a device and the dealer key, no enclave. It expands U, V and CMZ
//! itself (it is entitled to them), so no input ever crosses the network to it.

use std::time::Instant;

use goten_device::Device;
use goten_enclave::seeds::{DealerPurpose, dealer_stream};
use goten_enclave::{OpHeader, Role};
use goten_field::{Ring, RingTensor, SecretKey};

use crate::cluster::PartyError;
use crate::transport::{Message, NetError, Traffic, Transport};

/// Serves dealer requests until both S0 and S1 say they are done. Returns device seconds.
/// `on_iteration(i, bytes)` is told the traffic of each protocol iteration `i` (a training or
/// evaluation step) once the next one starts or the run ends.
pub fn serve(
    ring: Ring,
    key: &SecretKey,
    device: &dyn Device,
    t: &mut dyn Transport,
    on_iteration: &mut dyn FnMut(u64, Traffic),
) -> Result<f64, PartyError> {
    let mut device_secs = 0.0;
    let mut current: Option<(u64, Traffic)> = None;
    loop {
        let m0 = t.recv(Role::S0)?;
        let m1 = t.recv(Role::S1)?;
        let iteration = match &m0 {
            Message::DealerRequest(h) => Some(h.iteration),
            _ => None,
        };
        // The requests just received belong to the new iteration; count them there.
        let now = t.traffic();
        if let Some((i, start)) = current
            && iteration != Some(i)
        {
            on_iteration(i, now - start);
            current = None;
        }
        if current.is_none() {
            current = iteration.map(|i| (i, now));
        }
        let (h0, h1) = match (m0, m1) {
            (Message::Done, Message::Done) => return Ok(device_secs),
            // A serving cluster between queries: S0 and S1 both say they are alive; answering
            // lets them notice a dead S2 while idle.
            (Message::Idle, Message::Idle) => {
                for to in [Role::S0, Role::S1] {
                    t.send(to, Message::Idle)?;
                }
                continue;
            }
            (Message::DealerRequest(h0), Message::DealerRequest(h1)) => (h0, h1),
            (a, b) => {
                return Err(NetError::Unexpected {
                    peer: Role::S0,
                    expected: "matching dealer requests or done from S0 and S1".into(),
                    got: format!("{} from S0 and {} from S1", a.kind(), b.kind()),
                }
                .into());
            }
        };
        if h0 != h1 {
            return Err(PartyError::Disagree(format!(
                "S0 asks for {h0:?}, S1 for {h1:?}"
            )));
        }
        let t0 = Instant::now();
        let z = dealer_product(ring, key, device, &h0)?;
        device_secs += t0.elapsed().as_secs_f64();
        for to in [Role::S0, Role::S1] {
            t.send(
                to,
                Message::Product {
                    header: h0.clone(),
                    tensor: z.clone(),
                },
            )?;
        }
    }
}

/// Z = U (x) V - CMZ for one op part.
pub fn dealer_product(
    ring: Ring,
    key: &SecretKey,
    device: &dyn Device,
    h: &OpHeader,
) -> Result<RingTensor, PartyError> {
    let id = h.stream_id();
    let out = h.output_shape()?;
    let mut u = RingTensor::zeros(ring, &h.a_shape)?;
    let mut v = RingTensor::zeros(ring, &h.b_shape)?;
    let mut cmz = RingTensor::zeros(ring, &out)?;
    dealer_stream(key, DealerPurpose::MaskU, id).fill_ring(ring, h.iteration, 0, u.data_mut());
    dealer_stream(key, DealerPurpose::MaskV, id).fill_ring(ring, h.iteration, 0, v.data_mut());
    dealer_stream(key, DealerPurpose::PadZ, id).fill_ring(ring, h.iteration, 0, cmz.data_mut());
    Ok(device.combine(&h.op, &[(&u, &v)], Some(&cmz))?)
}
