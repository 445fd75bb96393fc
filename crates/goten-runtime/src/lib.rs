//! The untrusted runtime of goten: what runs a training job around the enclave's session.
//!
//! Where it sits: above `goten-party` (hosts, transports, enclave processes) and below the
//! `goten` command line, which keeps argument parsing, display, metrics files, plots and exit
//! codes; a server or a language binding can drive training through this crate the same way.
//! It never holds a plaintext model, batch or key of a protected run: it stores ciphertext,
//! relays shares, tags and receipts, and passes on what the session's release policy allows.
//!
//! The flow: a [`JobConfig`] (validated, serialisable) is [`job::prepare`]d into a
//! [`job::Setup`] (data loaded, fingerprint taken), then run by an executor: [`local::run`]
//! in this process, [`party_run`] as one party of a deployment, or [`launcher::run`] as three
//! local party processes that each read their job file.
//!
//! - [`config`]: the job configuration and its choices;
//! - [`job`], [`data`]: preparing a job, its data sources, the data owner's sealing;
//! - [`local`], [`party_run`], [`launcher`]: the executors;
//! - [`train_loop`]: the loop every mode shares, its plan and the [`train_loop::Observer`] of
//!   progress;
//! - [`session_host`]: what each mode's host offers a session (device jobs, the peer);
//! - [`store`]: durable checkpoint files and the simulated platform's sealing key;
//! - [`enclave_process`]: starting an enclave as a child process, and the child's entry point;
//! - [`serve`]: private prediction (the serving cluster, its HTTP API, the querying client);
//! - [`ports`]: loopback ports for the local launcher's and the tests' cluster files;
//! - [`devices`], [`keys`], [`model_io`]: devices, party key files, exported model files.

pub mod config;
pub mod data;
pub mod devices;
pub mod enclave_process;
mod error;
pub mod job;
pub mod keys;
pub mod launcher;
pub mod local;
pub mod model_file;
pub mod model_io;
pub mod owner;
pub mod party_run;
pub mod ports;
pub mod serve;
pub mod session_host;
pub mod store;
pub mod train_loop;

pub use config::{Choice, JobConfig};
pub use error::RuntimeError;
pub use session_host::{LocalHost, PartyHost, SessionHost};
pub use store::CkptStore;
pub use train_loop::{LoopPlan, Observer, Summary, train_loop};
