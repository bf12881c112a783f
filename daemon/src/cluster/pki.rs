//! A node's keys and certificates on disk, under `<data-dir>/pki`: the first server makes the
//! cluster CA and its own certificate on its first start; a node that joined keeps what its
//! join brought (a server also the CA's key, so any server can sign for joining nodes).
//!
//! Files and modes are `identity`'s (keys 0600, written through a renamed temporary file).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::identity::{Ca, Credentials, IdentityError, NodeKey, Role, SignRequest, Validity, NODE_CERT_FILE};

/// What a node holds: its credentials, and on servers the CA.
pub struct Pki {
    pub credentials: Credentials,
    /// `Some` on servers.
    pub ca: Option<Ca>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "{dir} holds the certificate of node {found:?}, not {want:?}: start skerryd with --node-name {found} \
         (a node's name is fixed when it joins), or use another --data-dir"
    )]
    OtherNode { dir: String, found: String, want: String },
}

/// `<data-dir>/pki`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// Whether this data dir already belongs to a cluster (it has a node certificate).
pub fn exists(data_dir: &Path) -> bool {
    dir(data_dir).join(NODE_CERT_FILE).exists()
}

/// Loads this node's credentials (and the CA when this is a server).
pub fn load(data_dir: &Path, node_name: &str) -> Result<Pki, PkiError> {
    let dir = dir(data_dir);
    let credentials = Credentials::load(&dir)?;
    let found = &credentials.identity().node_name;
    if found != node_name {
        return Err(PkiError::OtherNode {
            dir: dir.display().to_string(),
            found: found.clone(),
            want: node_name.into(),
        });
    }
    let ca = match credentials.identity().role {
        Role::Server => Some(Ca::load(&dir)?),
        Role::Agent => None,
    };
    Ok(Pki { credentials, ca })
}

/// The first server's first start: a new CA and this server's certificate, signed for
/// `addresses`, saved under `<data-dir>/pki`. Any later start loads them.
pub fn load_or_create(data_dir: &Path, node_name: &str, addresses: &[IpAddr]) -> Result<Pki, PkiError> {
    if exists(data_dir) {
        return load(data_dir, node_name);
    }
    let dir = dir(data_dir);
    let ca = Ca::create()?;
    let credentials = issue(&ca, node_name, addresses, Timestamp::now())?;
    // The CA's key first: a crash between the two leaves no node certificate, so the next start
    // makes both again.
    ca.save(&dir)?;
    credentials.save(&dir)?;
    tracing::info!(ca = %ca.bundle_hash(), node = node_name, "made the cluster CA and this server's certificate");
    Ok(Pki { credentials, ca: Some(ca) })
}

/// A fresh key and a server certificate for it, signed by this server's own CA.
pub fn issue(ca: &Ca, node_name: &str, addresses: &[IpAddr], now: Timestamp) -> Result<Credentials, IdentityError> {
    let key = NodeKey::generate()?;
    let req = SignRequest {
        node_name: node_name.into(),
        addresses: addresses.to_vec(),
        role: Role::Server,
        validity: Validity::node(now),
    };
    let cert = ca.sign(&key.csr(node_name)?, &req)?;
    Credentials::new(ca.bundle_pem().to_string(), cert, key)
}

/// Saves what a join brought: the credentials, and for a server the CA with its key.
pub fn save_joined(data_dir: &Path, credentials: &Credentials, ca: Option<&Ca>) -> Result<(), IdentityError> {
    let dir = dir(data_dir);
    if let Some(ca) = ca {
        ca.save(&dir)?;
    }
    credentials.save(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_makes_a_ca_and_later_starts_load_it() {
        let data = tempfile::tempdir().unwrap();
        let addrs = ["10.0.0.1".parse().unwrap()];
        let first = load_or_create(data.path(), "a", &addrs).unwrap();
        assert_eq!(first.credentials.identity().role, Role::Server);
        let again = load_or_create(data.path(), "a", &addrs).unwrap();
        assert_eq!(again.ca.unwrap().bundle_hash(), first.ca.unwrap().bundle_hash());
        let mode = |f: &str| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir(data.path()).join(f)).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("node.key"), 0o600);
        let err = load(data.path(), "b").err().unwrap();
        assert!(err.to_string().contains("--node-name a"), "{err}");
    }
}
