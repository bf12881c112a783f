//! Running probes: the [`Prober`] trait with [`NodeProber`], its real implementation (exec
//! through containerd, HTTP GET and TCP connect from the node's network namespace to the pod's
//! address, as kubelet does), and [`drive`], the task that runs one container's probes on their
//! own schedules and reports what changes through a [`Reporter`].
//!
//! HTTP uses hyper's HTTP/1 client connection (already in the tree through axum), one
//! connection per request with `Connection: close`, like kubelet's probe client.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ContainerProbes, Effect, Handler, Kind, Outcome, Spec, View};
use std::sync::Arc;

use crate::runtime::{ExecRequest, Runtime};

/// How much output of an exec probe (or body of an HTTP answer) is kept, as kubelet.
const MAX_OUTPUT: usize = 10 * 1024;
/// Redirects an HTTP probe follows on the same host, as Go's client.
const MAX_REDIRECTS: usize = 10;
/// Kubelet sends `kube-probe/<major>.<minor>`; Skerry's API says 0.1.
const USER_AGENT: &str = "kube-probe/0.1";

/// One probe attempt, fully resolved: what to run and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec { container_id: String, command: Vec<String> },
    Http { host: String, port: u16, path: String, headers: Vec<(String, String)> },
    Tcp { host: String, port: u16 },
    Fail(String),
}

/// The action for `spec` on a container whose pod has address `pod_ip`.
pub fn action(spec: &Spec, container_id: &str, pod_ip: &str) -> Action {
    let host = |h: &str| if h.is_empty() { pod_ip.to_string() } else { h.to_string() };
    match &spec.handler {
        Handler::Exec { command } => Action::Exec { container_id: container_id.to_string(), command: command.clone() },
        Handler::Http { host: h, port, path, headers } => {
            Action::Http { host: host(h), port: *port, path: path.clone(), headers: headers.clone() }
        }
        Handler::Tcp { host: h, port } => Action::Tcp { host: host(h), port: *port },
        Handler::Invalid(message) => Action::Fail(message.clone()),
    }
}

/// Runs one probe attempt. Implementations honour `timeout` themselves (and clean up, e.g.
/// kill an exec that ran too long); [`drive`] adds a safety margin on top.
pub trait Prober: Clone + Send + Sync + 'static {
    fn probe(&self, action: &Action, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

/// Where [`drive`] reports: failed attempts (events) and changes of the [`View`].
pub trait Reporter: Send + Sync + 'static {
    fn unhealthy(&self, kind: Kind, message: String) -> impl Future<Output = ()> + Send;
    fn changed(&self, view: View);
}

/// Runs a container's probes until `cancel`: each probe on its own period, concurrently, at
/// most one attempt of each in flight.
pub async fn drive<P: Prober, R: Reporter>(
    mut machine: ContainerProbes,
    container_id: String,
    pod_ip: String,
    prober: P,
    reporter: R,
    cancel: CancellationToken,
) {
    let mut in_flight: JoinSet<(Kind, Outcome)> = JoinSet::new();
    loop {
        for (kind, spec) in machine.due(Instant::now()) {
            let prober = prober.clone();
            let act = action(&spec, &container_id, &pod_ip);
            in_flight.spawn(async move {
                let guard = spec.timeout + Duration::from_secs(2);
                let outcome = match tokio::time::timeout(guard, prober.probe(&act, spec.timeout)).await {
                    Ok(o) => o,
                    Err(_) => Outcome::Failure(format!("probe did not finish within {}s", guard.as_secs())),
                };
                (kind, outcome)
            });
        }
        let wake = machine.next_wake();
        tokio::select! {
            _ = cancel.cancelled() => return,
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((kind, outcome)) = done else { continue };
                if cancel.is_cancelled() {
                    return;
                }
                for effect in machine.record(kind, outcome, Instant::now()) {
                    match effect {
                        Effect::Unhealthy { kind, message } => reporter.unhealthy(kind, message).await,
                        Effect::Changed(view) => reporter.changed(view),
                    }
                }
            }
            _ = sleep_until(wake) => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The real prober: containerd for exec, the node's network for HTTP and TCP.
#[derive(Clone)]
pub struct NodeProber {
    pub runtime: Arc<dyn Runtime>,
}

impl Prober for NodeProber {
    async fn probe(&self, action: &Action, timeout: Duration) -> Outcome {
        match action {
            Action::Exec { container_id, command } => exec(self.runtime.as_ref(), container_id, command, timeout).await,
            Action::Http { host, port, path, headers } => http_get(host, *port, path, headers, timeout).await,
            Action::Tcp { host, port } => tcp(host, *port, timeout).await,
            Action::Fail(message) => Outcome::Failure(message.clone()),
        }
    }
}

/// `host:port`, bracketing IPv6 addresses as Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Go's wording for a dial error, which users know from kubelet's events.
fn dial_error(addr: &str, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        std::io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    };
    format!("dial tcp {addr}: {why}")
}

/// A TCP probe: success when the connection opens.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(dial_error(&addr, &e)),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// An HTTP probe: success for a status in 200..400, following redirects on the same host (a
/// redirect elsewhere ends the probe as a success, as kubelet's warning result).
pub async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut path = path.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let url = format!("http://{}{}", join_host_port(host, port), path);
        let answer = match tokio::time::timeout_at(deadline, get_once(host, port, &path, headers)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Outcome::Failure(format!("Get {url:?}: {e}")),
            Err(_) => {
                return Outcome::Failure(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                ))
            }
        };
        let (status, location) = answer;
        if status.is_redirection() {
            match location.as_deref().and_then(|l| same_host_path(l, host, port)) {
                Some(next) => {
                    path = next;
                    continue;
                }
                None => return Outcome::Success,
            }
        }
        if (200..400).contains(&status.as_u16()) {
            return Outcome::Success;
        }
        return Outcome::Failure(format!("HTTP probe failed with statuscode: {}", status.as_u16()));
    }
    Outcome::Failure(format!(
        "Get \"http://{}{path}\": stopped after {MAX_REDIRECTS} redirects",
        join_host_port(host, port)
    ))
}

/// The path to follow for a redirect to `location`, when it stays on `host:port`.
fn same_host_path(location: &str, host: &str, port: u16) -> Option<String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(location.to_string());
    }
    let uri: hyper::Uri = location.parse().ok()?;
    let same = uri.scheme_str() == Some("http")
        && uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']')) == Some(host)
        && uri.port_u16().unwrap_or(80) == port;
    same.then(|| uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()))
}

/// One GET on a new connection: the status and the `Location` header.
async fn get_once(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(hyper::StatusCode, Option<String>), String> {
    let addr = join_host_port(host, port);
    let stream = TcpStream::connect((host, port)).await.map_err(|e| dial_error(&addr, &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let result = async {
        let mut req =
            hyper::Request::get(path).body(Empty::<Bytes>::new()).map_err(|e| format!("invalid path {path:?}: {e}"))?;
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, HeaderValue::from_str(&addr).map_err(|e| e.to_string())?);
        h.insert(hyper::header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        h.insert(hyper::header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        let mut replaced = std::collections::HashSet::new();
        for (name, value) in headers {
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("invalid header name {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("invalid value for header {name}: {e}"))?;
            // The probe's own headers replace the defaults (Host, User-Agent, Accept) and add up.
            if replaced.insert(name.clone()) {
                h.insert(name, value);
            } else {
                h.append(name, value);
            }
        }
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let location = resp.headers().get(hyper::header::LOCATION).and_then(|l| l.to_str().ok()).map(String::from);
        Ok((resp.status(), location))
    }
    .await;
    conn.abort();
    result
}

/// An exec probe: success when the command exits 0; a failure carries its output.
pub async fn exec(runtime: &dyn Runtime, container_id: &str, command: &[String], timeout: Duration) -> Outcome {
    let req = ExecRequest { args: command.to_vec(), ..Default::default() };
    let session = match runtime.exec(container_id, &req).await {
        Ok(s) => s,
        Err(e) => return Outcome::Failure(format!("exec failed: {e}")),
    };
    let crate::runtime::ExecSession { stdin: _, stdout, stderr, control } = session;
    let run = async {
        let (out, err) = tokio::join!(read_capped(stdout), async {
            match stderr {
                Some(s) => read_capped(s).await,
                None => Vec::new(),
            }
        });
        (control.wait().await, out, err)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((Ok(0), _, _)) => Outcome::Success,
        Ok((Ok(_), mut out, err)) => {
            out.extend(err);
            out.truncate(MAX_OUTPUT);
            // Kubelet keeps the output as is; the trailing newline only clutters `describe`.
            Outcome::Failure(String::from_utf8_lossy(&out).trim_end().to_string())
        }
        Ok((Err(e), _, _)) => Outcome::Failure(format!("exec failed: {e}")),
        Err(_) => {
            let _ = control.kill(libc::SIGKILL).await;
            Outcome::Failure(format!("command {:?} timed out", command.join(" ")))
        }
    }
}

/// Reads a stream to its end, keeping the first [`MAX_OUTPUT`] bytes (draining the rest, so
/// the process never blocks on a full pipe).
async fn read_capped(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Answers each attempt from a script per kind (then repeats the last answer), and logs when.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<std::collections::HashMap<String, VecDeque<Outcome>>>>,
        calls: Arc<Mutex<Vec<(String, Instant)>>>,
    }

    impl Script {
        fn set(&self, key: &str, outcomes: Vec<Outcome>) {
            self.answers.lock().unwrap().insert(key.into(), outcomes.into());
        }
        fn calls(&self, key: &str) -> usize {
            self.calls.lock().unwrap().iter().filter(|(k, _)| k == key).count()
        }
    }

    fn key(action: &Action) -> String {
        match action {
            Action::Exec { command, .. } => command.join(" "),
            Action::Http { path, .. } => path.clone(),
            Action::Tcp { port, .. } => port.to_string(),
            Action::Fail(m) => m.clone(),
        }
    }

    impl Prober for Script {
        async fn probe(&self, action: &Action, _timeout: Duration) -> Outcome {
            let k = key(action);
            self.calls.lock().unwrap().push((k.clone(), Instant::now()));
            let mut answers = self.answers.lock().unwrap();
            let q = answers.entry(k).or_default();
            let o = if q.len() > 1 { q.pop_front() } else { q.front().cloned() };
            o.unwrap_or(Outcome::Success)
        }
    }

    #[derive(Clone, Default)]
    struct Log {
        events: Arc<Mutex<Vec<String>>>,
        views: Arc<Mutex<Vec<(View, Instant)>>>,
    }

    impl Reporter for Log {
        async fn unhealthy(&self, kind: Kind, message: String) {
            self.events.lock().unwrap().push(format!("{} probe failed: {message}", kind.label()));
        }
        fn changed(&self, view: View) {
            self.views.lock().unwrap().push((view, Instant::now()));
        }
    }

    fn spec(kind: Kind, handler: Handler, period: u64, failure: u32) -> Spec {
        Spec {
            kind,
            handler,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: failure,
        }
    }

    fn exec_handler(cmd: &str) -> Handler {
        Handler::Exec { command: vec![cmd.into()] }
    }

    #[tokio::test(start_paused = true)]
    async fn probes_run_on_their_periods_and_report_changes() {
        let script = Script::default();
        script.set(
            "ready",
            vec![Outcome::Failure("not yet".into()), Outcome::Failure("not yet".into()), Outcome::Success],
        );
        script.set("live", vec![Outcome::Success]);
        let log = Log::default();
        let t0 = Instant::now();
        let machine = ContainerProbes::new(
            vec![spec(Kind::Readiness, exec_handler("ready"), 1, 3), spec(Kind::Liveness, exec_handler("live"), 10, 3)],
            t0,
            Duration::ZERO,
        );
        let cancel = CancellationToken::new();
        let task =
            tokio::spawn(drive(machine, "c1".into(), "10.42.0.5".into(), script.clone(), log.clone(), cancel.clone()));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(script.calls("ready"), 3, "readiness at 0, 1 and 2 s");
        assert_eq!(script.calls("live"), 1, "liveness once in its 10 s period");
        let views = log.views.lock().unwrap().clone();
        assert_eq!(views.len(), 1, "{views:?}");
        assert!(views[0].0.ready);
        assert_eq!(views[0].1 - t0, Duration::from_secs(2), "ready at the first success");
        assert_eq!(
            log.events.lock().unwrap().as_slice(),
            ["Readiness probe failed: not yet", "Readiness probe failed: not yet"]
        );
        cancel.cancel();
        task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(script.calls("ready"), 3, "nothing runs after cancel");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_liveness_asks_for_a_kill_once() {
        let script = Script::default();
        script.set("live", vec![Outcome::Failure("boom".into())]);
        let log = Log::default();
        let machine = ContainerProbes::new(
            vec![spec(Kind::Liveness, exec_handler("live"), 1, 3)],
            Instant::now(),
            Duration::ZERO,
        );
        let cancel = CancellationToken::new();
        tokio::spawn(drive(machine, "c1".into(), "10.42.0.5".into(), script.clone(), log.clone(), cancel.clone()));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(script.calls("live"), 3, "no attempts after the verdict");
        let views = log.views.lock().unwrap().clone();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].0.kill, Some(Kind::Liveness));
        assert_eq!(log.events.lock().unwrap().len(), 3);
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_does_not_delay_the_others() {
        #[derive(Clone)]
        struct Hang(Script);
        impl Prober for Hang {
            async fn probe(&self, action: &Action, timeout: Duration) -> Outcome {
                if key(action) == "hang" {
                    std::future::pending::<()>().await;
                }
                self.0.probe(action, timeout).await
            }
        }
        let script = Script::default();
        let log = Log::default();
        let machine = ContainerProbes::new(
            vec![
                spec(Kind::Liveness, exec_handler("hang"), 1, 100),
                spec(Kind::Readiness, exec_handler("ready"), 1, 3),
            ],
            Instant::now(),
            Duration::ZERO,
        );
        let cancel = CancellationToken::new();
        tokio::spawn(drive(machine, "c1".into(), "ip".into(), Hang(script.clone()), log.clone(), cancel.clone()));
        tokio::time::sleep(Duration::from_millis(6500)).await;
        assert_eq!(script.calls("ready"), 7);
        let events = log.events.lock().unwrap().clone();
        assert_eq!(events.len(), 2, "the hung probe fails at its guard (timeout + 2 s): {events:?}");
        assert!(events[0].starts_with("Liveness probe failed: probe did not finish within 3s"), "{events:?}");
        cancel.cancel();
    }

    #[test]
    fn actions_default_the_host_to_the_pod() {
        let s = spec(
            Kind::Readiness,
            Handler::Http { host: String::new(), port: 80, path: "/".into(), headers: vec![] },
            1,
            3,
        );
        assert_eq!(
            action(&s, "c", "10.42.0.9"),
            Action::Http { host: "10.42.0.9".into(), port: 80, path: "/".into(), headers: vec![] }
        );
        let s = spec(Kind::Readiness, Handler::Tcp { host: "127.0.0.1".into(), port: 81 }, 1, 3);
        assert_eq!(action(&s, "c", "10.42.0.9"), Action::Tcp { host: "127.0.0.1".into(), port: 81 });
    }

    #[test]
    fn redirects_stay_on_the_host() {
        assert_eq!(same_host_path("/next?x=1", "10.0.0.1", 80).as_deref(), Some("/next?x=1"));
        assert_eq!(same_host_path("http://10.0.0.1/b", "10.0.0.1", 80).as_deref(), Some("/b"));
        assert_eq!(same_host_path("http://10.0.0.1:8080/b", "10.0.0.1", 8080).as_deref(), Some("/b"));
        assert_eq!(same_host_path("http://example.com/b", "10.0.0.1", 80), None);
        assert_eq!(same_host_path("https://10.0.0.1/b", "10.0.0.1", 80), None);
        assert_eq!(same_host_path("//example.com/b", "10.0.0.1", 80), None);
    }

    /// A one-shot HTTP server on loopback answering each connection from `answers` in turn.
    async fn server(answers: Vec<&'static str>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut requests = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&got).into_owned());
                use tokio::io::AsyncWriteExt;
                s.write_all(answer.as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
            requests
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probes_over_a_real_socket() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (port, srv) = server(vec![ok]).await;
        let headers = vec![("X-Probe".to_string(), "yes".to_string()), ("Host".to_string(), "app.local".to_string())];
        assert_eq!(http_get("127.0.0.1", port, "/healthz", &headers, Duration::from_secs(2)).await, Outcome::Success);
        let req = srv.await.unwrap().remove(0);
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        let lower = req.to_ascii_lowercase();
        assert!(
            lower.contains("x-probe: yes")
                && lower.contains("host: app.local")
                && lower.contains("user-agent: kube-probe/"),
            "{req}"
        );

        let (port, srv) = server(vec![
            "HTTP/1.1 302 Found\r\nlocation: /there\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        assert_eq!(
            http_get("127.0.0.1", port, "/", &[], Duration::from_secs(2)).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        let reqs = srv.await.unwrap();
        assert!(reqs[1].starts_with("GET /there "), "the redirect is followed: {reqs:?}");

        // Nothing listens: refused, in Go's words.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let Outcome::Failure(m) = http_get("127.0.0.1", port, "/", &[], Duration::from_secs(2)).await else { panic!() };
        assert!(m.contains("connection refused"), "{m}");
        let Outcome::Failure(m) = tcp("127.0.0.1", port, Duration::from_secs(2)).await else { panic!() };
        assert_eq!(m, format!("dial tcp 127.0.0.1:{port}: connect: connection refused"));

        // A server that accepts and never answers: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        assert_eq!(tcp("127.0.0.1", port, Duration::from_secs(2)).await, Outcome::Success);
        let Outcome::Failure(m) = http_get("127.0.0.1", port, "/", &[], Duration::from_millis(300)).await else {
            panic!()
        };
        assert!(m.contains("Client.Timeout exceeded"), "{m}");
    }
}
