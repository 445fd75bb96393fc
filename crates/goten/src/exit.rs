//! Exit codes: one per class of fault, so scripts can tell whose fault a failure was.
//!
//! Where it sits: at the very end of `main`. Library errors name their cause in their types
//! (ARCHITECTURE.md principle 6); this walks an error's chain of causes and maps the first one
//! that says whose fault it is to a code. The table is in the README.

use goten_enclave::keys::KeyError;
use goten_enclave::linear::LinearError;
use goten_enclave::nn::NnError;
use goten_enclave::nn::checkpoint::CheckpointError;
use goten_enclave::sealed_data::OpenError;
use goten_enclave::session::SessionError;
use goten_enclave::{EnclaveError, bound::PlanError};
use goten_party::deploy::DeployError;
use goten_party::{NetError, PartyError};
use goten_runtime::RuntimeError;

/// Whose fault a failure was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The command line or a configuration file (also clap's own usage errors).
    Config = 2,
    /// Another party: disconnected, timed out, misbehaved, or its evidence failed.
    Peer = 3,
    /// The untrusted device (GPU or CPU backend).
    Device = 4,
    /// The input data: a dataset file or a sealed record.
    Data = 5,
    /// Local storage: checkpoints, key files, the output folder.
    Storage = 6,
    /// A bug in goten (a party thread panicked).
    Internal = 7,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Config,
        Fault::Peer,
        Fault::Device,
        Fault::Data,
        Fault::Storage,
        Fault::Internal,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Fault::Config => "configuration",
            Fault::Peer => "another party",
            Fault::Device => "device",
            Fault::Data => "input data",
            Fault::Storage => "local storage",
            Fault::Internal => "internal error",
        }
    }
}

fn party(e: &PartyError) -> Option<Fault> {
    Some(match e {
        PartyError::Net(_)
        | PartyError::Keys(_)
        | PartyError::Disagree(_)
        | PartyError::Diverged(_) => Fault::Peer,
        PartyError::Device(_) => Fault::Device,
        PartyError::Storage(_) => Fault::Storage,
        PartyError::Panic(_) => Fault::Internal,
        PartyError::Shape(_) => Fault::Config,
        PartyError::Enclave(e) => return enclave(e),
        PartyError::Session(e) => return session(e),
        PartyError::At { source, .. } => return party(source),
    })
}

fn enclave(e: &EnclaveError) -> Option<Fault> {
    Some(match e {
        EnclaveError::Config(_) | EnclaveError::Quant(_) => Fault::Config,
        EnclaveError::Keys(_) => Fault::Peer,
        EnclaveError::Linear(l) => return linear(l),
        EnclaveError::State(_) => Fault::Internal,
    })
}

fn linear(e: &LinearError) -> Option<Fault> {
    match e {
        // The host's own failure: its cause (device, peer) is further down the chain.
        LinearError::Host { .. } => None,
        LinearError::Plan(_) => Some(Fault::Config),
        LinearError::Shape(_) | LinearError::Range { .. } => Some(Fault::Internal),
        // A malformed or wrong product: a faulty device, host or peer.
        _ => Some(Fault::Peer),
    }
}

fn session(e: &SessionError) -> Option<Fault> {
    Some(match e {
        SessionError::Config(_) => Fault::Config,
        SessionError::Data(_) => Fault::Data,
        SessionError::Checkpoint(_) => Fault::Storage,
        SessionError::Diverged(_) => Fault::Peer,
        SessionError::State(_) => Fault::Internal,
        SessionError::Reported { fault, .. } => match fault {
            goten_enclave::session::Fault::Config => Fault::Config,
            goten_enclave::session::Fault::Peer => Fault::Peer,
            goten_enclave::session::Fault::Device => Fault::Device,
            goten_enclave::session::Fault::Data => Fault::Data,
            goten_enclave::session::Fault::Storage => Fault::Storage,
            goten_enclave::session::Fault::Internal => Fault::Internal,
        },
        SessionError::Nn(NnError::Enclave(e)) => return enclave(e),
        SessionError::Nn(NnError::Numeric(_)) => Fault::Config,
        SessionError::Nn(_) => Fault::Internal,
    })
}

fn runtime(e: &RuntimeError) -> Option<Fault> {
    Some(match e {
        RuntimeError::Config(_) | RuntimeError::Deploy(_) => Fault::Config,
        RuntimeError::Data { .. } => Fault::Data,
        RuntimeError::Storage { .. } => Fault::Storage,
        RuntimeError::Device(_) => Fault::Device,
        // A party process of a launch: its class is its exit status.
        RuntimeError::Launch { code, .. } => {
            return code.and_then(|c| Fault::ALL.into_iter().find(|f| *f as i32 == c));
        }
        RuntimeError::Party(p) => return party(p),
    })
}

/// The class of `e`: the first cause in its chain that names a culprit; configuration when
/// none does (the command's own checks of its options).
pub(crate) fn classify(e: &anyhow::Error) -> Fault {
    for cause in e.chain() {
        let found = if let Some(r) = cause.downcast_ref::<RuntimeError>() {
            runtime(r)
        } else if let Some(p) = cause.downcast_ref::<PartyError>() {
            party(p)
        } else if let Some(s) = cause.downcast_ref::<SessionError>() {
            session(s)
        } else if let Some(x) = cause.downcast_ref::<EnclaveError>() {
            enclave(x)
        } else if let Some(l) = cause.downcast_ref::<LinearError>() {
            linear(l)
        } else if cause.is::<NetError>() || cause.is::<KeyError>() {
            Some(Fault::Peer)
        } else if cause.is::<goten_device::DeviceError>() {
            Some(Fault::Device)
        } else if cause.is::<goten_data::DataError>() || cause.is::<OpenError>() {
            Some(Fault::Data)
        } else if cause.is::<CheckpointError>() || cause.is::<std::io::Error>() {
            Some(Fault::Storage)
        } else if cause.is::<DeployError>() || cause.is::<PlanError>() {
            Some(Fault::Config)
        } else {
            None
        };
        if let Some(f) = found {
            return f;
        }
    }
    Fault::Config
}
