//! The `goten` command line: a thin binary over the libraries.
//!
//! Where it sits: outermost layer. It parses arguments and shows progress and results; jobs run
//! in `goten-runtime`, benchmarks in `goten-bench`, and all protocol and arithmetic below them.
//! Errors from libraries are mapped to a plain-language message and an exit status per class
//! of fault (`exit.rs`) here and only here.

mod alloc;
mod attestation;
mod enclave_proc;
mod exit;
mod model_cmd;
mod options;
mod party;
mod plot;
mod predict;
mod predictions;
mod report;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// goten: privacy-preserving neural-network training on trusted enclaves and untrusted
/// accelerators (a re-implementation of Goten, AAAI-21).
#[derive(Parser, Debug)]
#[command(name = "goten", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Data owner: seal a dataset of any format (AES-256-GCM per record) for the enclaves.
    /// The sealed files' public header names the format, image shape and class count; labels
    /// and pixels stay sealed.
    SealData {
        /// The dataset: a CIFAR-10 or CIFAR-100 folder (binary layout) or .tar.gz, MNIST /
        /// Fashion-MNIST IDX files, an image folder (train/CLASS/*, test/CLASS/*), or arrays.
        #[arg(long)]
        data: std::path::PathBuf,
        /// Dataset format instead of detection: cifar10, cifar100, cifar100-coarse, mnist,
        /// fashion-mnist, image-folder, npy, safetensors.
        #[arg(long)]
        data_format: Option<String>,
        /// Image folders: resize each image's shorter side to N and crop the centre N x N
        /// (default 32).
        #[arg(long, value_parser = clap::value_parser!(u32).range(4..=1024))]
        image_size: Option<u32>,
        /// Output folder for train.sealed and test.sealed.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Where to write the new data key (default: OUT.key beside the output folder; must not
        /// exist, and never inside OUT or DATA: the hosts receive OUT, the owner keeps the key).
        #[arg(long)]
        key_out: Option<std::path::PathBuf>,
    },
    /// Model owner: open a model sealed to your key (goten keygen --owner) into a safetensors
    /// file (PyTorch names), the same file a plaintext export gives.
    DecryptModel {
        /// Your secret key file (owner.key).
        #[arg(long)]
        key: std::path::PathBuf,
        /// The sealed model (what --export wrote).
        #[arg(long)]
        input: std::path::PathBuf,
        /// Where to write the safetensors file.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Classify images from a CIFAR-format file: with an exported model (plain), or privately
    /// through a local serving cluster from a goten-mode run's sealed checkpoints (goten).
    Predict(predict::PredictArgs),
    /// Serve a trained model for private prediction (Open Inference Protocol over HTTP):
    /// queries and answers are sealed, no host reads them.
    Serve(Box<serve::ServeArgs>),
    /// Query a goten server: verify its enclaves, send sealed images, open the answers.
    Query(serve::QueryArgs),
    /// Model owner: verify a server's enclaves and provision your model to them, sealed to
    /// their attested service key (a server started with --await-model).
    ProvisionModel(serve::ProvisionModelArgs),
    /// Train a model (plain, enclave or goten mode) and report its test accuracy.
    Train(Box<train::TrainCmd>),
    /// Write keys: a party's key file and cluster entry (--id), a model owner's key pair
    /// (--owner), or a data owner's job seed (--job-seed).
    Keygen(party::KeygenArgs),
    /// Data owner: verify S0's and S1's enclaves and release the data key to them, sealed to
    /// their attested service key (for parties training on a sealed dataset without a key).
    Provision(party::ProvisionArgs),
    /// Run one party (S0, S1 or S2) of a deployment on separate machines.
    Party(Box<party::PartyArgs>),
    /// The enclave program of `--enclave process` (started by a party, not by hand).
    #[command(hide = true)]
    EnclaveProcess {
        /// The party's Unix socket.
        #[arg(long)]
        socket: std::path::PathBuf,
    },
    /// Verify TEE evidence offline, or print this build's simulated measurement.
    Attestation {
        #[command(subcommand)]
        what: attestation::AttestationCommand,
    },
    /// Inspect the built-in models.
    Model {
        #[command(subcommand)]
        what: model_cmd::ModelCommand,
    },
    /// Measure goten's building blocks against plain floating point on this machine.
    Bench {
        #[command(subcommand)]
        what: goten_bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    alloc::configure();
    let cli = Cli::parse();
    if goten_enclave::DANGER_TEST_EXPOSE {
        eprintln!(
            "WARNING: this goten binary was built with the test-only feature danger-test-expose (plaintext accessors public); never deploy it"
        );
    }
    let result = match cli.command {
        Command::Bench { what } => goten_bench::run(what),
        Command::Attestation { what } => attestation::run(what),
        Command::Model { what } => model_cmd::run(what),
        Command::Train(a) => train::run(*a),
        Command::EnclaveProcess { socket } => enclave_proc::run_child(&socket),
        Command::Predict(a) => predict::run(a),
        Command::Serve(a) => serve::serve(*a),
        Command::Query(a) => serve::query(a),
        Command::ProvisionModel(a) => serve::provision_model(a),
        Command::Keygen(a) => party::keygen(a),
        Command::Party(a) => party::run(*a),
        Command::Provision(a) => party::provision(a),
        Command::SealData {
            data,
            data_format,
            image_size,
            out,
            key_out,
        } => seal_data(&data, data_format.as_deref(), image_size, &out, key_out),
        Command::DecryptModel { key, input, out } => {
            goten_runtime::owner::decrypt_model(&input, &key, &out)
                .map(|steps| {
                    eprintln!(
                        "opened {} ({steps} training steps) into {}",
                        input.display(),
                        out.display()
                    )
                })
                .map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let fault = exit::classify(&e);
            eprintln!("error ({}): {}", exit::label(fault), describe(&e));
            ExitCode::from(exit::code(fault))
        }
    }
}

/// `goten seal-data`: the data owner's step.
fn seal_data(
    data: &std::path::Path,
    format: Option<&str>,
    image_size: Option<u32>,
    out: &std::path::Path,
    key_out: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let format = match format {
        None => None,
        Some(f) => Some(goten_data::DataFormat::parse(f).ok_or_else(|| {
            goten_runtime::RuntimeError::config(format!(
                "unknown data format {f:?}: choose one of {}",
                goten_data::DataFormat::names()
            ))
        })?),
    };
    let side = image_size.map_or(goten_data::DEFAULT_SIDE, |s| s as usize);
    let key = key_out.unwrap_or_else(|| goten_runtime::data::default_key_path(out));
    let n = goten_runtime::data::seal_dataset(data, format, side, out, &key)?;
    let [c, h, w] = n.meta.shape;
    eprintln!(
        "sealed {} training and {} test {c}x{h}x{w} images of {} classes ({} data) into {}; data key in {} (keep it with the data owner, away from the hosts; train with --data-key)",
        n.train,
        n.test,
        n.meta.classes,
        n.meta.format,
        out.display(),
        key.display()
    );
    Ok(())
}

/// The error and its causes on one line, skipping causes whose text an outer message already
/// includes (library errors name their cause in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !msg.contains(&text) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&text);
        }
    }
    msg
}
