//! The untrusted runtime of goten: what runs a training job around the enclave's session.
//!
//! Where it sits: above `goten-party` (hosts, transports, enclave processes) and below the
//! `goten` command line, which keeps argument parsing, display, metrics files, plots and exit
//! codes; a server or a language binding can drive training through this crate the same way.
//! It never holds a plaintext model, batch or key: it stores ciphertext, relays shares, tags
//! and receipts, and passes on what the session's release policy allows.
//!
//! - [`train_loop`]: the loop every mode shares, its plan and the [`train_loop::Observer`] of
//!   progress;
//! - [`session_host`]: what each mode's host offers a session (device jobs, the peer);
//! - [`store`]: durable checkpoint files and the simulated platform's sealing key;
//! - [`enclave_process`]: starting an enclave as a child process, and the child's entry point.

pub mod enclave_process;
pub mod session_host;
pub mod store;
pub mod train_loop;

pub use session_host::{LocalHost, PartyHost, SessionHost};
pub use store::CkptStore;
pub use train_loop::{LoopPlan, Observer, Summary, train_loop};
