//! Storage on the host: sealed checkpoints (written durably, newest and previous) and the
//! simulated platform's sealing key, kept outside every run folder.
//!
//! Where it sits: under the training loop. Everything stored is ciphertext except the
//! simulated sealing key, which stands in for a key a TEE would never let out.

use std::io::Write;
use std::path::{Path, PathBuf};

use goten_field::SecretKey;
use goten_party::PartyError;

/// Where an enclave's sealed checkpoints live: the newest and the one before.
pub struct CkptStore {
    pub dir: PathBuf,
    /// `enclave`, `e0` or `e1`.
    pub role: &'static str,
}

pub fn storage(e: impl std::fmt::Display, path: &Path) -> PartyError {
    PartyError::Storage(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename, fsync of the folder, so
/// a crash at any point leaves either the old file or the new one, complete.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("checkpoint-{}.sealed", self.role))
    }

    fn prev_path(&self) -> PathBuf {
        self.dir
            .join(format!("checkpoint-{}.prev.sealed", self.role))
    }

    /// Stores a sealed checkpoint and keeps the previous one: a crash mid-write leaves a good
    /// one, and a party restarted one checkpoint ahead of its peer can step back to the
    /// peer's (see [`goten_party::handshake::agree_resume`]).
    /// The host's record of the newest step it stored: not a security control (the host is
    /// untrusted; goten mode's receipts are that), but it catches older checkpoint files copied
    /// over newer ones by mistake, in every mode.
    fn marker_path(&self) -> PathBuf {
        self.dir.join(format!("checkpoint-{}.newest", self.role))
    }

    /// The newest step stored here, as recorded when it was written.
    pub fn newest_recorded(&self) -> Option<u64> {
        std::fs::read_to_string(self.marker_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stores the sealed checkpoint of `step` (see [`Self::write`]) and records the step.
    pub fn write_step(&self, bytes: &[u8], step: u64) -> Result<(), PartyError> {
        self.write(bytes)?;
        let m = self.marker_path();
        write_durably(&m, format!("{step}\n").as_bytes()).map_err(|e| storage(e, &m))
    }

    /// Stores a sealed checkpoint (without recording its step).
    pub fn write(&self, bytes: &[u8]) -> Result<(), PartyError> {
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
    pub fn read(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, PartyError> {
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

/// Where the simulated platform keeps its sealing key: `$GOTEN_PLATFORM_DIR`, else
/// `$XDG_DATA_HOME/goten/simulated-platform`, else `~/.local/share/goten/simulated-platform`.
/// Outside every run folder, so copying a run's checkpoints does not copy the key that opens
/// them (on TEE hardware the key never leaves the CPU at all).
pub fn platform_dir() -> Result<PathBuf, PartyError> {
    if let Some(d) = std::env::var_os("GOTEN_PLATFORM_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("goten/simulated-platform"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            PartyError::Storage(
                "no place for the simulated platform's sealing key: set GOTEN_PLATFORM_DIR or HOME"
                    .into(),
            )
        })?;
    Ok(PathBuf::from(home).join(".local/share/goten/simulated-platform"))
}

/// The simulated platform's sealing key (created on first use, mode 0600, in a 0700 folder).
pub fn platform_sealing_key() -> Result<SecretKey, PartyError> {
    let dir = platform_dir()?;
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir).map_err(|e| storage(e, &dir))?;
    let path = dir.join("sealing.key");
    if let Ok(b) = std::fs::read(&path) {
        let arr: [u8; 32] = b
            .as_slice()
            .try_into()
            .map_err(|_| storage("corrupt (expected 32 bytes)", &path))?;
        return Ok(SecretKey::from_bytes(arr));
    }
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| storage(format!("no entropy: {e}"), &path))?;
    // Written whole under a private name, then linked into place: a party of the same machine
    // starting at the same moment either wins the link or reads the complete winner.
    let tmp = dir.join(format!("sealing.key.{}.tmp", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&tmp)
        .and_then(|mut f| f.write_all(&k).and_then(|_| f.sync_all()))
        .map_err(|e| storage(e, &tmp))?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(SecretKey::from_bytes(k)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => platform_sealing_key(),
        Err(e) => Err(storage(e, &path)),
    }
}
