//! What the host of a session offers it: device jobs and the peer (goten mode), or nothing
//! (plain and enclave modes).
//!
//! Where it sits: between the training loop ([`crate::train_loop`]) and a party's host
//! (`goten_party::host::EnclaveHost`). The host relays only public numbers, tags and receipts
//! under keys it does not hold, and shares.

use goten_enclave::HostServices;
use goten_enclave::session::{Receipt, StateTag};
use goten_party::host::EnclaveHost;
use goten_party::transport::Message;
use goten_party::{NetError, PartyError, Traffic};

/// What the host of a session offers it besides storage: device jobs and the peer (goten
/// mode), or nothing (plain and enclave modes).
pub trait SessionHost {
    /// The ocall services for the session's products (`None`: products run inside).
    fn services(&mut self) -> Option<&mut dyn HostServices>;
    /// Sends this enclave's state tag to the peer's host and returns the peer's.
    fn exchange_tag(&mut self, step: u64, tag: StateTag) -> Result<Option<StateTag>, PartyError>;
    /// Sends this enclave's checkpoint receipt to the peer's host and returns the peer's.
    fn exchange_receipt(&mut self, r: Receipt) -> Result<Option<Receipt>, PartyError>;
    /// Agrees with the peer on the step to resume from (`newest`: this side's newest).
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError>;
    /// Bytes sent and received so far (`None`: no transport).
    fn traffic(&mut self) -> Option<Traffic>;
}

/// The host of plain and enclave modes: no device, no peer.
pub struct LocalHost;

impl SessionHost for LocalHost {
    fn services(&mut self) -> Option<&mut dyn HostServices> {
        None
    }
    fn exchange_tag(&mut self, _: u64, _: StateTag) -> Result<Option<StateTag>, PartyError> {
        Ok(None)
    }
    fn exchange_receipt(&mut self, _: Receipt) -> Result<Option<Receipt>, PartyError> {
        Ok(None)
    }
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError> {
        Ok(newest)
    }
    fn traffic(&mut self) -> Option<Traffic> {
        None
    }
}

/// The host of E0 or E1: its device, its transport to the peer and S2.
pub struct PartyHost<'a>(pub &'a mut EnclaveHost);

impl SessionHost for PartyHost<'_> {
    fn services(&mut self) -> Option<&mut dyn HostServices> {
        Some(self.0)
    }
    fn exchange_tag(&mut self, step: u64, tag: StateTag) -> Result<Option<StateTag>, PartyError> {
        let peer = self.0.peer();
        let t = self.0.transport();
        t.send(
            peer,
            Message::StateDigest {
                step,
                digest: tag.0,
            },
        )?;
        match t.recv(peer)? {
            Message::StateDigest { step: s, digest } if s == step => Ok(Some(StateTag(digest))),
            m => Err(NetError::Unexpected {
                peer,
                expected: format!("state tag of step {step}"),
                got: m.kind().into(),
            }
            .into()),
        }
    }
    fn exchange_receipt(&mut self, r: Receipt) -> Result<Option<Receipt>, PartyError> {
        let peer = self.0.peer();
        let t = self.0.transport();
        t.send(
            peer,
            Message::Receipt {
                step: r.step,
                mac: r.mac,
            },
        )?;
        match t.recv(peer)? {
            Message::Receipt { step, mac } if step == r.step => Ok(Some(Receipt { step, mac })),
            m => Err(NetError::Unexpected {
                peer,
                expected: format!("checkpoint receipt of step {}", r.step),
                got: m.kind().into(),
            }
            .into()),
        }
    }
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError> {
        goten_party::handshake::agree_resume(self.0.transport(), newest)
    }
    fn traffic(&mut self) -> Option<Traffic> {
        Some(self.0.transport().traffic())
    }
}
