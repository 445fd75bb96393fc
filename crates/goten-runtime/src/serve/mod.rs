//! Private prediction: serving a trained model from E0 and E1 to users whose queries and
//! answers no host can read.
//!
//! Where it sits: an executor beside [`crate::local`] and [`crate::party_run`]. [`cluster`]
//! runs the hosts' serving loops around the enclaves' serving sessions
//! (`goten_enclave::session::serve`); [`handle`] is what front ends hold of S0's loop;
//! [`local`] starts the three parties in this process and
//! restarts them after a failure; [`deploy`] runs one party of a deployment on separate
//! machines; [`http`] is the Open Inference Protocol front end on S0's
//! host; [`client`] is the querying user's side (`goten query`).

pub mod client;
pub mod cluster;
pub mod deploy;
pub mod handle;
pub mod http;
pub mod local;
pub mod oip;
mod owner;
mod relay;
