//! Joining a cluster with a token, both ends.
//!
//! The joining node ([`join`]) fetches the CA bundle from `GET /cacerts` *without* trusting the
//! server (anyone may answer), checks that sha256 over the whole bundle is the hash in its
//! token, and only then connects again with that bundle as its only root and sends `POST
//! /skerry/v1/join`: the token's id and secret, its node name and a CSR for a key it made. The
//! server ([`Authority::join`]) checks the token (unknown and wrong secret get the same answer,
//! so a guesser learns nothing), that no Node has the name, signs a certificate with fields it
//! chooses (the name, the address the request came from, the token's role, 90 days), spends one
//! use of the token (a write with the token's `resourceVersion` as precondition, so two nodes
//! cannot both take the last use) and answers with the certificate — and, for a server, the
//! CA's key, so every server can sign. A refused join records nothing.
//!
//! The secret and the CA key never reach a log.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::json;

use super::identity::{self, Ca, Credentials, IdentityError, NodeKey, Role, SignRequest, Validity};
use super::raft;
use super::token::{self, JoinToken, Secret, TokenError};
use crate::objects::{meta, resource};
use crate::store::{Command, Proposer, Rejection, Store, StoreError};

/// Where the CA bundle is served, to anyone.
pub const CACERTS_PATH: &str = "/cacerts";
/// Where a node presents its token and CSR.
pub const JOIN_PATH: &str = "/skerry/v1/join";
/// The cluster port a join URL names when it names none.
pub const DEFAULT_PORT: u16 = 6443;

/// A joining node's request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub token_id: String,
    /// Never logged: `Debug` of this struct is not used in logs.
    pub secret: String,
    pub node_name: String,
    /// The CSR, DER in standard base64.
    pub csr: String,
}

/// What a joined node receives.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinReply {
    pub role: Role,
    /// The node certificate, PEM.
    pub certificate: String,
    /// The CA's key, PEM: for servers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// The servers' cluster addresses (`ip:port`).
    pub servers: Vec<String>,
}

/// Why a server refused a join. The joining side prints the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the join token is not valid: no token has this id and secret (never created, deleted, or mistyped); create one with `skerry token create` on a server")]
    NotValid,
    #[error("{0}")]
    Expired(String),
    #[error("{0}")]
    UsedUp(String),
    #[error("a node named {0:?} is already in the cluster: give this node another name with --node-name, or remove the old one first with `skerry delete node {0}`")]
    NameTaken(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the server could not complete the join: {0}; try again")]
    Unavailable(String),
    #[error("too many refused joins from {0} in the last minutes; check the token and try again in {1} s")]
    TooMany(IpAddr, u64),
}

impl Refusal {
    /// The HTTP status the refusal is sent with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotValid | Refusal::Expired(_) | Refusal::UsedUp(_) => 401,
            Refusal::NameTaken(_) => 409,
            Refusal::BadRequest(_) => 400,
            Refusal::Unavailable(_) => 503,
            Refusal::TooMany(..) => 429,
        }
    }
}

/// What a server needs to let nodes in: the CA, the state and a way to write.
pub struct Authority {
    pub ca: Arc<Ca>,
    pub store: Store,
    pub proposer: Proposer,
    /// The Raft member, for the servers' addresses.
    pub raft: raft::Raft,
    /// Refused joins by source address: a guesser is slowed down.
    pub refused: std::sync::Mutex<Refused>,
}

/// How many refused joins one address may have in [`Refused::WINDOW`] before it must wait.
const REFUSALS_ALLOWED: usize = 30;

/// Recent refused joins per source address (pure; time passed in).
#[derive(Debug, Default)]
pub struct Refused {
    by_addr: std::collections::HashMap<IpAddr, std::collections::VecDeque<std::time::Instant>>,
}

impl Refused {
    /// The window over which refusals are counted.
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

    /// `Some(seconds to wait)` when `from` has had too many refusals up to `now`.
    pub fn check(&mut self, from: IpAddr, now: std::time::Instant) -> Option<u64> {
        let times = self.by_addr.get_mut(&from)?;
        while times.front().is_some_and(|t| now.duration_since(*t) >= Self::WINDOW) {
            times.pop_front();
        }
        if times.is_empty() {
            self.by_addr.remove(&from);
            return None;
        }
        (times.len() >= REFUSALS_ALLOWED)
            .then(|| times.front().map_or(0, |t| (Self::WINDOW - now.duration_since(*t)).as_secs().max(1)))
    }

    /// Records a refusal of `from` at `now`.
    pub fn record(&mut self, from: IpAddr, now: std::time::Instant) {
        self.by_addr.entry(from).or_default().push_back(now);
    }
}

impl Authority {
    /// Checks `req` (sent from `from`) at `now` and signs the node in; see the module doc.
    pub async fn join(&self, from: IpAddr, req: JoinRequest, now: Timestamp) -> Result<JoinReply, Refusal> {
        let clock = std::time::Instant::now();
        if let Some(wait) = self.refused.lock().unwrap_or_else(|e| e.into_inner()).check(from, clock) {
            return Err(Refusal::TooMany(from, wait));
        }
        let outcome = self.admit(from, req, now).await;
        if matches!(outcome, Err(Refusal::NotValid | Refusal::Expired(_) | Refusal::UsedUp(_))) {
            self.refused.lock().unwrap_or_else(|e| e.into_inner()).record(from, clock);
        }
        outcome
    }

    async fn admit(&self, from: IpAddr, req: JoinRequest, now: Timestamp) -> Result<JoinReply, Refusal> {
        crate::objects::validation::dns1123_subdomain(&req.node_name).map_err(|reason| {
            Refusal::BadRequest(format!("the node name {:?} is not valid: {reason}", req.node_name))
        })?;
        let csr = base64::engine::general_purpose::STANDARD
            .decode(&req.csr)
            .map_err(|e| Refusal::BadRequest(format!("the CSR is not base64: {e}")))?;
        let key = resource::JOIN_TOKENS.key();
        let secret = Secret::presented(req.secret);
        let unavailable = |e: StoreError| Refusal::Unavailable(e.to_string());
        // A few rounds: another node may take a use of the same token meanwhile.
        for _ in 0..5 {
            let current = self.store.get(&key, "", &req.token_id).await.map_err(unavailable)?;
            let stored = current.as_ref().and_then(|o| token::from_object(o).ok());
            let role = token::verify(stored.as_ref(), &req.token_id, &secret, now).map_err(|e| match e {
                TokenError::Expired { .. } => Refusal::Expired(e.to_string()),
                TokenError::UsedUp(_) => Refusal::UsedUp(e.to_string()),
                _ => Refusal::NotValid,
            })?;
            if self.store.get("nodes", "", &req.node_name).await.map_err(unavailable)?.is_some() {
                return Err(Refusal::NameTaken(req.node_name));
            }
            let sign = SignRequest {
                node_name: req.node_name.clone(),
                addresses: vec![from],
                role,
                validity: Validity::node(now),
            };
            let cert = self.ca.sign(&csr, &sign).map_err(|e| Refusal::BadRequest(e.to_string()))?;
            if let (Some(mut object), Some(left)) = (current, stored.and_then(|s| s.uses_left)) {
                object["spec"]["usesLeft"] = json!(left.saturating_sub(1));
                match self.proposer.propose(Command::Update { resource: key.clone(), object }).await {
                    Ok(_) => {}
                    Err(StoreError::Rejected(Rejection::Conflict { .. })) => continue,
                    Err(StoreError::Rejected(Rejection::NotFound { .. })) => return Err(Refusal::NotValid),
                    Err(e) => return Err(unavailable(e)),
                }
            }
            let servers = self.raft.metrics().borrow().membership_config.nodes().map(|(_, m)| m.addr.clone()).collect();
            tracing::info!(node = req.node_name, role = %role, from = %from, token = req.token_id, "a node joined");
            return Ok(JoinReply {
                role,
                certificate: identity::cert_pem(&cert),
                ca_key: (role == Role::Server).then(|| self.ca.key_pem().to_string()),
                servers,
            });
        }
        Err(Refusal::Unavailable("the token was being used by other nodes at the same time".into()))
    }
}

/// Why this node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the join URL {0:?} is not like https://HOST:6443")]
    Url(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("cannot reach {url}: {why}; check the address and that skerryd runs there")]
    Unreachable { url: String, why: String },
    #[error(
        "the CA that {url} presents does not match the token's CA hash: this is not the cluster the token was made for \
         (or someone is in between); check the URL and the token"
    )]
    CaMismatch { url: String },
    #[error("{url} refused to let this node join: {message}")]
    Refused { url: String, message: String },
    #[error("{url} answered something unexpected: {why}")]
    Protocol { url: String, why: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What a join brings.
pub struct Joined {
    pub credentials: Credentials,
    /// For a server: the CA with its key.
    pub ca: Option<Ca>,
    pub servers: Vec<String>,
}

/// `https://host[:port]`, `host:port` or `host` → (`https://host:port`, `host:port`).
pub fn server_url(url: &str) -> Result<(String, String), JoinError> {
    let rest = url.trim().trim_end_matches('/');
    let rest = rest.strip_prefix("https://").unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') || rest.contains("://") {
        return Err(JoinError::Url(url.into()));
    }
    let authority: hyper::http::uri::Authority = rest.parse().map_err(|_| JoinError::Url(url.into()))?;
    let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(DEFAULT_PORT));
    Ok((format!("https://{addr}"), addr))
}

/// Joins the cluster at `url` with `token` as `node_name`; see the module doc.
pub async fn join(url: &str, token: &JoinToken, node_name: &str) -> Result<Joined, JoinError> {
    let (base, _) = server_url(url)?;
    let unverified = ClientConfig::builder_with_provider(identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(IdentityError::from)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unverified))
        .with_no_client_auth();
    let (status, bundle) = call(unverified, "GET", &format!("{base}{CACERTS_PATH}"), None).await?;
    if status != 200 {
        return Err(JoinError::Protocol { url: base, why: format!("GET {CACERTS_PATH} answered {status}") });
    }
    if !token.names_ca(&bundle) {
        return Err(JoinError::CaMismatch { url: base });
    }
    let bundle = String::from_utf8(bundle.to_vec())
        .map_err(|_| JoinError::Protocol { url: base.clone(), why: "the CA bundle is not text".into() })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(bundle.as_bytes()) {
        let cert: CertificateDer<'static> =
            cert.map_err(|_| JoinError::Protocol { url: base.clone(), why: "the CA bundle is not PEM".into() })?;
        roots.add(cert).map_err(IdentityError::from)?;
    }
    let pinned = ClientConfig::builder_with_provider(identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(IdentityError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let key = NodeKey::generate()?;
    let request = JoinRequest {
        token_id: token.id.clone(),
        secret: token.secret.expose().to_string(),
        node_name: node_name.to_string(),
        csr: base64::engine::general_purpose::STANDARD.encode(key.csr(node_name)?),
    };
    let body =
        serde_json::to_vec(&request).map_err(|e| JoinError::Protocol { url: base.clone(), why: e.to_string() })?;
    let (status, reply) = call(pinned, "POST", &format!("{base}{JOIN_PATH}"), Some(body)).await?;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&reply)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&reply).trim().to_string());
        return Err(JoinError::Refused { url: base, message });
    }
    let reply: JoinReply = serde_json::from_slice(&reply)
        .map_err(|e| JoinError::Protocol { url: base.clone(), why: format!("not a join reply: {e}") })?;
    let cert = CertificateDer::from_pem_slice(reply.certificate.as_bytes())
        .map_err(|_| JoinError::Protocol { url: base.clone(), why: "the certificate is not PEM".into() })?;
    let credentials = Credentials::new(bundle.clone(), cert, key)?;
    let me = credentials.identity();
    if me.node_name != node_name || me.role != reply.role {
        return Err(JoinError::Protocol { url: base, why: format!("the certificate names {me}, not {node_name}") });
    }
    let ca = match (reply.role, &reply.ca_key) {
        (Role::Server, Some(key)) => Some(Ca::from_pem(bundle, key)?),
        (Role::Server, None) => {
            return Err(JoinError::Protocol { url: base, why: "a server's join brought no CA key".into() })
        }
        (Role::Agent, _) => None,
    };
    Ok(Joined { credentials, ca, servers: reply.servers })
}

/// One HTTPS request with `config`; the answer's status and body.
async fn call(config: ClientConfig, method: &str, url: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), JoinError> {
    let client = super::peer::client(config);
    let unreachable = |why: String| JoinError::Unreachable { url: url.to_string(), why };
    let mut req = hyper::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| unreachable(e.to_string()))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| unreachable("no answer within 30 s".into()))?
        .map_err(|e| {
            unreachable(std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string()))
        })?;
    let status = resp.status().as_u16();
    let body =
        Limited::new(resp.into_body(), 1024 * 1024).collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
    Ok((status, body))
}

/// Accepts any server certificate: only for fetching the CA bundle, which is then checked
/// against the token's hash before anything is sent. Handshake signatures are still checked.
#[derive(Debug)]
struct Unverified;

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = identity::crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = identity::crypto_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        identity::crypto_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The stored form of a new token, as the API creates it: [`token::to_object`] with a uid.
pub fn token_object(stored: &token::StoredToken) -> serde_json::Value {
    let mut object = token::to_object(stored);
    meta::set(&mut object, "uid", uuid::Uuid::new_v4().to_string());
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_many_refused_joins_waits_until_the_window_passes() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = std::time::Instant::now();
        let mut refused = Refused::default();
        for k in 0..REFUSALS_ALLOWED {
            assert_eq!(refused.check(a, t0), None, "refusal {k}");
            refused.record(a, t0);
        }
        assert_eq!(refused.check(a, t0), Some(600));
        assert_eq!(refused.check(b, t0), None, "another address is not slowed");
        let later = t0 + std::time::Duration::from_secs(200);
        assert_eq!(refused.check(a, later), Some(400));
        assert_eq!(refused.check(a, t0 + Refused::WINDOW), None, "the window passed");
        assert!(Refusal::TooMany(a, 400).to_string().contains("try again in 400 s"));
        assert_eq!(Refusal::TooMany(a, 1).status(), 429);
    }
}
