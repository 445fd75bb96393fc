//! The runtime's error: every failure says whose fault it is.
//!
//! Where it sits: returned by everything in this crate that is not a session loop (those return
//! `goten_party::PartyError`, which this wraps). The command line maps the classes to exit
//! codes; a server would map them to HTTP statuses.

use goten_party::PartyError;
use goten_party::deploy::DeployError;

/// A failure of the runtime, by culprit.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The caller's configuration (an option, a config file, a key or cluster file's content).
    #[error("{0}")]
    Config(String),
    /// The input data (a dataset file, a sealed record, a data key).
    #[error("{what}: {source}")]
    Data {
        /// What was being read.
        what: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Local storage (the output folder, key files, the model file).
    #[error("{what}: {source}")]
    Storage {
        /// What was being read or written.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A cluster or key file is malformed or does not fit.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The untrusted device could not be set up.
    #[error(transparent)]
    Device(#[from] goten_device::DeviceError),
    /// A party, its enclave, its session or its peers failed.
    #[error(transparent)]
    Party(#[from] PartyError),
    /// A party process of a local launch failed (its own error is in its log).
    #[error("{message}")]
    Launch {
        /// Which parties failed, and why.
        message: String,
        /// The exit status of the first that failed (its class of fault), if it exited.
        code: Option<i32>,
    },
}

impl RuntimeError {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        RuntimeError::Config(msg.into())
    }

    /// A storage error while doing `what`.
    pub fn storage(what: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Storage {
            what: what.into(),
            source,
        }
    }

    /// A data error while reading `what`.
    pub fn data(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RuntimeError::Data {
            what: what.into(),
            source: source.into(),
        }
    }
}
