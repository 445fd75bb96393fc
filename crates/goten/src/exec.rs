//! The host around a training session: the checkpoint store, the services each mode's host
//! offers the session, and the platform sealing key.
//!
//! Where it sits: between the host's training loop (`session_loop.rs`) and the enclave's
//! [`TrainSession`](goten_enclave::session::TrainSession). The host stores only ciphertext
//! (sealed checkpoints) and relays the peer's state tag and resume point; it never holds the
//! model, a batch or a key.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::source::Source;
use anyhow::{Context, Result};
use goten_enclave::HostServices;
use goten_enclave::session::{Receipt, StateTag};
use goten_field::SecretKey;
use goten_party::host::EnclaveHost;
use goten_party::transport::Message;
use goten_party::{NetError, PartyError, Traffic};
use sha2::{Digest, Sha256};

use crate::train::TrainArgs;

/// What the host of a session offers it besides storage: device jobs and the peer (goten
/// mode), or nothing (plain and enclave modes).
pub(crate) trait SessionHost {
    /// The ocall services for the session's products (`None`: products run inside).
    fn services(&mut self) -> Option<&mut dyn HostServices>;
    /// Sends this enclave's state tag to the peer's host and returns the peer's.
    fn exchange_tag(&mut self, step: u64, tag: StateTag) -> Result<Option<StateTag>, PartyError>;
    /// Sends this enclave's checkpoint receipt to the peer's host and returns the peer's.
    fn exchange_receipt(&mut self, r: Receipt) -> Result<Option<Receipt>, PartyError>;
    /// Agrees with the peer on the step to resume from (`newest`: this side's newest).
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError>;
    /// Bytes sent and received so far (`None`: no transport).
    fn traffic(&mut self) -> Option<Traffic>;
}

/// The host of plain and enclave modes: no device, no peer.
pub(crate) struct LocalHost;

impl SessionHost for LocalHost {
    fn services(&mut self) -> Option<&mut dyn HostServices> {
        None
    }
    fn exchange_tag(&mut self, _: u64, _: StateTag) -> Result<Option<StateTag>, PartyError> {
        Ok(None)
    }
    fn exchange_receipt(&mut self, _: Receipt) -> Result<Option<Receipt>, PartyError> {
        Ok(None)
    }
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError> {
        Ok(newest)
    }
    fn traffic(&mut self) -> Option<Traffic> {
        None
    }
}

/// The host of E0 or E1: its device, its transport to the peer and S2.
pub(crate) struct PartyHost<'a>(pub(crate) &'a mut EnclaveHost);

impl SessionHost for PartyHost<'_> {
    fn services(&mut self) -> Option<&mut dyn HostServices> {
        Some(self.0)
    }
    fn exchange_tag(&mut self, step: u64, tag: StateTag) -> Result<Option<StateTag>, PartyError> {
        let peer = self.0.peer();
        let t = self.0.transport();
        t.send(
            peer,
            Message::StateDigest {
                step,
                digest: tag.0,
            },
        )?;
        match t.recv(peer)? {
            Message::StateDigest { step: s, digest } if s == step => Ok(Some(StateTag(digest))),
            m => Err(NetError::Unexpected {
                peer,
                expected: format!("state tag of step {step}"),
                got: m.kind().into(),
            }
            .into()),
        }
    }
    fn exchange_receipt(&mut self, r: Receipt) -> Result<Option<Receipt>, PartyError> {
        let peer = self.0.peer();
        let t = self.0.transport();
        t.send(
            peer,
            Message::Receipt {
                step: r.step,
                mac: r.mac,
            },
        )?;
        match t.recv(peer)? {
            Message::Receipt { step, mac } if step == r.step => Ok(Some(Receipt { step, mac })),
            m => Err(NetError::Unexpected {
                peer,
                expected: format!("checkpoint receipt of step {}", r.step),
                got: m.kind().into(),
            }
            .into()),
        }
    }
    fn agree_resume(&mut self, newest: u64) -> Result<u64, PartyError> {
        goten_party::handshake::agree_resume(self.0.transport(), newest)
    }
    fn traffic(&mut self) -> Option<Traffic> {
        Some(self.0.transport().traffic())
    }
}

/// Where an enclave's sealed checkpoints live: the newest and the one before.
pub(crate) struct CkptStore {
    pub(crate) dir: PathBuf,
    /// `enclave`, `e0` or `e1`.
    pub(crate) role: &'static str,
}

pub(crate) fn storage(e: impl std::fmt::Display, path: &Path) -> PartyError {
    PartyError::Storage(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the folder, so
/// a crash at any point leaves either the old file or the new one, complete.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

impl CkptStore {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(format!("checkpoint-{}.sealed", self.role))
    }

    fn prev_path(&self) -> PathBuf {
        self.dir
            .join(format!("checkpoint-{}.prev.sealed", self.role))
    }

    /// Stores a sealed checkpoint and keeps the previous one: a crash mid-write leaves a good
    /// one, and a party restarted one checkpoint ahead of its peer can step back to the
    /// peer's (see [`goten_party::handshake::agree_resume`]).
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<(), PartyError> {
        let path = self.path();
        let tmp = path.with_extension("sealed.tmp");
        (|| -> std::io::Result<()> {
            {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()?;
            }
            if path.exists() {
                std::fs::rename(&path, self.prev_path())?;
            }
            std::fs::rename(&tmp, &path)?;
            sync_dir(&path)
        })()
        .map_err(|e| storage(e, &path))
    }

    /// The sealed checkpoints on disk, newest file first: at least one, or an error.
    pub(crate) fn read(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, PartyError> {
        let found: Vec<(PathBuf, Vec<u8>)> = [self.path(), self.prev_path()]
            .into_iter()
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        if found.is_empty() {
            return Err(storage(
                "cannot read it (missing?); nothing to resume",
                &self.path(),
            ));
        }
        Ok(found)
    }
}

/// SHA-256 of everything a checkpoint must agree with: model, data, hyper-parameters, mode.
pub(crate) fn fingerprint(a: &TrainArgs, train: &Source, test: &Source) -> [u8; 32] {
    let mut h = Sha256::new();
    let desc = format!(
        "goten/job/v3|{}|{:?}|{}|{}|{}|{:?}|{}|{}|{}|{}|{}|{}",
        a.model,
        a.mode,
        a.epochs,
        a.batch,
        a.lr.to_bits(),
        a.schedule,
        a.step_epochs,
        a.seed,
        a.ring_bits,
        a.quant_bits,
        a.loss_window_or_default(),
        // The data's content is hashed below; its path may differ between parties.
        a.data == "synthetic"
    );
    h.update(desc.as_bytes());
    for d in [train, test] {
        d.identify(&mut h);
    }
    h.finalize().into()
}

/// Where the simulated platform keeps its sealing key: `$GOTEN_PLATFORM_DIR`, else
/// `$XDG_DATA_HOME/goten/simulated-platform`, else `~/.local/share/goten/simulated-platform`.
/// Outside every run folder, so copying a run's checkpoints does not copy the key that opens
/// them (on TEE hardware the key never leaves the CPU at all).
pub(crate) fn platform_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("GOTEN_PLATFORM_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("goten/simulated-platform"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "no place for the simulated platform's sealing key: set GOTEN_PLATFORM_DIR or HOME",
    )?;
    Ok(PathBuf::from(home).join(".local/share/goten/simulated-platform"))
}

/// The simulated platform's sealing key (created on first use, mode 0600, in a 0700 folder).
pub(crate) fn platform_sealing_key() -> Result<SecretKey> {
    let dir = platform_dir()?;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir)
        .with_context(|| format!("cannot create the platform folder {}", dir.display()))?;
    let path = dir.join("sealing.key");
    if let Ok(b) = std::fs::read(&path) {
        let arr: [u8; 32] = b
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is corrupt (expected 32 bytes)", path.display()))?;
        return Ok(SecretKey::from_bytes(arr));
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| anyhow::anyhow!("no entropy: {e}"))?;
    // Written whole under a private name, then linked into place: a party of the same machine
    // starting at the same moment either wins the link or reads the complete winner.
    let tmp = dir.join(format!("sealing.key.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&tmp)
        .and_then(|mut f| f.write_all(&k).and_then(|_| f.sync_all()))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(SecretKey::from_bytes(k)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => platform_sealing_key(),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}
