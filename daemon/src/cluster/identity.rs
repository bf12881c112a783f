//! Who a node is: the cluster CA, node keys and certificates, their renewal, and the mutual-TLS
//! configurations built from them. It never opens a socket and never decides what a node may do
//! (that is `authz`); it signs only names and addresses it is given, never ones a peer asks for.
//!
//! # The certificates
//!
//! The first server makes the CA ([`Ca::create`]): ECDSA P-256, self-signed, ten years,
//! path length 0 (it signs leaves only). [`Ca::sign`] turns a node's CSR into a node certificate
//! and copies nothing from the CSR but its public key (after checking the CSR's signature, which
//! proves the node holds the private key): the subject is `CN=system:node:<name>, O=system:nodes`
//! as a kubelet's, plus `O=skerry:servers` for a server; the SANs are the node's name as a DNS
//! name and the addresses the server knows it by; `CA:false`, key usage digitalSignature,
//! extended key usage serverAuth and clientAuth; 90 days by default, back-dated five minutes for
//! clock skew between edge boxes. [`Identity::from_cert`] reads the name and role back from a
//! certificate rustls has verified. A certificate is due for renewal after two thirds of its
//! lifetime ([`renewal_time`]); renewal is a new key and CSR signed again ([`Credentials::renewed`]
//! checks what comes back).
//!
//! A join token names the CA by [`ca_bundle_hash`]: sha256 over the bytes of the whole PEM
//! bundle, as k3s hashes its `cacerts` answer, so the bytes in `ca.crt` are kept as written.
//!
//! # Files
//!
//! `ca.crt` (0644) and `ca.key` (0600) on servers; `node.crt` (0644), `node.key` (0600) and the
//! CA's `ca.crt` on every node. Key files are created with mode 0600 (never chmod-ed after) and
//! written through a temporary file that is renamed into place; loading refuses a key file that
//! group or others may read.
//!
//! # TLS
//!
//! [`Credentials::server_config`] and [`Credentials::client_config`] are TLS 1.3 only (both ends
//! are `skerryd`), trust the cluster CA and nothing else (no system roots), and the server
//! requires a client certificate (`WebPkiClientVerifier`). The client checks the server's
//! certificate against the name or address it dialled. Neither checks the peer's *role*: a
//! caller that must talk to a server checks [`Identity::from_cert`] of the peer.
//!
//! # Crypto provider: aws-lc-rs
//!
//! One provider serves rcgen and rustls: aws-lc-rs, rustls' default. `oci-client`'s
//! `rustls-tls` feature turns on reqwest's `rustls`, which already builds aws-lc-rs for image
//! pulls, so aws-lc-rs costs nothing more, while `ring` would be a second provider in the binary
//! unless image pulls moved to reqwest's `rustls-no-provider` with a process-wide default
//! installed before any client is built (reqwest panics otherwise). aws-lc-rs also gives the
//! hybrid post-quantum key exchange (X25519MLKEM768) rustls prefers by default: peer traffic
//! carries Secrets across links an edge site does not control, for years. Its cost, a C build
//! and a larger binary than ring's, is already paid. Randomness (serial numbers, token secrets)
//! comes from the same provider's `SecureRandom` ([`random_bytes`]).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::objects::validation;

/// The CA certificate (the bundle the join token hashes).
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA's private key (servers only).
pub const CA_KEY_FILE: &str = "ca.key";
/// This node's certificate.
pub const NODE_CERT_FILE: &str = "node.crt";
/// This node's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// Every node certificate's organization, as Kubernetes' kubelets.
pub const NODES_GROUP: &str = "system:nodes";
/// The organization that marks a server's certificate.
pub const SERVERS_GROUP: &str = "skerry:servers";
/// A node certificate's common name is this prefix and the node name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The CA's lifetime.
pub const CA_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// A node certificate's default lifetime.
pub const NODE_CERT_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 90);
/// How far `notBefore` is back-dated, for clocks that disagree a little.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// What went wrong with keys, certificates or their files.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{} may be read by group or others (mode {mode:o}); run chmod 600 on it", path.display())]
    KeyReadable { path: PathBuf, mode: u32 },
    #[error("{} holds no PEM {what}", path.display())]
    Pem { path: PathBuf, what: &'static str },
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("the certificate signing request's key is not ECDSA P-256; generate the node key with skerryd")]
    CsrKeyAlgorithm,
    #[error("invalid node name {name:?}: {reason}")]
    NodeName { name: String, reason: String },
    #[error("invalid validity: notAfter {not_after} is not after notBefore {not_before}")]
    Validity { not_before: Timestamp, not_after: Timestamp },
    #[error("cannot parse the certificate: {0}")]
    Certificate(String),
    #[error("not a node certificate: {0}")]
    NotANode(String),
    #[error("the key does not belong to the certificate {0}")]
    KeyMismatch(&'static str),
    #[error("the renewed certificate is for {got}, not {want}; the server changed this node's identity")]
    IdentityChanged { want: String, got: String },
    #[error("cannot make the key or certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the random number generator failed")]
    Random,
}

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds a replica of the state and votes in Raft.
    Server,
    /// Runs pods only.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(Role::Server),
            "agent" => Ok(Role::Agent),
            _ => Err(format!("unknown role {s:?}: use server or agent")),
        }
    }
}

/// The crypto provider every TLS config and every random byte of the cluster code uses.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// Fills `buf` from the crypto provider's secure random generator (the OS's, through aws-lc).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), IdentityError> {
    crypto_provider().secure_random.fill(buf).map_err(|_| IdentityError::Random)
}

/// sha256 over the whole PEM bundle, hex: what a join token names the CA by.
pub fn ca_bundle_hash(bundle_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(bundle_pem))
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Validity {
    /// From `now` (back-dated by [`CLOCK_SKEW`]) for `lifetime`.
    pub fn lasting(now: Timestamp, lifetime: SignedDuration) -> Self {
        Validity { not_before: now - CLOCK_SKEW, not_after: now + lifetime }
    }

    /// A node certificate's default: [`NODE_CERT_LIFETIME`] from `now`.
    pub fn node(now: Timestamp) -> Self {
        Self::lasting(now, NODE_CERT_LIFETIME)
    }

    /// Two thirds into the lifetime: when the holder should renew.
    pub fn renew_at(&self) -> Timestamp {
        let lifetime = self.not_after.duration_since(self.not_before);
        self.not_before + lifetime * 2 / 3
    }

    fn check(&self) -> Result<(), IdentityError> {
        if self.not_after <= self.not_before {
            return Err(IdentityError::Validity { not_before: self.not_before, not_after: self.not_after });
        }
        Ok(())
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), IdentityError> {
        self.check()?;
        params.not_before = offset_date_time(self.not_before)?;
        params.not_after = offset_date_time(self.not_after)?;
        Ok(())
    }
}

fn offset_date_time(t: Timestamp) -> Result<time::OffsetDateTime, IdentityError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| IdentityError::Certificate(format!("time {t} out of range: {e}")))
}

/// What the server decided to put in a node certificate. Nothing here comes from the CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    /// The node's name: the certificate's CN (`system:node:<name>`) and its DNS SAN.
    pub node_name: String,
    /// The addresses the node is reached at (IP SANs).
    pub addresses: Vec<IpAddr>,
    pub role: Role,
    pub validity: Validity,
}

/// The cluster CA: its certificate (as the bytes of `ca.crt`) and its signing key.
pub struct Ca {
    bundle_pem: String,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("hash", &self.bundle_hash()).field("key", &"<redacted>").finish()
    }
}

impl Ca {
    /// A new CA, valid from now for [`CA_LIFETIME`].
    pub fn create() -> Result<Ca, IdentityError> {
        Self::create_at(Timestamp::now())
    }

    /// A new CA valid from `now` (back-dated by [`CLOCK_SKEW`]) for [`CA_LIFETIME`]. Its CN
    /// carries the creation second, as k3s's, and a random tag (`skerry-ca@<unix>-<hex>`): two
    /// clusters' CAs differ by name too, so a stranger's certificate fails as "unknown issuer",
    /// not as a bad signature of a namesake.
    pub fn create_at(now: Timestamp) -> Result<Ca, IdentityError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut tag = [0u8; 4];
        random_bytes(&mut tag)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("skerry-ca@{}-{}", now.as_second(), hex::encode(tag)));
        params.distinguished_name.push(DnType::OrganizationName, "skerry");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial()?);
        Validity::lasting(now, CA_LIFETIME).apply(&mut params)?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { bundle_pem: cert.pem(), cert: cert.der().clone(), issuer: Issuer::new(params, key) })
    }

    /// Writes `ca.crt` (0644) and `ca.key` (0600) into `dir` (made 0700 if missing).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        make_dir(dir)?;
        write_file(&dir.join(CA_CERT_FILE), self.bundle_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(CA_KEY_FILE), self.issuer.key().serialize_pem().as_bytes(), 0o600)
    }

    /// Reads what [`Ca::save`] wrote; the key must be private and match the certificate.
    pub fn load(dir: &Path) -> Result<Ca, IdentityError> {
        let bundle_pem = read_string(&dir.join(CA_CERT_FILE))?;
        let key = read_key(&dir.join(CA_KEY_FILE))?;
        Self::from_parts(bundle_pem, key)
    }

    /// The CA from its bundle and its key as PEM (a joining server receives both).
    pub fn from_pem(bundle_pem: String, key_pem: &str) -> Result<Ca, IdentityError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| IdentityError::Pem { path: CA_KEY_FILE.into(), what: "private key" })?;
        Self::from_parts(bundle_pem, key)
    }

    fn from_parts(bundle_pem: String, key: KeyPair) -> Result<Ca, IdentityError> {
        let cert = CertificateDer::from_pem_slice(bundle_pem.as_bytes())
            .map_err(|_| IdentityError::Pem { path: CA_CERT_FILE.into(), what: "certificate" })?;
        if spki(&cert)? != key.subject_public_key_info() {
            return Err(IdentityError::KeyMismatch("ca.crt"));
        }
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(Ca { bundle_pem, cert, issuer })
    }

    /// The CA's private key as PEM: only ever sent to a server joining over a verified channel.
    pub fn key_pem(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(self.issuer.key().serialize_pem())
    }

    /// The CA bundle as served to joining nodes (the exact bytes of `ca.crt`).
    pub fn bundle_pem(&self) -> &str {
        &self.bundle_pem
    }

    /// [`ca_bundle_hash`] of [`Ca::bundle_pem`].
    pub fn bundle_hash(&self) -> String {
        ca_bundle_hash(self.bundle_pem.as_bytes())
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Signs a node certificate for the CSR's public key with the fields in `req` (see the
    /// module doc). The CSR must carry a valid signature by an ECDSA P-256 key; its subject,
    /// SANs, key usages and CA flag are ignored.
    pub fn sign(&self, csr_der: &[u8], req: &SignRequest) -> Result<CertificateDer<'static>, IdentityError> {
        validation::dns1123_subdomain(&req.node_name)
            .map_err(|reason| IdentityError::NodeName { name: req.node_name.clone(), reason })?;
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(IdentityError::CsrKeyAlgorithm);
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = node_subject(&req.node_name, req.role);
        params.subject_alt_names =
            std::iter::once(SanType::DnsName(req.node_name.clone().try_into().map_err(|e: rcgen::Error| {
                IdentityError::NodeName { name: req.node_name.clone(), reason: e.to_string() }
            })?))
            .chain(req.addresses.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        req.validity.apply(&mut params)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.der().clone())
    }
}

fn node_subject(node_name: &str, role: Role) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node_name}"));
    dn.push(DnType::OrganizationName, NODES_GROUP);
    if role == Role::Server {
        // rcgen keeps one value per attribute type; a second O goes in as a custom attribute.
        dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), SERVERS_GROUP);
    }
    dn
}

/// A positive 127-bit serial number from the provider's random generator.
fn random_serial() -> Result<SerialNumber, IdentityError> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01 << 6; // never a leading zero byte, so the DER integer keeps 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

/// A node's private key (ECDSA P-256). Never printed.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, IdentityError> {
        Ok(NodeKey { key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)? })
    }

    /// A CSR for this key, DER. Its subject names the node as a courtesy; the CA ignores it.
    pub fn csr(&self, node_name: &str) -> Result<Vec<u8>, IdentityError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = node_subject(node_name, Role::Agent);
        Ok(params.serialize_request(&self.key)?.der().to_vec())
    }

    /// The public key as an X.509 SubjectPublicKeyInfo, DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.key.subject_public_key_info()
    }

    fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// Who a verified peer certificate says the peer is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub node_name: String,
    pub role: Role,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NODE_USER_PREFIX}{} ({})", self.node_name, self.role)
    }
}

impl Identity {
    /// Reads the node name and role from a node certificate. It does not verify the
    /// certificate: pass the end-entity certificate of a peer rustls has already verified.
    pub fn from_cert(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let subject = cert.subject();
        let mut cns = subject.iter_common_name();
        let cn = match (cns.next(), cns.next()) {
            (Some(cn), None) => cn.as_str().map_err(|_| IdentityError::NotANode("its CN is not a string".into()))?,
            _ => return Err(IdentityError::NotANode("it needs exactly one CN".into())),
        };
        let node_name = cn
            .strip_prefix(NODE_USER_PREFIX)
            .ok_or_else(|| IdentityError::NotANode(format!("CN {cn:?} does not start with {NODE_USER_PREFIX}")))?;
        validation::dns1123_subdomain(node_name)
            .map_err(|reason| IdentityError::NotANode(format!("CN {cn:?}: {reason}")))?;
        let orgs: Vec<&str> = subject.iter_organization().filter_map(|o| o.as_str().ok()).collect();
        if !orgs.contains(&NODES_GROUP) {
            return Err(IdentityError::NotANode(format!("its organizations {orgs:?} do not include {NODES_GROUP}")));
        }
        let role = if orgs.contains(&SERVERS_GROUP) { Role::Server } else { Role::Agent };
        Ok(Identity { node_name: node_name.to_string(), role })
    }
}

/// When a certificate was issued for.
pub fn validity(der: &[u8]) -> Result<Validity, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let ts = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| IdentityError::Certificate(e.to_string()))
    };
    Ok(Validity { not_before: ts(cert.validity().not_before)?, not_after: ts(cert.validity().not_after)? })
}

/// When the holder of this certificate should renew it: two thirds into its lifetime.
pub fn renewal_time(der: &[u8]) -> Result<Timestamp, IdentityError> {
    Ok(validity(der)?.renew_at())
}

/// Whether the certificate is due for renewal at `now`.
pub fn renewal_due(der: &[u8], now: Timestamp) -> Result<bool, IdentityError> {
    Ok(now >= renewal_time(der)?)
}

fn spki(cert: &CertificateDer<'_>) -> Result<Vec<u8>, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok(cert.public_key().raw.to_vec())
}

/// What a node holds: the CA bundle it trusts, its certificate and its key.
pub struct Credentials {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: NodeKey,
    identity: Identity,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("ca_hash", &ca_bundle_hash(self.ca_pem.as_bytes()))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Checks that `cert` is a node certificate for `key`.
    pub fn new(ca_pem: String, cert: CertificateDer<'static>, key: NodeKey) -> Result<Credentials, IdentityError> {
        if spki(&cert)? != key.public_key_der() {
            return Err(IdentityError::KeyMismatch("node.crt"));
        }
        let identity = Identity::from_cert(&cert)?;
        Ok(Credentials { ca_pem, cert, key, identity })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// When this certificate should be renewed.
    pub fn renewal_time(&self) -> Result<Timestamp, IdentityError> {
        renewal_time(&self.cert)
    }

    /// The credentials after renewal: `key` is a fresh [`NodeKey`] whose CSR the CA signed into
    /// `cert`. The certificate must be for that key and name the same node and role.
    pub fn renewed(&self, key: NodeKey, cert: CertificateDer<'static>) -> Result<Credentials, IdentityError> {
        let next = Credentials::new(self.ca_pem.clone(), cert, key)?;
        if next.identity != self.identity {
            return Err(IdentityError::IdentityChanged {
                want: self.identity.to_string(),
                got: next.identity.to_string(),
            });
        }
        Ok(next)
    }

    /// Writes `ca.crt`, `node.crt` (0644) and `node.key` (0600) into `dir` (made 0700 if missing).
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        make_dir(dir)?;
        write_file(&dir.join(CA_CERT_FILE), self.ca_pem.as_bytes(), 0o644)?;
        write_file(&dir.join(NODE_CERT_FILE), cert_pem(&self.cert).as_bytes(), 0o644)?;
        write_file(&dir.join(NODE_KEY_FILE), self.key.key.serialize_pem().as_bytes(), 0o600)
    }

    /// Reads what [`Credentials::save`] wrote.
    pub fn load(dir: &Path) -> Result<Credentials, IdentityError> {
        let ca_pem = read_string(&dir.join(CA_CERT_FILE))?;
        let cert_path = dir.join(NODE_CERT_FILE);
        let cert = CertificateDer::from_pem_slice(read_string(&cert_path)?.as_bytes())
            .map_err(|_| IdentityError::Pem { path: cert_path, what: "certificate" })?;
        let key = NodeKey { key: read_key(&dir.join(NODE_KEY_FILE))? };
        Credentials::new(ca_pem, cert, key)
    }

    /// The certificate and key as rustls serves them.
    pub fn certified_key(&self) -> Result<Arc<rustls::sign::CertifiedKey>, IdentityError> {
        let key = crypto_provider().key_provider.load_private_key(self.key.private_key_der())?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(vec![self.cert.clone()], key)))
    }

    /// The cluster CA as the only root.
    pub fn roots(&self) -> Result<Arc<RootCertStore>, IdentityError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|_| IdentityError::Pem { path: CA_CERT_FILE.into(), what: "certificate" })?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            return Err(IdentityError::Pem { path: CA_CERT_FILE.into(), what: "certificate" });
        }
        Ok(Arc::new(roots))
    }

    /// TLS 1.3 server side: presents this node's certificate, requires a client certificate
    /// signed by the cluster CA.
    pub fn server_config(&self) -> Result<ServerConfig, IdentityError> {
        let provider = crypto_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone()).build()?;
        Ok(ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.private_key_der())?)
    }

    /// TLS 1.3 server side of the cluster port: as [`Credentials::server_config`], but a client
    /// without a certificate may connect too — a joining node fetches the CA and presents its
    /// token before it has a certificate. A client that presents one must present a valid one;
    /// each route decides whether it needs one.
    pub fn port_config(&self) -> Result<ServerConfig, IdentityError> {
        let provider = crypto_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .allow_unauthenticated()
            .build()?;
        Ok(ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.private_key_der())?)
    }

    /// TLS 1.3 client side: trusts only the cluster CA and presents this node's certificate.
    pub fn client_config(&self) -> Result<ClientConfig, IdentityError> {
        Ok(ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.private_key_der())?)
    }
}

/// Test credentials: a fresh key and a certificate of `ca` for `name` with `role`, valid now,
/// for 127.0.0.1.
#[cfg(test)]
pub fn test_credentials(ca: &Ca, name: &str, role: Role) -> Credentials {
    let key = NodeKey::generate().unwrap();
    let req = SignRequest {
        node_name: name.into(),
        addresses: vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        role,
        validity: Validity::node(Timestamp::now()),
    };
    let cert = ca.sign(&key.csr(name).unwrap(), &req).unwrap();
    Credentials::new(ca.bundle_pem().to_string(), cert, key).unwrap()
}

/// The name a client checks the server's certificate against: a node name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, IdentityError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| IdentityError::NodeName { name: host.into(), reason: "not a DNS name or IP address".into() })
}

/// Says in Skerry's words why a peer's TLS handshake failed and what to do about it.
pub fn explain(err: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match err {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the peer's certificate is not signed by this cluster's CA \
             (a node of another cluster, or one from before the CA was replaced); join it again with a token of this \
             cluster"
                .into()
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => format!(
            "the peer's certificate has expired ({err}); nodes renew theirs two thirds into its lifetime, so check the \
             peer's clock and that it reaches a server, or join it again"
        ),
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the peer's certificate is not valid yet ({err}); check both clocks")
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("{err}: dial the server by its node name or one of the addresses its certificate was issued for")
        }
        E::InvalidCertificate(C::Other(other)) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            "the peer presented a CA certificate, not a node certificate".into()
        }
        E::NoCertificatesPresented => {
            "the peer sent no client certificate; every node must present its node certificate (mutual TLS)".into()
        }
        E::AlertReceived(A::CertificateRequired) => {
            "the other side requires a client certificate and we sent none".into()
        }
        E::AlertReceived(alert @ (A::BadCertificate | A::UnknownCA | A::CertificateExpired)) => {
            format!("the other side rejected our certificate ({alert:?}); its log says why")
        }
        other => other.to_string(),
    }
}

/// A certificate as PEM (RFC 7468: base64 in lines of 64).
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

fn make_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| IdentityError::Io {
        action: "create",
        path: dir.into(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file created with `mode`, synced and renamed.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| IdentityError::Io { action, path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover of a crash may have another mode: never reuse it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("remove", &tmp)(e)),
        _ => {}
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync", dir))
}

fn read_string(path: &Path) -> Result<String, IdentityError> {
    fs::read_to_string(path).map_err(|source| IdentityError::Io { action: "read", path: path.into(), source })
}

fn read_key(path: &Path) -> Result<KeyPair, IdentityError> {
    let meta = fs::metadata(path).map_err(|source| IdentityError::Io { action: "read", path: path.into(), source })?;
    if meta.mode() & 0o077 != 0 {
        return Err(IdentityError::KeyReadable { path: path.into(), mode: meta.mode() & 0o777 });
    }
    let pem = read_string(path)?;
    KeyPair::from_pem(&pem).map_err(|_| IdentityError::Pem { path: path.into(), what: "private key" })
}

#[cfg(test)]
mod tests;
