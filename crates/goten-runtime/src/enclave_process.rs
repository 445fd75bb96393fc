//! Enclaves as child processes: starting one, and the child's entry point.
//!
//! Where it sits: host-side plumbing of `--enclave process`. The host makes a private folder
//! (mode 0700) with a Unix socket, starts the enclave program with the socket's path, accepts
//! its one connection and removes the socket file; from then on the two talk only in the
//! ecall codec (`goten_party::ecall`). Under SGX the child would be the enclave program run by
//! an SGX runtime such as Gramine (DESIGN.md section 15).

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use goten_enclave::Role;
use goten_party::PartyError;
use goten_party::ecall::child::ServeError;
use goten_party::ecall::remote::RemoteEnclave;

fn spawn_err(role: Role, e: impl std::fmt::Display) -> PartyError {
    PartyError::Storage(format!(
        "cannot start E{}'s enclave process: {e}",
        role.index()
    ))
}

/// A private folder for the sockets of this process's enclaves.
fn socket_dir() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("goten-enclave-{}-{nanos}", std::process::id()));
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(&dir)?;
    Ok(dir)
}

/// Starts `role`'s enclave process, `program enclave-process --socket PATH` (the `goten`
/// binary), and connects to it; answers must come within `timeout`.
pub fn spawn(program: &Path, role: Role, timeout: Duration) -> Result<RemoteEnclave, PartyError> {
    let dir = socket_dir().map_err(|e| spawn_err(role, e))?;
    let r = spawn_in(program, &dir, role, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Starts `role`'s enclave process from this program (which must answer the
/// `enclave-process` command, as the `goten` binary does).
pub fn spawn_self(role: Role, timeout: Duration) -> Result<RemoteEnclave, PartyError> {
    let exe = std::env::current_exe()
        .map_err(|e| spawn_err(role, format!("cannot find this program: {e}")))?;
    spawn(&exe, role, timeout)
}

fn spawn_in(
    program: &Path,
    dir: &Path,
    role: Role,
    timeout: Duration,
) -> Result<RemoteEnclave, PartyError> {
    let path = dir.join(format!("e{}.sock", role.index()));
    let listener = UnixListener::bind(&path).map_err(|e| spawn_err(role, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| spawn_err(role, e))?;
    let mut child = Command::new(program)
        .arg("enclave-process")
        .arg("--socket")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| spawn_err(role, e))?;
    let t = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(spawn_err(role, format!("it exited at start-up ({status})")));
                }
                if t.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(spawn_err(role, "it did not connect within 30 s"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(spawn_err(role, e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| spawn_err(role, e))?;
    RemoteEnclave::new(role, stream, Some(child), timeout).map_err(|e| spawn_err(role, e))
}

/// The child's whole life: takes its platform's sealing key (simulated: the platform folder;
/// the host never passes it), connects to the party's socket and serves its enclave.
pub fn run_child(socket: &Path) -> Result<(), ServeError> {
    let sealing = crate::store::platform_sealing_key()
        .map_err(|e| ServeError::Setup(format!("the platform's sealing key: {e}")))?;
    let stream = UnixStream::connect(socket)
        .map_err(|e| ServeError::Setup(format!("cannot connect to {}: {e}", socket.display())))?;
    goten_party::ecall::child::serve(stream, sealing)
}
