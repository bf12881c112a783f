//! The DNS server: hickory-server's UDP and TCP machinery with our own request handler, which
//! answers the cluster domain from [`Records`] and forwards every other name upstream.
//!
//! Forwarding is written here rather than through hickory's forwarder store: that one needs
//! `hickory-resolver` (a cache, its own retry and timeout policy, system-config parsing), while
//! the contract here is small and must be exact — plain UDP to each upstream in turn, 2 s each,
//! TCP only when an upstream truncates, and SERVFAIL, never silence, when none answers.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::records::{self, Answer, Data, Records, Rr, TTL};
use super::DnsError;

/// How long one upstream gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a forwarded question may take over all upstreams, so that a client (glibc waits
/// 5 s) gets our SERVFAIL before it gives up on us.
pub const FORWARD_BUDGET: Duration = Duration::from_secs(4);
/// Forwarded questions in flight at once; past this, SERVFAIL at once instead of queueing.
const MAX_FORWARDS: usize = 1024;
/// Idle time after which a client's TCP connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The UDP payload size we advertise upstream and to clients (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

/// The shared, swappable record set the records loop writes and the server reads.
pub type SharedRecords = Arc<RwLock<Records>>;

/// Answers DNS requests: the cluster domain from the records, everything else upstream.
pub struct DnsServer {
    records: SharedRecords,
    upstreams: Vec<SocketAddr>,
    forwards: Arc<Semaphore>,
}

impl DnsServer {
    pub fn new(records: SharedRecords, upstreams: Vec<SocketAddr>) -> DnsServer {
        DnsServer { records, upstreams, forwards: Arc::new(Semaphore::new(MAX_FORWARDS)) }
    }

    fn lookup(&self, name: &str, rtype: RecordType) -> (Answer, Rr) {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        (records.lookup(name, rtype), records.soa())
    }

    /// Asks the upstreams one after another; `None` when none gave a usable answer in time.
    pub async fn forward(&self, name: &Name, rtype: RecordType, class: DNSClass) -> Option<Message> {
        let Ok(_slot) = self.forwards.try_acquire() else {
            tracing::warn!("too many DNS questions in flight upstream; answering SERVFAIL");
            return None;
        };
        let deadline = tokio::time::Instant::now() + FORWARD_BUDGET;
        let mut fallback = None;
        for upstream in &self.upstreams {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let mut query = Query::query(name.clone(), rtype);
            query.set_query_class(class);
            match tokio::time::timeout(left.min(UPSTREAM_TIMEOUT), exchange(*upstream, query)).await {
                Ok(Ok(msg)) if matches!(msg.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain) => {
                    return Some(msg);
                }
                Ok(Ok(msg)) => {
                    tracing::debug!(%upstream, code = %msg.metadata.response_code, "upstream refused; trying the next");
                    fallback = Some(msg);
                }
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "upstream DNS failed"),
                Err(_) => tracing::debug!(%upstream, %name, "upstream DNS timed out"),
            }
        }
        fallback
    }

    async fn respond<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> Result<ResponseInfo, DnsError> {
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, EDNS_PAYLOAD));
            e
        });
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        if request.metadata.message_type != MessageType::Query || request.metadata.op_code != OpCode::Query {
            meta.response_code = ResponseCode::NotImp;
            return Ok(handle.send_response(builder.build_no_records(meta)).await?);
        }
        let [question] = request.queries.queries() else {
            meta.response_code = ResponseCode::FormErr;
            return Ok(handle.send_response(builder.build_no_records(meta)).await?);
        };
        let original = question.original().name().clone();
        let rtype = question.query_type();
        let class = question.query_class();
        let (answer, soa) = self.lookup(&question.name().to_string(), rtype);

        let mut answers: Vec<Record> = Vec::new();
        let mut authorities: Vec<Record> = Vec::new();
        let mut additionals: Vec<Record> = Vec::new();
        match answer {
            Answer::Forward => match self.forward(&original, rtype, class).await {
                Some(msg) => {
                    meta.response_code = msg.metadata.response_code;
                    answers = msg.answers;
                    authorities = msg.authorities;
                    additionals = msg.additionals;
                }
                None => meta.response_code = ResponseCode::ServFail,
            },
            Answer::NxDomain => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                authorities.push(to_record(&soa, &original)?);
            }
            Answer::Found { answers: found, additionals: extra } => {
                meta.authoritative = true;
                if class != DNSClass::IN && class != DNSClass::ANY {
                    meta.response_code = ResponseCode::Refused;
                } else {
                    for rr in &found {
                        answers.push(to_record(rr, &original)?);
                    }
                    for rr in &extra {
                        additionals.push(to_record(rr, &original)?);
                    }
                    if answers.is_empty() {
                        authorities.push(to_record(&soa, &original)?);
                    }
                    // An ExternalName: resolve its outside target as a recursive server would.
                    if let Some(Rr { data: Data::Cname(target), .. }) = found.last() {
                        if !matches!(rtype, RecordType::CNAME | RecordType::ANY) && !self.is_ours(target) {
                            meta.authoritative = false;
                            if let Some(msg) = self.forward(&Name::from_ascii(target)?, rtype, class).await {
                                meta.response_code = msg.metadata.response_code;
                                answers.extend(msg.answers);
                            }
                        }
                    }
                }
            }
        }
        let response = builder.build(meta, answers.iter(), authorities.iter(), [], additionals.iter());
        Ok(handle.send_response(response).await?)
    }

    fn is_ours(&self, name: &str) -> bool {
        self.records.read().unwrap_or_else(|e| e.into_inner()).is_ours(name)
    }
}

/// Turns one of our records into a wire record. The owner of an answer is written as the
/// client spelled the question, so resolvers that randomise case (0x20) accept it.
fn to_record(rr: &Rr, question: &Name) -> Result<Record, DnsError> {
    let name =
        if records::fqdn(&question.to_string()) == rr.name { question.clone() } else { Name::from_ascii(&rr.name)? };
    let data = match &rr.data {
        Data::A(ip) => RData::A(A(*ip)),
        Data::Cname(target) => RData::CNAME(CNAME(Name::from_ascii(target)?)),
        Data::Srv { priority, weight, port, target } => {
            RData::SRV(SRV::new(*priority, *weight, *port, Name::from_ascii(target)?))
        }
        Data::Soa(s) => RData::SOA(SOA::new(
            Name::from_ascii(&s.mname)?,
            Name::from_ascii(&s.rname)?,
            s.serial,
            s.refresh,
            s.retry,
            s.expire,
            s.minimum,
        )),
    };
    Ok(Record::from_rdata(name, TTL, data))
}

/// One question to one upstream: UDP, then TCP if the answer came back truncated.
async fn exchange(upstream: SocketAddr, query: Query) -> Result<Message, DnsError> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    let bytes = msg.to_vec()?;

    let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65535];
    let reply = loop {
        let n = socket.recv(&mut buf).await?;
        // Anything that is not the answer to this question (late, spoofed, garbled) is dropped.
        let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
        if reply.metadata.id == msg.metadata.id
            && reply.metadata.message_type == MessageType::Response
            && reply.queries == msg.queries
        {
            break reply;
        }
    };
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| DnsError::Upstream("query too long".into()))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&bytes).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    let reply = Message::from_vec(&buf)?;
    if reply.metadata.id != msg.metadata.id {
        return Err(DnsError::Upstream(format!("{upstream} answered another question over TCP")));
    }
    Ok(reply)
}

// Written out rather than through `#[async_trait]` (what the trait's macro would generate),
// to avoid a proc-macro dependency for one impl.
impl RequestHandler for DnsServer {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            match self.respond(request, response_handle.clone()).await {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!(error = %e, src = %request.src(), "answering a DNS request failed");
                    let mut handle = response_handle;
                    let meta = Metadata::response_from_request(&request.metadata);
                    let response =
                        MessageResponseBuilder::new(&request.queries, None).error_msg(&meta, ResponseCode::ServFail);
                    match handle.send_response(response).await {
                        Ok(info) => info,
                        Err(_) => {
                            let mut meta = meta;
                            meta.response_code = ResponseCode::ServFail;
                            ResponseInfo::from(hickory_proto::op::Header { metadata: meta, counts: Default::default() })
                        }
                    }
                }
            }
        })
    }
}

/// Serves DNS on `listen` over UDP and TCP until `shutdown`: the cluster domain from
/// `records`, every other name through `upstreams`. Fails only when it cannot bind.
pub async fn run(
    listen: SocketAddr,
    records: SharedRecords,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    let udp = UdpSocket::bind(listen).await.map_err(|source| DnsError::Bind { addr: listen, source })?;
    let tcp = TcpListener::bind(listen).await.map_err(|source| DnsError::Bind { addr: listen, source })?;
    serve(udp, tcp, records, upstreams, shutdown).await
}

/// [`run`] on sockets the caller bound (tests bind port 0 and read the port back).
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    records: SharedRecords,
    upstreams: Vec<SocketAddr>,
    shutdown: CancellationToken,
) -> Result<(), DnsError> {
    // A host whose resolv.conf names the cluster DNS itself would make us ask ourselves.
    let me = udp.local_addr()?;
    let upstreams: Vec<SocketAddr> = upstreams.into_iter().filter(|u| *u != me).collect();
    if upstreams.is_empty() {
        tracing::warn!("no upstream DNS servers; names outside the cluster domain will get SERVFAIL");
    }
    tracing::info!(listen = %me, ?upstreams, "cluster DNS serving");
    let mut server = Server::new(DnsServer::new(records, upstreams));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 64);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        // The server's own tasks end only on an unrecoverable socket error.
        r = server.block_until_done() => {
            r.map_err(|e| DnsError::Upstream(format!("the DNS server stopped: {e}")))?;
            return Ok(());
        }
    }
    server.shutdown_gracefully().await.map_err(|e| DnsError::Upstream(format!("stopping the DNS server: {e}")))
}

/// The upstream resolvers named by a resolv.conf text, on port 53, in order.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        // A link-local IPv6 address may carry a zone (`fe80::1%eth0`), which SocketAddr cannot.
        let Ok(ip) = addr.parse::<std::net::IpAddr>() else { continue };
        let sa = SocketAddr::new(ip, 53);
        if !ip.is_unspecified() && !out.contains(&sa) {
            out.push(sa);
        }
    }
    out
}

/// The host's upstream resolvers: systemd-resolved's real upstream list when it runs
/// (`/etc/resolv.conf` then only names its 127.0.0.53 stub), else `/etc/resolv.conf`.
pub fn host_upstreams() -> Vec<SocketAddr> {
    for path in ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"] {
        if let Ok(text) = std::fs::read_to_string(path) {
            let ups = upstreams_from_resolv_conf(&text);
            if !ups.is_empty() {
                return ups;
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# generated\nsearch example.org\nnameserver 192.0.2.1\nnameserver   2001:db8::53 # v6\n\
                    options ndots:2\nnameserver 192.0.2.1\nnameserver not-an-ip\nnameserver\n  nameserver 198.51.100.7\n\
                    ;nameserver 203.0.113.9\nnameserver fe80::1%eth0\nnameserver 0.0.0.0\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap(),
                "198.51.100.7:53".parse().unwrap(),
            ]
        );
        assert!(upstreams_from_resolv_conf("").is_empty());
        assert_eq!(upstreams_from_resolv_conf("nameserver 127.0.0.53\n"), vec!["127.0.0.53:53".parse().unwrap()]);
    }

    proptest::proptest! {
        #[test]
        fn resolv_conf_parsing_never_panics_and_yields_port_53(text in "(nameserver|search|options|#|;| |\\t|\\n|[0-9a-f.:%]{1,12}){0,40}") {
            for sa in upstreams_from_resolv_conf(&text) {
                proptest::prop_assert_eq!(sa.port(), 53);
            }
        }
    }
}
