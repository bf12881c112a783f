//! The fake skerryd the CLI tests run against: a Unix socket in a temporary folder that
//! answers discovery itself, records every other request, and hands it to the test's handler.
//! `exec` upgrades are answered here (see `serve`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use skerry_cli::output::Io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DISCOVERY: &str = r#"{"resources":[
  {"name":"pods","singularName":"pod","shortNames":["po"],"kind":"Pod","group":"","version":"v1","namespaced":true,"categories":["all"]},
  {"name":"services","singularName":"service","shortNames":["svc"],"kind":"Service","group":"","version":"v1","namespaced":true,"categories":["all"]},
  {"name":"namespaces","singularName":"namespace","shortNames":["ns"],"kind":"Namespace","group":"","version":"v1","namespaced":false},
  {"name":"nodes","singularName":"node","shortNames":["no"],"kind":"Node","group":"","version":"v1","namespaced":false},
  {"name":"deployments","singularName":"deployment","shortNames":["deploy"],"kind":"Deployment","group":"apps","version":"v1","namespaced":true,"categories":["all"]},
  {"name":"replicasets","singularName":"replicaset","shortNames":["rs"],"kind":"ReplicaSet","group":"apps","version":"v1","namespaced":true},
  {"name":"replicationcontrollers","singularName":"replicationcontroller","shortNames":["rc"],"kind":"ReplicationController","group":"","version":"v1","namespaced":true}
]}"#;

/// One request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

pub type Reply = Response<Full<Bytes>>;
pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Fake {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let (io, out, err) = Io::capture();
        let mut argv = vec!["skerry", "--socket", self.socket.to_str().unwrap()];
        argv.extend_from_slice(args);
        let code = skerry_cli::run(argv, io).await;
        (code, out.text(), err.text())
    }
}

pub fn json_reply(code: u16, v: Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    json_reply(
        code,
        json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":message,"reason":reason,"code":code,"details":{}}),
    )
}

/// Starts a fake daemon; discovery is always answered, everything else by `handler`.
pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("skerry.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let handler = handler.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let seen = seen.clone();
                    async move { Ok::<_, hyper::Error>(serve(req, handler, seen).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Fake { _dir: dir, socket, seen }
}

async fn serve(mut req: Request<hyper::body::Incoming>, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) -> Reply {
    let upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let s = Seen { method: parts.method.to_string(), uri: parts.uri.to_string(), headers: parts.headers, body };
    assert_eq!(s.headers.get("host").unwrap(), "localhost");
    if s.uri == "/skerry/v1/resources" {
        return json_reply(200, serde_json::from_str(DISCOVERY).unwrap());
    }
    seen.lock().unwrap().push(s.clone());
    if s.uri.contains("/exec?") && s.uri.contains("stdin=true") {
        tokio::spawn(interactive_exec(upgrade, seen.clone()));
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "skerry-exec/1")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if s.uri.contains("/exec?") {
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            // Expect the stdin EOF frame first (no -i), then answer.
            let mut first = [0u8; 5];
            io.read_exact(&mut first).await.unwrap();
            assert_eq!(first, [5, 0, 0, 0, 0]);
            let mut out = skerry_cli::cmd::exec::frame::encode(1, b"hello\n");
            out.extend(skerry_cli::cmd::exec::frame::encode(2, b"oops\n"));
            out.extend(skerry_cli::cmd::exec::frame::encode(4, br#"{"exitCode":3}"#));
            io.write_all(&out).await.unwrap();
            io.flush().await.unwrap();
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "Upgrade")
            .header("upgrade", "skerry-exec/1")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    handler(&s)
}

/// A tty exec: records each client frame as a request named `frame:<channel>`, echoes
/// stdin back as `ECHO:<data>` on stdout, and exits 0 once it sees `q` or stdin's end.
async fn interactive_exec(upgrade: hyper::upgrade::OnUpgrade, seen: Arc<Mutex<Vec<Seen>>>) {
    use skerry_cli::cmd::exec::frame;
    let mut io = TokioIo::new(upgrade.await.unwrap());
    let mut dec = frame::Decoder::default();
    let mut buf = [0u8; 1024];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        dec.push(&buf[..n]);
        while let Some((ch, payload)) = dec.next_frame().unwrap() {
            seen.lock().unwrap().push(Seen {
                method: format!("frame:{ch}"),
                uri: String::new(),
                headers: Default::default(),
                body: payload.clone(),
            });
            if ch == frame::STDIN_EOF {
                io.write_all(&frame::encode(frame::EXIT, br#"{"exitCode":0}"#)).await.unwrap();
                io.flush().await.unwrap();
                return;
            }
            if ch == frame::STDIN {
                let mut echo = b"ECHO:".to_vec();
                echo.extend_from_slice(&payload);
                io.write_all(&frame::encode(frame::STDOUT, &echo)).await.unwrap();
                if payload.contains(&b'q') {
                    io.write_all(&frame::encode(frame::EXIT, br#"{"exitCode":0}"#)).await.unwrap();
                    io.flush().await.unwrap();
                    return;
                }
            }
        }
    }
}
