//! Writing a party's key file (secret, mode 0600, never overwritten) and its public cluster
//! entry.
//!
//! Where it sits: under `goten keygen` (`party.rs`) and the tcp launcher (`spawn.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use goten_enclave::Role;
use goten_party::deploy::{self, ClusterFile};

/// Creates `path` with `text`, readable only by its owner, refusing to overwrite.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

/// Writes `party-ID.key` and `party-ID.toml` for `role` into `dir`.
pub(crate) fn write_keys(
    dir: &Path,
    role: Role,
    address: Option<String>,
    danger_seed: Option<u64>,
) -> Result<(PathBuf, deploy::PartyEntry)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (key, entry) = deploy::keygen(role, address, danger_seed)?;
    let i = role.index();
    let key_path = dir.join(format!("party-{i}.key"));
    write_secret(&key_path, &key.to_toml())?;
    let public = ClusterFile {
        party: vec![entry.clone()],
    };
    let pub_path = dir.join(format!("party-{i}.toml"));
    std::fs::write(&pub_path, public.to_toml())
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok((key_path, entry))
}
