//! Exit codes: one per class of fault, so scripts can tell whose fault a failure was.
//!
//! Where it sits: at the very end of `main`. Library errors name their cause in their types
//! (ARCHITECTURE.md principle 6), and the enclave's errors classify themselves
//! (`goten_enclave::session::Fault`, the classes an enclave process reports too); this walks an
//! error's chain of causes and maps the first one that says whose fault it is to a code. The
//! table is in the README.

use goten_enclave::keys::KeyError;
use goten_enclave::linear::LinearError;
use goten_enclave::nn::checkpoint::CheckpointError;
use goten_enclave::sealed_data::OpenError;
use goten_enclave::session::SessionError;
use goten_enclave::{EnclaveError, bound::PlanError};
use goten_party::deploy::DeployError;
use goten_party::{NetError, PartyError};
use goten_runtime::RuntimeError;
use goten_runtime::serve::client::ClientError;

pub(crate) use goten_enclave::session::Fault;

/// The exit status of a class (the README's table).
pub(crate) fn code(f: Fault) -> u8 {
    match f {
        // Also clap's own usage errors.
        Fault::Config => 2,
        Fault::Peer => 3,
        Fault::Device => 4,
        Fault::Data => 5,
        Fault::Storage => 6,
        Fault::Internal => 7,
    }
}

/// The class's name in the `error (CLASS): ...` line.
pub(crate) fn label(f: Fault) -> &'static str {
    match f {
        Fault::Config => "configuration",
        Fault::Peer => "another party",
        Fault::Device => "device",
        Fault::Data => "input data",
        Fault::Storage => "local storage",
        Fault::Internal => "internal error",
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
        PartyError::Provision(goten_party::provision::ProvisionError::Listen(_)) => Fault::Config,
        PartyError::Provision(_) => Fault::Peer,
        PartyError::Shape(_) => Fault::Config,
        PartyError::Enclave(e) => return e.fault(),
        PartyError::Session(e) => return e.known_fault(),
        PartyError::At { source, .. } => return party(source),
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
            return code.and_then(|c| {
                Fault::ALL
                    .into_iter()
                    .find(|&f| i32::from(self::code(f)) == c)
            });
        }
        RuntimeError::Party(p) => return party(p),
    })
}

/// Evidence that does not verify is bad input; a machine without the TEE interface, or a
/// request the verifier cannot serve, is configuration.
fn attestation(e: &goten_attest::AttestationError) -> Fault {
    use goten_attest::AttestationError as A;
    match e {
        A::Generate(_) | A::Unsupported(_) => Fault::Config,
        _ => Fault::Data,
    }
}

/// A server that fails attestation or cannot answer is the other party's fault; a request it
/// refuses (4xx) is the input's.
fn client(e: &ClientError) -> Fault {
    match e {
        ClientError::Untrusted(_) | ClientError::Net(_) => Fault::Peer,
        ClientError::Server { status, .. } if (400..500).contains(status) => Fault::Data,
        ClientError::Server { .. } => Fault::Peer,
        ClientError::Input(_) => Fault::Data,
    }
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
            s.known_fault()
        } else if let Some(x) = cause.downcast_ref::<EnclaveError>() {
            x.fault()
        } else if let Some(l) = cause.downcast_ref::<LinearError>() {
            l.fault()
        } else if cause.is::<NetError>() || cause.is::<KeyError>() {
            Some(Fault::Peer)
        } else if cause.is::<goten_device::DeviceError>() {
            Some(Fault::Device)
        } else if cause.is::<goten_data::DataError>() || cause.is::<OpenError>() {
            Some(Fault::Data)
        } else if cause.is::<CheckpointError>() || cause.is::<std::io::Error>() {
            Some(Fault::Storage)
        } else if let Some(c) = cause.downcast_ref::<ClientError>() {
            Some(client(c))
        } else if let Some(a) = cause.downcast_ref::<goten_attest::AttestationError>() {
            Some(attestation(a))
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
