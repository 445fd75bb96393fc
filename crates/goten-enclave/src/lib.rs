//! The trusted enclave program of goten: what E0 and E1 run (PROTOCOL.md sections 2 to 4).
//!
//! Where it sits: between the data owner's sealed batches and the untrusted host. It owns every
//! secret and every plaintext tensor; it talks to its host only through an explicit command
//! interface, does no I/O of its own and contains no `unsafe`. Its dependency list is short on
//! purpose: this folder is the trusted computing base.
//!
//! So far it holds the seed book (which key expands which tensor of an op); quantization,
//! the share/mask steps, the ecall/ocall surface and the layers follow in later issues.
#![forbid(unsafe_code)]

pub mod seeds;
