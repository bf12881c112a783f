//! HTTP/1.1 over skerryd's Unix socket: a minimal GET (one connection per request, like a CLI),
//! a watch, and [`Conn`], one kept-alive connection for many requests (the cluster benchmark's
//! writes, so a figure is the request and not a connection set-up).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Returns (status code, body).
pub async fn get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s =
        tokio::net::UnixStream::connect(socket).await.with_context(|| format!("connecting to {}", socket.display()))?;
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("malformed HTTP response from skerryd")
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let body = &buf[split + 4..];
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((code, if chunked { dechunk(body)? } else { body.to_vec() }))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { bail!("truncated chunked body") };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).context("bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Starts a watch (`?watch=true`) and returns once its response headers arrived, i.e. once
/// skerryd is subscribed; `on_event` then gets every event object with its arrival time.
pub async fn watch(
    socket: &Path,
    path: &str,
    mut on_event: impl FnMut(std::time::Instant, serde_json::Value) + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut s =
        tokio::net::UnixStream::connect(socket).await.with_context(|| format!("connecting to {}", socket.display()))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let split = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("skerryd closed the watch");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let mut pending: Vec<u8> = buf[split + 4..].to_vec();
    Ok(tokio::spawn(async move {
        // Chunk framing lines ("1a3\r") are skipped: every event is one JSON line of its own.
        loop {
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                if line.first() == Some(&b'{') {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                        on_event(std::time::Instant::now(), v);
                    }
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
    }))
}

/// One HTTP/1.1 connection to skerryd's socket, kept alive across requests (hyper's client
/// connection; requests go one after another). A connection the server closes is an error, not
/// a silent reconnect: the benchmark must know every write went over the same connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    socket: std::path::PathBuf,
}

impl Conn {
    pub async fn connect(socket: &Path) -> Result<Conn> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake on {}", socket.display()))?;
        // Drives the connection; ends when the sender is dropped or the server closes it.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, socket: socket.to_path_buf() })
    }

    /// Sends one request (a JSON body if given) and returns (status code, body).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>)> {
        use http_body_util::BodyExt;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(bytes)))?;
        self.sender.ready().await.with_context(|| format!("the connection to {} closed", self.socket.display()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path} on {}", self.socket.display()))?;
        let code = resp.status().as_u16();
        let body =
            resp.into_body().collect().await.with_context(|| format!("reading the answer to {method} {path}"))?;
        Ok((code, body.to_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks() {
        assert_eq!(super::dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
    }
}
