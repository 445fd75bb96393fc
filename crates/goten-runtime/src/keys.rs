//! Writing a party's key file (secret, mode 0600, never overwritten) and its public cluster
//! entry.
//!
//! Where it sits: under `goten keygen`, the local launcher ([`crate::launcher`]) and the data
//! owner's sealing ([`crate::data::seal_dataset`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use goten_enclave::Role;
use goten_party::deploy::{self, ClusterFile};

use crate::RuntimeError;

/// Creates `path` with `bytes`, readable only by its owner, refusing to overwrite.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
}

/// Writes `party-ID.key` and `party-ID.toml` for `role` into `dir`.
pub fn write_keys(
    dir: &Path,
    role: Role,
    address: Option<String>,
    danger_seed: Option<u64>,
) -> Result<(PathBuf, deploy::PartyEntry), RuntimeError> {
    let io = |what: String| move |e| RuntimeError::storage(what, e);
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let (key, entry) = deploy::keygen(role, address, danger_seed)
        .map_err(|e| RuntimeError::config(format!("cannot make {role}'s keys: {e}")))?;
    let i = role.index();
    let key_path = dir.join(format!("party-{i}.key"));
    write_secret(&key_path, key.to_toml().as_bytes()).map_err(io(format!(
        "cannot create {} (it must not exist yet)",
        key_path.display()
    )))?;
    let public = ClusterFile::new(vec![entry.clone()], None);
    let pub_path = dir.join(format!("party-{i}.toml"));
    std::fs::write(&pub_path, public.to_toml())
        .map_err(io(format!("cannot write {}", pub_path.display())))?;
    Ok((key_path, entry))
}
