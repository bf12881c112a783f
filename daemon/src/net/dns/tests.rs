//! In-process tests of the DNS server (on 127.0.0.1, with fake upstreams on 127.0.0.1) and of
//! the dummy link (inside a network namespace the test creates).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::*;

const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn fixture() -> Records {
    let services = vec![
        json!({"metadata": {"name": "fleetman-webapp", "namespace": "default"},
               "spec": {"type": "NodePort", "clusterIP": "10.43.12.7", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        json!({"metadata": {"name": "db", "namespace": "default"}, "spec": {"clusterIP": "None"}}),
        json!({"metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "outside.example"}}),
    ];
    let endpoints = vec![json!({"metadata": {"name": "db", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": "10.42.0.8"}, {"ip": "10.42.0.9"}]}]})];
    build(&services, &endpoints, &[], "cluster.local")
}

/// A fake upstream on 127.0.0.1: `outside.example.` A → 192.0.2.1; `big.example.` comes back
/// truncated over UDP and whole (40 records) over TCP on the same port; the rest NXDOMAIN.
struct FakeUpstream {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn fake_answer(query: &Message, over_udp: bool) -> Vec<u8> {
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_available = true;
    reply.add_queries(query.queries.clone());
    let name = query.queries[0].name().to_ascii().to_ascii_lowercase();
    match name.as_str() {
        "outside.example." => {
            reply.add_answer(Record::from_rdata(query.queries[0].name().clone(), 60, RData::A(A(OUTSIDE_IP))));
        }
        "big.example." if over_udp => reply.metadata.truncation = true,
        "big.example." => {
            for i in 0..40u8 {
                let ip = Ipv4Addr::new(192, 0, 2, i + 10);
                reply.add_answer(Record::from_rdata(query.queries[0].name().clone(), 60, RData::A(A(ip))));
            }
        }
        _ => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().unwrap()
}

async fn fake_upstream() -> FakeUpstream {
    let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await;
    let addr = udp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                r = udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { return };
                    let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                    let _ = udp.send_to(&fake_answer(&q, true), from).await;
                }
                r = tcp.accept() => {
                    let Ok((mut s, _)) = r else { return };
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() { continue }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).await.is_err() { continue }
                    let Ok(q) = Message::from_vec(&q) else { continue };
                    let a = fake_answer(&q, false);
                    let _ = s.write_all(&u16::try_from(a.len()).unwrap().to_be_bytes()).await;
                    let _ = s.write_all(&a).await;
                }
            }
        }
    });
    FakeUpstream { addr, stop }
}

/// A UDP socket and a TCP listener on the same port of `ip` (port 0: any free one).
async fn bind_pair(addr: SocketAddr) -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind(addr).await.unwrap();
        let bound = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(bound).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on {addr}");
}

/// Our server on 127.0.0.1 with the fixture's records; stops when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), DnsError>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn start(upstreams: Vec<SocketAddr>) -> TestServer {
    let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await;
    let addr = udp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let records: SharedRecords = Arc::new(RwLock::new(fixture()));
    let task = tokio::spawn(serve(udp, tcp, records, upstreams, stop.clone()));
    TestServer { addr, stop, task: Some(task) }
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(10)))
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (stream, sender) =
        TcpClientStream::new(addr, None, Some(Duration::from_secs(10)), TokioRuntimeProvider::default());
    let (client, bg) =
        Client::<TokioRuntimeProvider>::with_timeout(stream.await.unwrap(), sender, Duration::from_secs(10));
    tokio::spawn(bg);
    client
}

/// (response code, A addresses in the answer, authority record types).
async fn ask(
    client: &mut Client<TokioRuntimeProvider>,
    name: &str,
    rtype: RecordType,
) -> (ResponseCode, Vec<Ipv4Addr>, Vec<RecordType>, Message) {
    let response = client.query(Name::from_ascii(name).unwrap(), DNSClass::IN, rtype).await.unwrap();
    let msg: Message = response.into_message();
    let ips = msg.answers.iter().filter_map(|r| if let RData::A(a) = &r.data { Some(a.0) } else { None }).collect();
    let auth = msg.authorities.iter().map(|r| r.record_type()).collect();
    (msg.metadata.response_code, ips, auth, msg)
}

#[tokio::test]
async fn cluster_names_resolve_over_udp_and_tcp() {
    let up = fake_upstream().await;
    let server = start(vec![up.addr]).await;
    for mut client in [udp_client(server.addr).await, tcp_client(server.addr).await] {
        for name in [
            "fleetman-webapp.default.svc.cluster.local.",
            "fleetman-webapp.default.svc.cluster.local",
            "FLEETMAN-webapp.Default.SVC.cluster.local.",
        ] {
            let (code, ips, _, msg) = ask(&mut client, name, RecordType::A).await;
            assert_eq!((code, ips), (ResponseCode::NoError, vec![Ipv4Addr::new(10, 43, 12, 7)]), "{name}");
            assert!(msg.metadata.authoritative);
            assert_eq!(msg.answers[0].ttl, 5);
            // The answer's owner is spelled as the question was.
            assert_eq!(msg.answers[0].name.to_ascii().trim_end_matches('.'), name.trim_end_matches('.'));
        }
        let (code, mut ips, _, _) = ask(&mut client, "db.default.svc.cluster.local.", RecordType::A).await;
        ips.sort();
        assert_eq!(
            (code, ips),
            (ResponseCode::NoError, vec![Ipv4Addr::new(10, 42, 0, 8), Ipv4Addr::new(10, 42, 0, 9)])
        );

        let (code, _, _, msg) =
            ask(&mut client, "_http._tcp.fleetman-webapp.default.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(code, ResponseCode::NoError);
        let RData::SRV(srv) = &msg.answers[0].data else { panic!("{msg:?}") };
        assert_eq!((srv.priority, srv.weight, srv.port), (0, 100, 80));
        assert_eq!(srv.target.to_ascii(), "fleetman-webapp.default.svc.cluster.local.");

        let (code, ips, auth, _) =
            ask(&mut client, "fleetman-webapp.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!((code, ips, auth), (ResponseCode::NoError, vec![], vec![RecordType::SOA]));

        let (code, ips, auth, msg) = ask(&mut client, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!((code, ips, auth), (ResponseCode::NXDomain, vec![], vec![RecordType::SOA]));
        let RData::SOA(soa) = &msg.authorities[0].data else { panic!() };
        assert_eq!(soa.minimum, 5);
    }
}

#[tokio::test]
async fn outside_names_are_forwarded() {
    let up = fake_upstream().await;
    let server = start(vec![up.addr]).await;
    for mut client in [udp_client(server.addr).await, tcp_client(server.addr).await] {
        let (code, ips, _, msg) = ask(&mut client, "Outside.Example.", RecordType::A).await;
        assert_eq!((code, ips), (ResponseCode::NoError, vec![OUTSIDE_IP]));
        assert!(!msg.metadata.authoritative && msg.metadata.recursion_available);
        let (code, ips, _, _) = ask(&mut client, "unknown.example.", RecordType::A).await;
        assert_eq!((code, ips), (ResponseCode::NXDomain, vec![]));
        // An ExternalName's outside target is resolved upstream: CNAME, then its address.
        let (code, ips, _, msg) = ask(&mut client, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!((code, ips), (ResponseCode::NoError, vec![OUTSIDE_IP]));
        assert_eq!(msg.answers[0].record_type(), RecordType::CNAME);
    }
    // Truncated upstream answers are fetched again over TCP.
    let mut client = tcp_client(server.addr).await;
    let (code, ips, _, _) = ask(&mut client, "big.example.", RecordType::A).await;
    assert_eq!((code, ips.len()), (ResponseCode::NoError, 40));
    // Over UDP without EDNS the client gets the truncation bit and the start of the answer.
    let mut client = udp_client(server.addr).await;
    client.disable_edns();
    let (code, ips, _, msg) = ask(&mut client, "big.example.", RecordType::A).await;
    assert_eq!(code, ResponseCode::NoError);
    assert!(msg.metadata.truncation && ips.len() < 40, "{} records", ips.len());
}

#[tokio::test]
async fn silent_upstreams_give_servfail() {
    // Bound but never read: questions to it go unanswered.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = start(vec![silent.local_addr().unwrap(), silent2.local_addr().unwrap()]).await;
    let mut client = udp_client(server.addr).await;
    let (code, ips, _, _) = ask(&mut client, "outside.example.", RecordType::A).await;
    assert_eq!((code, ips), (ResponseCode::ServFail, vec![]));
    // Cluster names do not depend on the upstreams.
    let (code, _, _, _) = ask(&mut client, "fleetman-webapp.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(code, ResponseCode::NoError);
    // Itself as the only upstream is no upstream: SERVFAIL at once, no loop.
    let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await;
    let me = udp.local_addr().unwrap();
    let stop = CancellationToken::new();
    let selfish = tokio::spawn(serve(udp, tcp, shared("cluster.local"), vec![me], stop.clone()));
    let mut client = udp_client(me).await;
    let (code, _, _, _) = ask(&mut client, "outside.example.", RecordType::A).await;
    assert_eq!(code, ResponseCode::ServFail);
    stop.cancel();
    selfish.await.unwrap().unwrap();
    // No upstream at all: SERVFAIL at once.
    let lonely = start(vec![]).await;
    let mut client = udp_client(lonely.addr).await;
    let (code, _, _, _) = ask(&mut client, "outside.example.", RecordType::A).await;
    assert_eq!(code, ResponseCode::ServFail);
}

#[tokio::test]
async fn records_loop_follows_the_store() {
    use crate::store::Command;
    let (store, proposer) = crate::store::test_store().await;
    let records = shared("cluster.local");
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_records(store.clone(), "cluster.local".into(), records.clone(), stop.clone()));
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.99"}});
    proposer
        .propose(Command::Create { resource: crate::objects::resource::SERVICES.key(), object: svc })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = records.read().unwrap().lookup("web.default.svc.cluster.local", RecordType::A);
        if let Answer::Found { answers, .. } = answer {
            assert_eq!(answers.len(), 1);
            assert!(records.read().unwrap().serial > 0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the record never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

#[test]
fn pod_resolv_conf_points_at_the_cluster_dns() {
    assert_eq!(
        pod_resolv_conf("default", Ipv4Addr::new(10, 43, 0, 10), "cluster.local"),
        "nameserver 10.43.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
    assert_eq!(
        pod_resolv_conf("web", Ipv4Addr::new(10, 43, 0, 10), "edge.example."),
        "nameserver 10.43.0.10\nsearch web.svc.edge.example svc.edge.example edge.example\noptions ndots:5\n"
    );
}

/// A network namespace of our own, pinned by a bind mount in a temp dir; unmounted on drop.
struct TestNetns {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl TestNetns {
    fn new() -> TestNetns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        std::fs::File::create(&path).unwrap();
        let target = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .expect("bind-mounting the namespace");
        })
        .join()
        .unwrap();
        TestNetns { _dir: dir, path }
    }

    /// Runs `f` on a thread inside the namespace, on its own current-thread runtime.
    fn run<T: Send + 'static, Fut: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> T {
        let file = std::fs::File::open(&self.path).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f())
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// (is up, IPv4 addresses with prefix and label) of the link called `name` in this thread's
/// namespace.
async fn link_state(name: &str) -> Option<(bool, Vec<(Ipv4Addr, u8, Option<String>)>)> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkFlags;
    let (conn, h, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    let link = match h.link().get().match_name(name).execute().try_next().await {
        Ok(Some(l)) => l,
        _ => return None,
    };
    let addrs: Vec<_> =
        h.address().get().set_link_index_filter(link.header.index).execute().try_collect().await.unwrap();
    let v4 = addrs
        .iter()
        .filter_map(|m| {
            let label =
                m.attributes
                    .iter()
                    .find_map(|a| if let AddressAttribute::Label(l) = a { Some(l.clone()) } else { None });
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len, label.clone())),
                _ => None,
            })
        })
        .collect();
    Some((link.header.flags.contains(LinkFlags::Up), v4))
}

/// The cluster DNS addresses Skerry put in this namespace, wherever they are.
async fn dns_addresses() -> Vec<(Ipv4Addr, u8)> {
    let mut out: Vec<(Ipv4Addr, u8)> = Vec::new();
    if let Some((up, addrs)) = link_state(LINK_NAME).await {
        assert!(up, "{LINK_NAME} is down");
        out.extend(addrs.into_iter().map(|(ip, p, _)| (ip, p)));
    }
    let (_, lo) = link_state("lo").await.unwrap();
    out.extend(lo.into_iter().filter(|(_, _, l)| l.as_deref() == Some(LO_LABEL)).map(|(ip, p, _)| (ip, p)));
    out
}

async fn loopback_up() {
    use futures::TryStreamExt;
    let (conn, h, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    let lo = h.link().get().match_name("lo").execute().try_next().await.unwrap().unwrap();
    h.link().set(rtnetlink::LinkUnspec::new_with_index(lo.header.index).up().build()).execute().await.unwrap();
}

#[test]
fn dns_address_on_a_dummy_link_in_a_test_namespace() {
    assert!(nix::unistd::geteuid().is_root(), "this test creates a network namespace and needs root");
    let ns = TestNetns::new();
    ns.run(|| async {
        let dns_ip = Ipv4Addr::new(10, 43, 0, 10);
        loopback_up().await;
        assert_eq!(dns_addresses().await, vec![]);
        let holder = ensure_dns_address(Ipv4Addr::new(10, 43, 0, 11)).await.unwrap();
        // Idempotent, and a changed address replaces the old one.
        assert_eq!(ensure_dns_address(dns_ip).await.unwrap(), holder);
        assert_eq!(ensure_dns_address(dns_ip).await.unwrap(), holder);
        assert_eq!(dns_addresses().await, vec![(dns_ip, 32)], "held by {holder:?}");
        if holder == Holder::Loopback {
            assert_eq!(link_state(LINK_NAME).await, None);
        }

        // The server binds the address on port 53 and answers there, over UDP and TCP.
        let listen = SocketAddr::from((dns_ip, 53));
        let stop = CancellationToken::new();
        let records: SharedRecords = Arc::new(RwLock::new(fixture()));
        let server = tokio::spawn(run(listen, records, vec![], stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut client = loop {
            // The server binds asynchronously; TCP connect tells us it is listening.
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                break tcp_client(listen).await;
            }
            assert!(tokio::time::Instant::now() < deadline, "the server never listened on {listen}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (code, ips, _, _) = ask(&mut client, "fleetman-webapp.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!((code, ips), (ResponseCode::NoError, vec![Ipv4Addr::new(10, 43, 12, 7)]));
        let mut client = udp_client(listen).await;
        let (code, _, _, _) = ask(&mut client, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(code, ResponseCode::NXDomain);
        stop.cancel();
        server.await.unwrap().unwrap();

        assert!(remove_dns_address().await.unwrap());
        assert!(!remove_dns_address().await.unwrap());
        assert_eq!(link_state(LINK_NAME).await, None);
        assert_eq!(dns_addresses().await, vec![]);
    });
}

#[test]
fn binding_a_busy_address_is_a_clear_error() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (udp, _tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await;
        let addr = udp.local_addr().unwrap();
        let err = run(addr, shared("cluster.local"), vec![], CancellationToken::new()).await.unwrap_err();
        assert!(matches!(err, DnsError::Bind { .. }), "{err}");
    });
}
