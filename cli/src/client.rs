//! HTTP/1.1 client for skerryd over its Unix socket (and plain TCP for manifest URLs).
//!
//! One connection per request keeps this simple and is cheap on a local socket.
//! Connections are driven `with_upgrades` so `exec` can take over the stream
//! after a `101 Switching Protocols`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// The request body type: a buffer or a stream of bytes.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from a reader (for `image import`).
pub fn stream<R: AsyncRead + Send + 'static>(reader: R) -> Body {
    let s = tokio_util::io::ReaderStream::new(reader).map_ok(Frame::data);
    BodyExt::boxed_unsync(StreamBody::new(s))
}

/// The media type asking the server to render a `meta.k8s.io/v1` Table.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Talks to one daemon socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request on a fresh connection; the host header is set here.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect { socket: self.socket.display().to_string(), source })?;
        req.headers_mut().insert(hyper::header::HOST, hyper::header::HeaderValue::from_static("localhost"));
        send_over(stream, req).await
    }
}

/// Sends `req` over an already connected stream.
pub async fn send_over<S>(io: S, req: Request<Body>) -> Result<Response<Incoming>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender.send_request(req).await?)
}

/// Reads a whole response body.
pub async fn read_body(resp: Response<Incoming>) -> Result<Bytes> {
    Ok(resp.into_body().collect().await?.to_bytes())
}

/// Extracts the texts of `Warning: 299 - "text"` headers.
pub fn warnings(resp: &Response<Incoming>) -> Vec<String> {
    resp.headers().get_all(hyper::header::WARNING).iter().filter_map(|v| v.to_str().ok()).map(warning_text).collect()
}

fn warning_text(header: &str) -> String {
    // `299 - "text"`: take what is between the first and the last quote, unescaped.
    match (header.find('"'), header.rfind('"')) {
        (Some(a), Some(b)) if b > a => header[a + 1..b].replace("\\\"", "\"").replace("\\\\", "\\"),
        _ => header.to_string(),
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a query string (with its leading `?`, or empty) from pairs.
pub fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("?{}", parts.join("&"))
}

/// Reads a newline-delimited JSON stream (watch events, pull progress) one value at a time.
pub struct JsonLines {
    body: Incoming,
    buf: bytes::BytesMut,
}

impl JsonLines {
    pub fn new(resp: Response<Incoming>) -> JsonLines {
        JsonLines { body: resp.into_body(), buf: bytes::BytesMut::new() }
    }

    /// The next value, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<serde_json::Value>> {
        loop {
            while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                let line = std::str::from_utf8(&line).unwrap_or("").trim();
                if !line.is_empty() {
                    return Ok(Some(serde_json::from_str(line)?));
                }
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_header_text() {
        assert_eq!(warning_text(r#"299 - "unknown field \"spec.foo\"""#), r#"unknown field "spec.foo""#);
        assert_eq!(warning_text("plain"), "plain");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            query(&[("labelSelector", "app=web,tier!=db".into()), ("watch", "true".into())]),
            "?labelSelector=app%3Dweb%2Ctier%21%3Ddb&watch=true"
        );
        assert_eq!(query(&[]), "");
    }
}
