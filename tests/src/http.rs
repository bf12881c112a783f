//! A tiny blocking HTTP/1.1 client over skerryd's Unix socket, for raw API tests.
//!
//! Hand-written on purpose: tests need to see exact status codes, headers and
//! streamed watch lines without an async runtime; one request per connection
//! (`Connection: close`), chunked bodies decoded, nothing else.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn send_head(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n");
    if let Some(b) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    Ok(BufReader::new(stream))
}

fn read_head(r: &mut BufReader<UnixStream>) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok((status, headers))
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"))
}

/// Reads one chunk of a chunked body; `None` at the end.
fn read_chunk(r: &mut BufReader<UnixStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut size = String::new();
    if r.read_line(&mut size)? == 0 {
        return Ok(None);
    }
    let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| std::io::Error::other(format!("bad chunk size {size:?}")))?;
    if n == 0 {
        return Ok(None);
    }
    let mut buf = vec![0; n + 2];
    r.read_exact(&mut buf)?;
    buf.truncate(n);
    Ok(Some(buf))
}

/// Sends one request and reads the whole response (30 s timeout).
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> std::io::Result<Response> {
    let mut r = send_head(socket, method, path, body, Duration::from_secs(30))?;
    let (status, headers) = read_head(&mut r)?;
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(c) = read_chunk(&mut r)? {
            body.extend(c);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// A streamed response (watch): a reader thread turns the body into lines.
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    lines: std::sync::mpsc::Receiver<String>,
    socket: UnixStream,
    ended: bool,
}

/// Starts a streaming GET (e.g. `?watch=true`); the head must come within 30 s.
pub fn stream(socket: &Path, path: &str) -> std::io::Result<Stream> {
    let mut reader = send_head(socket, "GET", path, None, Duration::from_secs(30))?;
    let (status, headers) = read_head(&mut reader)?;
    reader.get_ref().set_read_timeout(None)?;
    let chunked = is_chunked(&headers);
    let handle = reader.get_ref().try_clone()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let data = if chunked {
                match read_chunk(&mut reader) {
                    Ok(Some(c)) => c,
                    _ => break,
                }
            } else {
                let mut buf = [0u8; 4096];
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf[..n].to_vec(),
                }
            };
            pending.extend(data);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line).trim().to_string();
                if !s.is_empty() && tx.send(s).is_err() {
                    return;
                }
            }
        }
        let s = String::from_utf8_lossy(&pending).trim().to_string();
        if !s.is_empty() {
            let _ = tx.send(s);
        }
    });
    Ok(Stream { status, headers, lines: rx, socket: handle, ended: false })
}

impl Stream {
    /// The next line, waiting until `deadline`; `None` when the stream ended or
    /// the deadline passed (see [`Stream::ended`]).
    pub fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }

    /// Whether the server closed the stream (known after `next_line` returned `None`).
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
