//! Whose fault an error is: the classes an enclave's errors fall into.
//!
//! Where it sits: beside the session's errors. An enclave process reports the class with each
//! error (the ecall codec numbers them by [`Fault::ALL`]), and the command line maps the same
//! classes to exit codes, so there is one classification, here, next to the errors it reads.

use super::SessionError;
use crate::EnclaveError;
use crate::nn::NnError;

/// Whose fault a session error is: kept when an error crosses a process boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The caller's configuration.
    Config,
    /// Another party (or a product it returned).
    Peer,
    /// The untrusted device.
    Device,
    /// The input data.
    Data,
    /// Local storage (a checkpoint).
    Storage,
    /// A bug.
    Internal,
}

impl Fault {
    /// Every class, in a fixed order (codecs and exit codes number them by it).
    pub const ALL: [Fault; 6] = [
        Fault::Config,
        Fault::Peer,
        Fault::Device,
        Fault::Data,
        Fault::Storage,
        Fault::Internal,
    ];
}

impl crate::linear::LinearError {
    /// Whose fault this is; `None` for the host's own failure, whose cause (a device, a peer)
    /// the host's error names.
    pub fn fault(&self) -> Option<Fault> {
        use crate::linear::LinearError;
        match self {
            LinearError::Host { .. } => None,
            LinearError::Plan(_) => Some(Fault::Config),
            LinearError::Shape(_) | LinearError::Range { .. } | LinearError::Usage(_) => {
                Some(Fault::Internal)
            }
            // A malformed or wrong product: a faulty device, host or peer.
            LinearError::BadReply { .. } | LinearError::Integrity { .. } => Some(Fault::Peer),
        }
    }
}

impl EnclaveError {
    /// Whose fault this is (see [`crate::linear::LinearError::fault`] for `None`).
    pub fn fault(&self) -> Option<Fault> {
        match self {
            EnclaveError::Config(_) | EnclaveError::Quant(_) => Some(Fault::Config),
            EnclaveError::Keys(_) => Some(Fault::Peer),
            EnclaveError::Linear(l) => l.fault(),
            EnclaveError::State(_) => Some(Fault::Internal),
        }
    }
}

impl SessionError {
    /// Whose fault this is, when the error itself says (`None`: a host service failed, and
    /// the host's own error names the cause).
    pub fn known_fault(&self) -> Option<Fault> {
        match self {
            SessionError::Config(_) | SessionError::Nn(NnError::Numeric(_)) => Some(Fault::Config),
            SessionError::Data(_) => Some(Fault::Data),
            SessionError::Checkpoint(_) => Some(Fault::Storage),
            SessionError::Diverged(_) => Some(Fault::Peer),
            SessionError::Reported { fault, .. } => Some(*fault),
            SessionError::Nn(NnError::Enclave(e)) => e.fault(),
            SessionError::State(_) | SessionError::Nn(_) => Some(Fault::Internal),
        }
    }

    /// Whose fault this is, for reporting across a process boundary: a failed host service
    /// counts as the peer's (the host that reads the report substitutes its own cause).
    pub fn fault(&self) -> Fault {
        self.known_fault().unwrap_or(Fault::Peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::LinearError;

    #[test]
    fn each_error_names_its_class() {
        let host = LinearError::Host {
            op_id: 1,
            part: 0,
            source: "device gone".into(),
        };
        // The host's own failure defers to the host's error; across a process boundary it
        // counts as the peer's.
        assert_eq!(host.fault(), None);
        let s = SessionError::from(EnclaveError::Linear(host));
        assert_eq!((s.known_fault(), s.fault()), (None, Fault::Peer));
        let usage = EnclaveError::Linear(LinearError::Usage("op id".into()));
        assert_eq!(usage.fault(), Some(Fault::Internal));
        let wrong = LinearError::Integrity {
            op_id: 1,
            iteration: 0,
        };
        assert_eq!(wrong.fault(), Some(Fault::Peer));
        assert_eq!(SessionError::Data("x".into()).fault(), Fault::Data);
        let reported = SessionError::Reported {
            fault: Fault::Device,
            message: "m".into(),
        };
        assert_eq!(reported.fault(), Fault::Device);
        assert_eq!(Fault::ALL.len(), 6);
    }
}
