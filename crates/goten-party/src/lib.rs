//! Untrusted host runtimes of goten's three servers.
//!
//! Where it sits: around the enclave. S0 and S1 each host an enclave (`goten-enclave`) and a
//! device (`goten-device`); S2 hosts only a device and the dealer key. Hosts move shares
//! between enclave, device and peers and never see plaintext.
//!
//! - [`transport`]: typed messages and the transport trait, with an in-process implementation;
//! - [`host`]: the S0/S1 host, implementing the enclave's ocall trait;
//! - [`dealer`]: the S2 loop;
//! - [`cluster`]: the key exchange and a three-threads-in-one-process runner;
//! - [`handshake`]: job and resume-point agreement;
//! - [`tcp`], [`wire`]: the TLS transport and its frame format;
//! - [`deploy`]: key files and the cluster file of a deployment on separate machines;
//! - [`record`]: recording wrappers for privacy audits;
//! - [`ecall`]: enclaves as child processes (`--enclave process`): codec, child loop, host proxy.

pub mod cluster;
pub mod cluster_attest;
pub mod dealer;
pub mod deploy;
pub mod ecall;
pub mod handshake;
pub mod host;
mod pinning;
pub mod provision;
pub mod record;
pub mod tcp;
pub mod transport;
pub mod trusts;
pub mod wire;

pub use cluster::{ClusterConfig, Party, PartyError, PartyReport, Trusts, run_local};
pub use transport::Traffic;
pub use transport::{Message, NetError, Transport, in_process_mesh};
