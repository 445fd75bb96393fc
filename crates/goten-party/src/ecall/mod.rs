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
    /// Bytes this end has written (the enclave side's count is what crossed to the host).
    pub bytes_sent: u64,
}

impl Channel {
    /// A channel over `stream` for shares of `ring`.
    pub fn new(stream: UnixStream, ring: Ring) -> Self {
        Channel {
            stream,
            ring,
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

    /// Receives one frame: (kind, body).
    pub fn recv(&mut self) -> Result<(u8, Vec<u8>), ChannelError> {
        let mut head = [0u8; codec::HEADER];
        self.read_exact(&mut head)?;
        let (kind, n) = codec::parse_header(&head)?;
        // Up to 256 MiB is read straight into its buffer; beyond that the buffer grows as bytes
        // arrive, so a lying length costs the liar, not this side's memory.
        let mut body = Vec::new();
        if n <= 1 << 28 {
            body.resize(n, 0);
            self.read_exact(&mut body)?;
            return Ok((kind, body));
        }
        (&mut self.stream)
            .take(n as u64)
            .read_to_end(&mut body)
            .map_err(|e| self.io_error(e))?;
        if body.len() != n {
            return Err(ChannelError::Closed);
        }
        Ok((kind, body))
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
