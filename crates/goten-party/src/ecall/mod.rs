//! Enclaves as separate processes (`--enclave process`): the ecall/ocall channel.
//!
//! Where it sits: between a party's host (S0 or S1: device, network, files) and its enclave
//! program running as a child process, the shape of a real SGX deployment (the enclave under
//! an SGX runtime such as Gramine, the host outside). They share nothing but a Unix socket:
//! the host sends ecalls ([`codec::ToEnclave`]), the enclave answers or makes ocalls
//! ([`codec::FromEnclave`]: announce a part, run a device job) that the host answers before the
//! ecall returns. [`child::serve`] is the enclave's side; [`remote::RemoteEnclave`] the host's,
//! which implements the same session interface as an enclave in this process, so the
//! training loop does not know which it drives.

mod arch;
mod body;
pub mod child;
pub mod codec;
pub mod party;
pub mod remote;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use goten_field::Ring;

use crate::wire::WireError;

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The other end closed the socket (exited or crashed).
    #[error("closed the channel")]
    Closed,
    /// Nothing arrived in time.
    #[error("sent nothing for {0:.0} s")]
    Timeout(f64),
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Io(std::io::Error),
    /// A frame that does not decode.
    #[error("sent a malformed frame: {0}")]
    Malformed(#[from] WireError),
    /// A well-formed message out of turn.
    #[error("sent {0} out of turn")]
    Unexpected(&'static str),
}

/// One end of the local channel: whole frames in, whole frames out.
pub struct Channel {
    stream: UnixStream,
    ring: Ring,
    /// The last frame received and the next frame sent: kept, so that the large share frames
    /// of every step reuse memory instead of faulting in fresh pages.
    recv_buf: Vec<u8>,
    send_buf: Vec<u8>,
    /// Bytes this end has written (the enclave side's count is what crossed to the host).
    pub bytes_sent: u64,
}

impl Channel {
    /// A channel over `stream` for shares of `ring`.
    pub fn new(stream: UnixStream, ring: Ring) -> Self {
        Channel {
            stream,
            ring,
            recv_buf: Vec::new(),
            send_buf: Vec::new(),
            bytes_sent: 0,
        }
    }

    /// The share ring (set once the enclave knows it).
    pub fn set_ring(&mut self, ring: Ring) {
        self.ring = ring;
    }

    /// The share ring.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// Encodes a message with `encode` into this channel's send buffer and sends it.
    pub fn send_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), ChannelError> {
        let mut buf = std::mem::take(&mut self.send_buf);
        encode(&mut buf);
        let r = self.send(&buf);
        self.send_buf = buf;
        r
    }

    /// Sends one frame.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        self.stream.write_all(frame).map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                ChannelError::Closed
            }
            _ => ChannelError::Io(e),
        })?;
        self.bytes_sent += frame.len() as u64;
        Ok(())
    }

    /// Receives one frame: (kind, body), the body valid until the next call.
    pub fn recv(&mut self) -> Result<(u8, &[u8]), ChannelError> {
        let mut head = [0u8; codec::HEADER];
        self.read_exact(&mut head)?;
        let (kind, n) = codec::parse_header(&head)?;
        let mut buf = std::mem::take(&mut self.recv_buf);
        // Up to 256 MiB is read straight into the buffer, which keeps its largest length (so
        // it is neither zeroed nor faulted in again); beyond that it grows as bytes arrive, so
        // a lying length costs the liar, not this side's memory.
        let r = if n <= 1 << 28 {
            if buf.len() < n {
                buf.resize(n, 0);
            }
            self.read_exact(&mut buf[..n])
        } else {
            buf.clear();
            match (&mut self.stream).take(n as u64).read_to_end(&mut buf) {
                Ok(got) if got == n => Ok(()),
                Ok(_) => Err(ChannelError::Closed),
                Err(e) => Err(self.io_error(e)),
            }
        };
        self.recv_buf = buf;
        r?;
        Ok((kind, &self.recv_buf[..n]))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.stream.read_exact(buf).map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: std::io::Error) -> ChannelError {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => ChannelError::Closed,
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ChannelError::Timeout(
                self.stream
                    .read_timeout()
                    .ok()
                    .flatten()
                    .map_or(0.0, |d| d.as_secs_f64()),
            ),
            _ => ChannelError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codec::{FromEnclave, decode_from_enclave, encode_from_enclave_into};

    /// The reused buffers hand out exactly each frame, whatever the sizes before it.
    #[test]
    fn reused_buffers_return_each_frame_exactly() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (
            Channel::new(a, Ring::DEFAULT),
            Channel::new(b, Ring::DEFAULT),
        );
        let msgs = [
            FromEnclave::ReportData([1; 32]),
            FromEnclave::Error(goten_enclave::session::Fault::Data, "x".repeat(5000)),
            FromEnclave::Done,
            FromEnclave::Error(goten_enclave::session::Fault::Peer, "short".into()),
        ];
        let writer = std::thread::spawn(move || {
            for m in &msgs {
                tx.send_with(|buf| encode_from_enclave_into(m, buf))
                    .unwrap();
            }
        });
        let mut got = Vec::new();
        for _ in 0..4 {
            let (kind, body) = rx.recv().unwrap();
            got.push(
                match decode_from_enclave(kind, body, Ring::DEFAULT).unwrap() {
                    FromEnclave::ReportData(d) => format!("report {}", d[0]),
                    FromEnclave::Error(_, m) => format!("error {}", m.len()),
                    FromEnclave::Done => "done".into(),
                    _ => "other".into(),
                },
            );
        }
        writer.join().unwrap();
        assert_eq!(got, ["report 1", "error 5000", "done", "error 5"]);
    }
}
