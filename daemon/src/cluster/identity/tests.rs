//! Unit tests of the CA, node certificates, renewal and mutual TLS (handshakes in memory).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};

use rustls::{CertificateError, ClientConnection, Connection, ServerConnection};
use std::os::unix::fs::PermissionsExt;

use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;

fn now() -> Timestamp {
    Timestamp::now()
}

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn request(name: &str, role: Role) -> SignRequest {
    SignRequest { node_name: name.into(), addresses: vec![addr(1)], role, validity: Validity::node(now()) }
}

/// A node of `ca`'s cluster: a fresh key, its CSR signed with `req`.
fn node(ca: &Ca, req: &SignRequest) -> Credentials {
    let key = NodeKey::generate().unwrap();
    let cert = ca.sign(&key.csr(&req.node_name).unwrap(), req).unwrap();
    Credentials::new(ca.bundle_pem().to_string(), cert, key).unwrap()
}

#[derive(Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Moves what `from` has to send into `to`; the error is `to`'s.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rest = &buf[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(!buf.is_empty())
}

/// A TLS handshake between the two configs over memory, the client dialling `host`; then one
/// message each way. The error is the first side that refused, with its rustls error.
fn handshake(
    server: &Credentials,
    client: ClientConfig,
    host: &str,
) -> Result<(ServerConnection, ClientConnection), (Side, rustls::Error)> {
    let mut s = Connection::Server(ServerConnection::new(Arc::new(server.server_config().unwrap())).unwrap());
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), server_name(host).unwrap()).unwrap());
    for _ in 0..10 {
        let sent = pump(&mut c, &mut s).map_err(|e| (Side::Server, e))?;
        let answered = pump(&mut s, &mut c).map_err(|e| (Side::Client, e))?;
        if !sent && !answered && !s.is_handshaking() && !c.is_handshaking() {
            c.writer().write_all(b"ping").unwrap();
            pump(&mut c, &mut s).map_err(|e| (Side::Server, e))?;
            let mut got = [0u8; 4];
            s.reader().read_exact(&mut got).unwrap();
            assert_eq!(&got, b"ping");
            s.writer().write_all(b"pong").unwrap();
            pump(&mut s, &mut c).map_err(|e| (Side::Client, e))?;
            c.reader().read_exact(&mut got).unwrap();
            assert_eq!(&got, b"pong");
            let (Connection::Server(s), Connection::Client(c)) = (s, c) else { unreachable!() };
            return Ok((s, c));
        }
    }
    panic!("the handshake did not settle");
}

fn refused(result: Result<(ServerConnection, ClientConnection), (Side, rustls::Error)>) -> (Side, rustls::Error) {
    match result {
        Ok(_) => panic!("the handshake succeeded"),
        Err(e) => e,
    }
}

#[test]
fn two_nodes_of_one_cluster_talk_and_know_each_other() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let agent = node(&ca, &request("edge-7", Role::Agent));
    let (s, c) = handshake(&server, agent.client_config().unwrap(), "server-1").unwrap();
    let client_cert = &s.peer_certificates().unwrap()[0];
    assert_eq!(Identity::from_cert(client_cert).unwrap(), Identity { node_name: "edge-7".into(), role: Role::Agent });
    let server_cert = &c.peer_certificates().unwrap()[0];
    assert_eq!(
        Identity::from_cert(server_cert).unwrap(),
        Identity { node_name: "server-1".into(), role: Role::Server }
    );
    // The server is reached by address too: its IP SAN.
    handshake(&server, agent.client_config().unwrap(), "10.0.0.1").unwrap();
}

#[test]
fn a_client_certificate_of_another_cluster_is_refused() {
    let ca = Ca::create().unwrap();
    let other = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let stranger = node(&other, &request("edge-7", Role::Agent));
    // The stranger knows our CA (it is public) but its certificate is signed by another.
    let stranger = Credentials::new(ca.bundle_pem().into(), stranger.cert.clone(), stranger.key).unwrap();
    let (side, err) = refused(handshake(&server, stranger.client_config().unwrap(), "server-1"));
    assert_eq!(side, Side::Server);
    assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
    assert!(explain(&err).contains("not signed by this cluster's CA"), "{}", explain(&err));
}

#[test]
fn a_server_of_another_cluster_is_refused() {
    let ca = Ca::create().unwrap();
    let other = Ca::create().unwrap();
    let impostor = node(&other, &request("server-1", Role::Server));
    let agent = node(&ca, &request("edge-7", Role::Agent));
    let (side, err) = refused(handshake(&impostor, agent.client_config().unwrap(), "server-1"));
    assert_eq!(side, Side::Client);
    assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
}

#[test]
fn a_ca_flagged_leaf_is_refused() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    // Ca::sign never sets the CA flag; build such a certificate by hand with the cluster's key.
    let key = NodeKey::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = node_subject("edge-7", Role::Agent);
    params.subject_alt_names = vec![SanType::DnsName("edge-7".try_into().unwrap())];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    Validity::node(now()).apply(&mut params).unwrap();
    let cert = params.signed_by(&key.key, &ca.issuer).unwrap().der().clone();
    let rogue = Credentials::new(ca.bundle_pem().into(), cert, key).unwrap();
    let (side, err) = refused(handshake(&server, rogue.client_config().unwrap(), "server-1"));
    assert_eq!(side, Side::Server);
    assert!(format!("{err:?}").contains("CaUsedAsEndEntity"), "{err:?}");
    assert_eq!(explain(&err), "the peer presented a CA certificate, not a node certificate");
}

#[test]
fn an_expired_certificate_is_refused() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let past = Validity {
        not_before: now() - SignedDuration::from_hours(48),
        not_after: now() - SignedDuration::from_hours(24),
    };
    let old = node(&ca, &SignRequest { validity: past, ..request("edge-7", Role::Agent) });
    let (side, err) = refused(handshake(&server, old.client_config().unwrap(), "server-1"));
    assert_eq!(side, Side::Server);
    assert!(matches!(err, rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })), "{err:?}");
    assert!(err.to_string().contains("certificate expired"), "{err}");
    assert!(explain(&err).starts_with("the peer's certificate has expired"), "{}", explain(&err));
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let anonymous = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(server.roots().unwrap())
        .with_no_client_auth();
    let (side, err) = refused(handshake(&server, anonymous, "server-1"));
    assert_eq!(side, Side::Server);
    assert_eq!(err, rustls::Error::NoCertificatesPresented);
    assert!(explain(&err).contains("sent no client certificate"), "{}", explain(&err));
}

#[test]
fn a_server_is_checked_against_the_name_dialled() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let agent = node(&ca, &request("edge-7", Role::Agent));
    for host in ["server-2", "10.0.0.2"] {
        let (side, err) = refused(handshake(&server, agent.client_config().unwrap(), host));
        assert_eq!(side, Side::Client);
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })),
            "{err:?}"
        );
        assert!(explain(&err).contains("dial the server by its node name"), "{}", explain(&err));
    }
}

/// A CSR that asks for everything it must not get.
fn greedy_csr(key: &NodeKey) -> Vec<u8> {
    let mut params = CertificateParams::new(vec!["kubernetes.default".to_string(), "192.168.9.9".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "system:node:server-1");
    params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    params.serialize_request(&key.key).unwrap().der().to_vec()
}

#[test]
fn signing_copies_only_the_public_key_from_the_csr() {
    let ca = Ca::create().unwrap();
    let key = NodeKey::generate().unwrap();
    let req = SignRequest { addresses: vec![addr(7), "fd00::7".parse().unwrap()], ..request("edge-7", Role::Agent) };
    let der = ca.sign(&greedy_csr(&key), &req).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

    assert_eq!(cert.public_key().raw, key.public_key_der().as_slice());
    assert_eq!(Identity::from_cert(&der).unwrap(), Identity { node_name: "edge-7".into(), role: Role::Agent });
    let orgs: Vec<_> = cert.subject().iter_organization().map(|o| o.as_str().unwrap()).collect();
    assert_eq!(orgs, [NODES_GROUP]);
    assert_eq!(cert.issuer(), x509_parser::parse_x509_certificate(ca.cert_der()).unwrap().1.subject());

    let mut sans = Vec::new();
    let (mut ca_flag, mut key_usage, mut eku) = (None, None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    sans.push(match name {
                        GeneralName::DNSName(d) => d.to_string(),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                            _ => IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                        },
                        other => format!("{other:?}"),
                    })
                }
            }
            ParsedExtension::BasicConstraints(bc) => ca_flag = Some(bc.ca),
            ParsedExtension::KeyUsage(ku) => key_usage = Some((ku.digital_signature(), ku.key_cert_sign())),
            ParsedExtension::ExtendedKeyUsage(e) => eku = Some((e.server_auth, e.client_auth, e.code_signing)),
            _ => {}
        }
    }
    assert_eq!(sans, ["edge-7", "10.0.0.7", "fd00::7"]);
    assert_eq!(ca_flag, Some(false), "BasicConstraints CA:false is written");
    assert_eq!(key_usage, Some((true, false)));
    assert_eq!(eku, Some((true, true, false)));

    let v = validity(&der).unwrap();
    assert_eq!(v.not_after.duration_since(v.not_before), NODE_CERT_LIFETIME + CLOCK_SKEW);
}

#[test]
fn a_server_certificate_says_so() {
    let ca = Ca::create().unwrap();
    let server = node(&ca, &request("server-1", Role::Server));
    let (_, cert) = x509_parser::parse_x509_certificate(server.cert_der()).unwrap();
    let orgs: Vec<_> = cert.subject().iter_organization().map(|o| o.as_str().unwrap()).collect();
    assert_eq!(orgs, [NODES_GROUP, SERVERS_GROUP]);
    assert_eq!(server.identity().role, Role::Server);
    assert_eq!(server.identity().to_string(), "system:node:server-1 (server)");
}

#[test]
fn bad_requests_are_refused_with_what_is_wrong() {
    let ca = Ca::create().unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr("edge-7").unwrap();

    let err = ca.sign(b"not a csr", &request("edge-7", Role::Agent)).unwrap_err();
    assert!(matches!(err, IdentityError::Csr(_)), "{err}");

    // A CSR whose signature does not match (proof of possession fails).
    let mut tampered = csr.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x55;
    let err = ca.sign(&tampered, &request("edge-7", Role::Agent)).unwrap_err();
    assert!(matches!(err, IdentityError::Csr(_)), "{err}");

    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed_csr = CertificateParams::default().serialize_request(&ed).unwrap().der().to_vec();
    let err = ca.sign(&ed_csr, &request("edge-7", Role::Agent)).unwrap_err();
    assert!(matches!(err, IdentityError::CsrKeyAlgorithm), "{err}");

    let err = ca.sign(&csr, &request("Edge_7", Role::Agent)).unwrap_err();
    assert!(err.to_string().starts_with("invalid node name \"Edge_7\""), "{err}");

    let backwards = Validity { not_before: now(), not_after: now() - SignedDuration::from_secs(1) };
    let err = ca.sign(&csr, &SignRequest { validity: backwards, ..request("edge-7", Role::Agent) }).unwrap_err();
    assert!(matches!(err, IdentityError::Validity { .. }), "{err}");
}

#[test]
fn identity_needs_a_node_certificate() {
    let ca = Ca::create().unwrap();
    let err = Identity::from_cert(ca.cert_der()).unwrap_err();
    assert!(err.to_string().contains("does not start with system:node:"), "{err}");

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "system:node:edge-7");
    params.distinguished_name.push(DnType::OrganizationName, "system:masters");
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let err = Identity::from_cert(cert.der()).unwrap_err();
    assert!(err.to_string().contains("do not include system:nodes"), "{err}");

    assert!(matches!(Identity::from_cert(b"junk"), Err(IdentityError::Certificate(_))));
}

#[test]
fn renewal_is_due_two_thirds_into_the_lifetime() {
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let v = Validity::node(t0);
    assert_eq!(v.renew_at(), v.not_before + (NODE_CERT_LIFETIME + CLOCK_SKEW) * 2 / 3);

    let ca = Ca::create_at(t0).unwrap();
    let creds = node(&ca, &SignRequest { validity: v, ..request("edge-7", Role::Agent) });
    let due = creds.renewal_time().unwrap();
    assert_eq!(due, v.renew_at());
    assert!(!renewal_due(creds.cert_der(), t0 + SignedDuration::from_hours(24 * 59)).unwrap());
    assert!(renewal_due(creds.cert_der(), t0 + SignedDuration::from_hours(24 * 61)).unwrap());
}

#[test]
fn renewal_takes_a_new_key_and_keeps_the_identity() {
    let ca = Ca::create().unwrap();
    let creds = node(&ca, &request("edge-7", Role::Agent));

    let key = NodeKey::generate().unwrap();
    let cert = ca.sign(&key.csr("edge-7").unwrap(), &request("edge-7", Role::Agent)).unwrap();
    let renewed = creds.renewed(key, cert).unwrap();
    assert_ne!(renewed.cert_der(), creds.cert_der());
    assert_ne!(renewed.key.public_key_der(), creds.key.public_key_der());
    handshake(&node(&ca, &request("server-1", Role::Server)), renewed.client_config().unwrap(), "server-1").unwrap();

    let key = NodeKey::generate().unwrap();
    let cert = ca.sign(&key.csr("edge-8").unwrap(), &request("edge-8", Role::Agent)).unwrap();
    let err = creds.renewed(key, cert).unwrap_err();
    assert!(matches!(err, IdentityError::IdentityChanged { .. }), "{err}");

    let key = NodeKey::generate().unwrap();
    let cert = ca.sign(&key.csr("edge-7").unwrap(), &request("edge-7", Role::Server)).unwrap();
    assert!(matches!(creds.renewed(key, cert), Err(IdentityError::IdentityChanged { .. })));

    let key = NodeKey::generate().unwrap();
    let other = NodeKey::generate().unwrap();
    let cert = ca.sign(&other.csr("edge-7").unwrap(), &request("edge-7", Role::Agent)).unwrap();
    assert!(matches!(creds.renewed(key, cert), Err(IdentityError::KeyMismatch(_))));
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o777
}

#[test]
fn the_ca_is_saved_and_loaded_with_private_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let ca = Ca::create().unwrap();
    ca.save(&pki).unwrap();
    assert_eq!(mode(&pki), 0o700);
    assert_eq!(mode(&pki.join(CA_CERT_FILE)), 0o644);
    assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);
    assert_eq!(ca_bundle_hash(&fs::read(pki.join(CA_CERT_FILE)).unwrap()), ca.bundle_hash());

    let loaded = Ca::load(&pki).unwrap();
    assert_eq!(loaded.bundle_hash(), ca.bundle_hash());
    // The loaded CA signs certificates the original's nodes trust.
    let server = node(&ca, &request("server-1", Role::Server));
    let agent = node(&loaded, &request("edge-7", Role::Agent));
    handshake(&server, agent.client_config().unwrap(), "server-1").unwrap();

    // Saving again replaces the files and keeps the modes.
    ca.save(&pki).unwrap();
    assert_eq!(mode(&pki.join(CA_KEY_FILE)), 0o600);

    fs::set_permissions(pki.join(CA_KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    let err = Ca::load(&pki).unwrap_err();
    assert!(err.to_string().contains("may be read by group or others (mode 644)"), "{err}");

    // A key of another CA next to this certificate.
    fs::set_permissions(pki.join(CA_KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
    Ca::create().unwrap().save(&dir.path().join("other")).unwrap();
    fs::copy(dir.path().join("other").join(CA_KEY_FILE), pki.join(CA_KEY_FILE)).unwrap();
    assert!(matches!(Ca::load(&pki), Err(IdentityError::KeyMismatch(_))));
}

#[test]
fn credentials_are_saved_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::create().unwrap();
    let creds = node(&ca, &request("edge-7", Role::Agent));
    creds.save(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join(NODE_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.path().join(NODE_CERT_FILE)), 0o644);
    let loaded = Credentials::load(dir.path()).unwrap();
    assert_eq!(loaded.identity(), creds.identity());
    assert_eq!(loaded.cert_der(), creds.cert_der());
    handshake(&node(&ca, &request("server-1", Role::Server)), loaded.client_config().unwrap(), "server-1").unwrap();
}

#[test]
fn the_bundle_hash_is_sha256_of_the_pem_bytes() {
    assert_eq!(ca_bundle_hash(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let ca = Ca::create().unwrap();
    assert_eq!(ca.bundle_hash(), hex::encode(Sha256::digest(ca.bundle_pem().as_bytes())));
    assert!(ca.bundle_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
}

#[test]
fn nothing_secret_is_printed() {
    let ca = Ca::create().unwrap();
    let creds = node(&ca, &request("edge-7", Role::Agent));
    let secrets = [ca.issuer.key().serialize_pem(), creds.key.key.serialize_pem()];
    let printed = [format!("{ca:?}"), format!("{:?}", creds.key), format!("{creds:?}"), format!("{:#?}", creds)];
    for text in &printed {
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!text.contains("PRIVATE"), "{text}");
        for secret in &secrets {
            for line in secret.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!text.contains(line), "{text} shows a key");
            }
        }
    }
}
