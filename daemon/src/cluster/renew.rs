//! Certificates that renew themselves without a restart. [`Live`] holds a node's current
//! credentials; the TLS configurations built from it ([`Live::port_config`],
//! [`Live::client_config`]) ask it for the certificate at every handshake, so a renewed one is
//! presented from the next connection on, while connections already open go on. [`run`] renews
//! two thirds into the certificate's life: a server signs a new key with the CA it holds; an
//! agent sends a CSR to a server's `POST /skerry/v1/renew` under its current certificate, and
//! the server signs the same name and role (never what the CSR asks). The new key and
//! certificate are saved (keys 0600) before they are used.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};
use tokio_util::sync::CancellationToken;

use super::identity::{self, Ca, Credentials, IdentityError, NodeKey, SignRequest, Validity};

/// Where an agent asks for a new certificate.
pub const RENEW_PATH: &str = "/skerry/v1/renew";

/// A node's credentials as they are now.
pub struct Live {
    credentials: RwLock<Arc<Credentials>>,
    certified: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("identity", self.current().identity()).finish()
    }
}

impl Live {
    pub fn new(credentials: Credentials) -> Result<Arc<Live>, IdentityError> {
        let certified = credentials.certified_key()?;
        Ok(Arc::new(Live { credentials: RwLock::new(Arc::new(credentials)), certified: RwLock::new(certified) }))
    }

    pub fn current(&self) -> Arc<Credentials> {
        self.credentials.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn certified(&self) -> Arc<CertifiedKey> {
        self.certified.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Presents `next` from the next handshake on.
    pub fn replace(&self, next: Credentials) -> Result<(), IdentityError> {
        let certified = next.certified_key()?;
        *self.certified.write().unwrap_or_else(|e| e.into_inner()) = certified;
        *self.credentials.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// The cluster port's TLS 1.3 server side (see `Credentials::port_config`), presenting the
    /// current certificate.
    pub fn port_config(self: &Arc<Self>) -> Result<ServerConfig, IdentityError> {
        let provider = identity::crypto_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.current().roots()?, provider.clone())
            .allow_unauthenticated()
            .build()?;
        Ok(ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone()))))
    }

    /// TLS 1.3 client side: trusts only the cluster CA, presents the current certificate.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, IdentityError> {
        Ok(ClientConfig::builder_with_provider(identity::crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.current().roots()?)
            .with_client_cert_resolver(Arc::new(Resolver(self.clone()))))
    }
}

#[derive(Debug)]
struct Resolver(Arc<Live>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How this node gets a new certificate.
pub enum Renewer {
    /// A server: signs with its own CA for these addresses.
    Local { ca: Arc<Ca>, addresses: Vec<IpAddr> },
    /// An agent: asks these servers (`https://ip:port`).
    Remote { servers: Vec<String> },
}

/// What an agent sends to renew.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RenewRequest {
    /// DER, standard base64.
    pub csr: String,
}

/// What it gets back.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RenewReply {
    /// PEM.
    pub certificate: String,
}

/// Signs a renewal for the peer `who` (verified by TLS) reached from `from`: same name and
/// role, a new validity, the CSR's key.
pub fn sign_renewal(
    ca: &Ca,
    who: &identity::Identity,
    from: IpAddr,
    req: &RenewRequest,
    now: Timestamp,
) -> Result<RenewReply, IdentityError> {
    let csr = base64::engine::general_purpose::STANDARD
        .decode(&req.csr)
        .map_err(|e| IdentityError::Csr(format!("not base64: {e}")))?;
    let sign = SignRequest {
        node_name: who.node_name.clone(),
        addresses: vec![from],
        role: who.role,
        validity: Validity::node(now),
    };
    Ok(RenewReply { certificate: identity::cert_pem(&ca.sign(&csr, &sign)?) })
}

/// Renews `live`'s certificate two thirds into each certificate's life, until `cancel`; saves
/// each new one under `dir` before using it. A failed renewal is retried every minute.
pub async fn run(live: Arc<Live>, renewer: Renewer, dir: PathBuf, cancel: CancellationToken) {
    loop {
        let wait = match live.current().renewal_time() {
            Ok(at) => {
                let left = at.duration_since(Timestamp::now());
                std::time::Duration::try_from(left).unwrap_or_default()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read this node's certificate; it will not be renewed");
                return;
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew(&live, &renewer, &dir).await {
            Ok(until) => tracing::info!(valid_until = %until, "renewed this node's certificate"),
            Err(e) => {
                tracing::warn!(error = %e, "renewing this node's certificate failed; will retry in a minute");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

async fn renew(live: &Arc<Live>, renewer: &Renewer, dir: &std::path::Path) -> Result<Timestamp, String> {
    let current = live.current();
    let name = current.identity().node_name.clone();
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let csr = key.csr(&name).map_err(|e| e.to_string())?;
    let cert = match renewer {
        Renewer::Local { ca, addresses } => {
            let sign = SignRequest {
                node_name: name,
                addresses: addresses.clone(),
                role: current.identity().role,
                validity: Validity::node(Timestamp::now()),
            };
            ca.sign(&csr, &sign).map_err(|e| e.to_string())?
        }
        Renewer::Remote { servers } => remote(live, servers, &csr).await?,
    };
    let next = current.renewed(key, cert).map_err(|e| e.to_string())?;
    next.save(dir).map_err(|e| e.to_string())?;
    let until = identity::validity(next.cert_der()).map_err(|e| e.to_string())?.not_after;
    live.replace(next).map_err(|e| e.to_string())?;
    Ok(until)
}

async fn remote(live: &Arc<Live>, servers: &[String], csr: &[u8]) -> Result<CertificateDer<'static>, String> {
    let client = super::peer::client(live.client_config().map_err(|e| e.to_string())?);
    let body = serde_json::to_vec(&RenewRequest { csr: base64::engine::general_purpose::STANDARD.encode(csr) })
        .map_err(|e| e.to_string())?;
    let mut last = "no server is known".to_string();
    for server in servers {
        let req = hyper::Request::post(format!("{server}{RENEW_PATH}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| e.to_string())?;
        let resp = match tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                last = format!("{server}: {e}");
                continue;
            }
            Err(_) => {
                last = format!("{server}: no answer within 30 s");
                continue;
            }
        };
        let status = resp.status();
        let bytes = match Limited::new(resp.into_body(), 1024 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                last = format!("{server}: {e}");
                continue;
            }
        };
        if !status.is_success() {
            last = format!("{server}: {status}: {}", String::from_utf8_lossy(&bytes).trim());
            continue;
        }
        let reply: RenewReply = serde_json::from_slice(&bytes).map_err(|e| format!("{server}: {e}"))?;
        return CertificateDer::from_pem_slice(reply.certificate.as_bytes())
            .map_err(|_| format!("{server}: the certificate is not PEM"));
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::identity::Role;

    /// A certificate already due is renewed by the loop, saved, and presented by a TLS server
    /// built before the renewal — no restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_certificate_is_renewed_and_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(Ca::create().unwrap());
        let key = NodeKey::generate().unwrap();
        let now = Timestamp::now();
        let short = SignRequest {
            node_name: "server-1".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            role: Role::Server,
            validity: Validity::lasting(now, jiff::SignedDuration::from_secs(60)),
        };
        let cert = ca.sign(&key.csr("server-1").unwrap(), &short).unwrap();
        let first = Credentials::new(ca.bundle_pem().to_string(), cert.clone(), key).unwrap();
        let live = Live::new(first).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(live.port_config().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let presented = || async {
            let client =
                Live::new(crate::cluster::pki::issue(&ca, "server-2", &[], Timestamp::now()).unwrap()).unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client.client_config().unwrap()));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = connector.connect(identity::server_name("127.0.0.1").unwrap(), tcp).await.unwrap();
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        };
        assert_eq!(presented().await, cert);
        let stop = CancellationToken::new();
        let renewer = Renewer::Local { ca: ca.clone(), addresses: vec!["127.0.0.1".parse().unwrap()] };
        let task = tokio::spawn(run(live.clone(), renewer, dir.path().to_path_buf(), stop.clone()));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while live.current().cert_der() == &cert {
            assert!(tokio::time::Instant::now() < deadline, "the due certificate was not renewed");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let renewed = live.current().cert_der().clone();
        assert_ne!(renewed, cert);
        assert_eq!(presented().await, renewed, "the server still presents the old certificate");
        let lasts = identity::validity(&renewed).unwrap().not_after.duration_since(now);
        assert!(lasts > jiff::SignedDuration::from_hours(24 * 89), "{lasts:?}");
        let saved = Credentials::load(dir.path()).unwrap();
        assert_eq!(saved.cert_der(), &renewed);
        assert_eq!(saved.identity(), live.current().identity());
        stop.cancel();
        task.await.unwrap();
    }
}
