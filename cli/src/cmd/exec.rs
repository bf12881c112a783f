//! `skerry exec`: runs a command in a container over an upgraded connection carrying framed stdin/stdout/stderr.
//!
//! After `101 Switching Protocols` (`Upgrade: skerry-exec/1`) both directions carry
//! frames `[channel: u8][length: u32 BE][payload]`; see [`frame`].

use std::io::{IsTerminal, Write};

use hyper::Method;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{request, Ctx};
use crate::client::{self, encode};
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pass stdin to the container
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Stdin is a TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Container name (the server picks the pod's first one when omitted)
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// POD or pod/POD
    pub pod: String,
    /// The command and its arguments (after --)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The exec stream's framing.
pub mod frame {
    use bytes::{Buf, Bytes, BytesMut};

    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const RESIZE: u8 = 3;
    pub const EXIT: u8 = 4;
    pub const STDIN_EOF: u8 = 5;

    /// Frames larger than this are a protocol error.
    pub const MAX_PAYLOAD: usize = 16 << 20;

    pub fn encode(channel: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(5 + payload.len());
        v.push(channel);
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    pub fn resize(cols: u16, rows: u16) -> Vec<u8> {
        let mut p = [0u8; 4];
        p[..2].copy_from_slice(&cols.to_be_bytes());
        p[2..].copy_from_slice(&rows.to_be_bytes());
        encode(RESIZE, &p)
    }

    /// Reassembles frames from a byte stream cut anywhere.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: BytesMut,
    }

    impl Decoder {
        pub fn push(&mut self, data: &[u8]) {
            self.buf.extend_from_slice(data);
        }

        /// The next whole frame, `Ok(None)` when more bytes are needed.
        pub fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, String> {
            if self.buf.len() < 5 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > MAX_PAYLOAD {
                return Err(format!("exec frame of {len} bytes is larger than the {MAX_PAYLOAD} allowed"));
            }
            if self.buf.len() < 5 + len {
                return Ok(None);
            }
            let channel = self.buf[0];
            self.buf.advance(5);
            Ok(Some((channel, self.buf.split_to(len).freeze())))
        }
    }
}

/// Puts the terminal on stdin in raw mode and restores it when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable() -> nix::Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// The terminal's size as (cols, rows), from stdin's tty.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which lives on this stack.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The exec path with its query.
pub fn exec_path(ns: &str, pod: &str, container: Option<&str>, command: &[String], stdin: bool, tty: bool) -> String {
    let mut q = Vec::new();
    if let Some(c) = container {
        q.push(format!("container={}", encode(c)));
    }
    q.extend(command.iter().map(|c| format!("command={}", encode(c))));
    if stdin {
        q.push("stdin=true".into());
    }
    if tty {
        q.push("tty=true".into());
    }
    format!("/api/v1/namespaces/{ns}/pods/{pod}/exec?{}", q.join("&"))
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let pod = super::logs::pod_name(&args.pod)?.to_string();
    if args.command.is_empty() {
        return Err(Error::msg("you must specify at least one command for the container"));
    }
    let mut tty = args.tty && args.stdin;
    if tty && !std::io::stdin().is_terminal() {
        writeln!(ctx.err, "Unable to use a TTY - input is not a terminal or the right kind of file")?;
        tty = false;
    }
    let container = match args.container.clone() {
        Some(c) => Some(c),
        None => ctx.default_container(&pod).await?,
    };
    let path = exec_path(&ctx.namespace, &pod, container.as_deref(), &args.command, args.stdin, tty);
    let mut req = request(Method::POST, &path, client::empty());
    let h = req.headers_mut();
    h.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
    h.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("skerry-exec/1"));
    let resp = ctx.call(req).await?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::msg(format!("skerryd did not upgrade the exec connection (status {})", resp.status())));
    }
    let upgraded = hyper::upgrade::on(resp).await?;
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));

    let raw = if tty {
        Some(RawMode::enable().map_err(|e| Error::msg(format!("cannot put the terminal in raw mode: {e}")))?)
    } else {
        None
    };

    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    if tty {
        if let Some((cols, rows)) = window_size() {
            let _ = tx.send(frame::resize(cols, rows)).await;
        }
        let tx = tx.clone();
        if let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((cols, rows)) = window_size() {
                        if tx.send(frame::resize(cols, rows)).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    }
    if args.stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(frame::encode(frame::STDIN, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(frame::encode(frame::STDIN_EOF, &[])).await;
        });
    } else {
        let _ = tx.send(frame::encode(frame::STDIN_EOF, &[])).await;
    }
    drop(tx);

    let result = pump(ctx, &mut rd).await;
    drop(raw);
    writer.abort();
    let code = result?;
    if code != 0 {
        writeln!(ctx.err, "command terminated with exit code {code}")?;
        return Err(Error::Exit(code));
    }
    Ok(())
}

/// Copies stdout and stderr frames out until the exit frame; returns the exit code.
async fn pump<R: tokio::io::AsyncRead + Unpin>(ctx: &mut Ctx, rd: &mut R) -> Result<i32> {
    let mut dec = frame::Decoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::msg("the exec stream ended before the command's exit status arrived"));
        }
        dec.push(&buf[..n]);
        while let Some((channel, payload)) = dec.next_frame().map_err(Error::Msg)? {
            match channel {
                frame::STDOUT => {
                    ctx.out.write_all(&payload)?;
                    ctx.out.flush()?;
                }
                frame::STDERR => {
                    ctx.err.write_all(&payload)?;
                    ctx.err.flush()?;
                }
                frame::EXIT => {
                    let v: serde_json::Value = serde_json::from_slice(&payload)?;
                    return Ok(v["exitCode"].as_i64().unwrap_or(1) as i32);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::frame::{encode, resize, Decoder, EXIT, STDERR, STDIN, STDIN_EOF, STDOUT};
    use super::{exec_path, Args};

    #[test]
    fn frames_round_trip_across_arbitrary_cuts() {
        let mut wire = encode(STDOUT, b"hello");
        wire.extend(encode(STDERR, b""));
        wire.extend(encode(EXIT, br#"{"exitCode":3}"#));
        for cut in 0..wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            d.push(&wire[..cut]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            d.push(&wire[cut..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0], (STDOUT, bytes::Bytes::from_static(b"hello")));
            assert_eq!(got[1], (STDERR, bytes::Bytes::new()));
            assert_eq!(got[2].0, EXIT);
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(encode(STDIN, b"ab"), vec![0, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(encode(STDIN_EOF, b""), vec![5, 0, 0, 0, 0]);
        assert_eq!(resize(80, 24), vec![3, 0, 0, 0, 4, 0, 80, 0, 24]);
        let mut d = Decoder::default();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn path_and_args() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        let a = T::parse_from(["t", "-it", "-c", "app", "web", "--", "sh", "-c", "echo hi"]).a;
        assert!(a.stdin && a.tty);
        assert_eq!(a.command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            exec_path("default", &a.pod, a.container.as_deref(), &a.command, true, true),
            "/api/v1/namespaces/default/pods/web/exec?container=app&command=sh&command=-c&command=echo%20hi&stdin=true&tty=true"
        );
        let a = T::parse_from(["t", "web", "ls", "-l"]).a;
        assert_eq!(a.command, ["ls", "-l"]);
    }
}
