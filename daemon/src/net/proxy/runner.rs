//! Running `nft` for the proxy: in the daemon's own network namespace, or in another one (a test
//! namespace, a node namespace) from a thread that entered it, since a child process inherits
//! the network namespace of the thread that spawned it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::netns;
use super::NftError;
use crate::net::nft::{FAMILY, TABLE};

/// How the proxy reaches nftables; a fake records batches in unit tests.
pub trait NftRunner: Send + Sync + 'static {
    /// Applies one `nft -j -f -` transaction.
    fn apply(&self, batch: &str) -> Result<(), NftError>;
    /// `nft -j list table inet skerry`; `None` when there is no such table.
    fn list_table(&self) -> Result<Option<Value>, NftError>;
}

/// `nft` in the calling thread's network namespace (the daemon's).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNft;

/// `nft` in the network namespace bound at `path` (`/run/netns/x`, `/proc/<pid>/ns/net`, ...).
#[derive(Debug, Clone)]
pub struct NamespaceNft {
    pub path: PathBuf,
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NftError::Apply(format!("cannot run nft: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|e| NftError::Apply(format!("writing to nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| NftError::Apply(format!("waiting for nft: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(NftError::Apply(format!("{} {}", stderr.trim(), stdout.trim()).trim().to_string()))
    }
}

fn list() -> Result<Option<Value>, NftError> {
    match nft(&["-j", "list", "table", FAMILY, TABLE], None) {
        Ok(out) => {
            serde_json::from_str(&out).map(Some).map_err(|e| NftError::Apply(format!("nft listed invalid JSON: {e}")))
        }
        Err(NftError::Apply(msg)) if msg.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

impl NftRunner for HostNft {
    fn apply(&self, batch: &str) -> Result<(), NftError> {
        nft(&["-j", "-f", "-"], Some(batch)).map(|_| ())
    }

    fn list_table(&self) -> Result<Option<Value>, NftError> {
        list()
    }
}

impl NftRunner for NamespaceNft {
    fn apply(&self, batch: &str) -> Result<(), NftError> {
        netns::run_in(&self.path, || nft(&["-j", "-f", "-"], Some(batch)).map(|_| ()))
            .map_err(|e| NftError::Apply(format!("entering {}: {e}", self.path.display())))?
    }

    fn list_table(&self) -> Result<Option<Value>, NftError> {
        netns::run_in(&self.path, list)
            .map_err(|e| NftError::Apply(format!("entering {}: {e}", self.path.display())))?
    }
}
