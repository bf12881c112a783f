//! A tiny UDP echo server and client for Service tests (busybox here has no UDP `nc`).
//!
//! `skerry-udp-echo serve PORT` answers every datagram with `<hostname>:<payload>`;
//! `skerry-udp-echo send ADDR PORT TEXT` sends TEXT once and prints the answer (exit 1 after 3 s
//! without one). Copied into a test image with the shared libraries it links.

use std::net::UdpSocket;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve", port] => {
            let sock = UdpSocket::bind(("0.0.0.0", port.parse::<u16>().expect("port"))).expect("bind");
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
                let reply = format!("{host}:{}", String::from_utf8_lossy(&buf[..n]));
                let _ = sock.send_to(reply.as_bytes(), peer);
            }
        }
        ["send", addr, port, text] => {
            let sock = UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let port: u16 = port.parse().expect("port");
            sock.send_to(text.as_bytes(), (*addr, port)).unwrap_or_else(|e| {
                eprintln!("send: {e}");
                std::process::exit(1)
            });
            let mut buf = [0u8; 2048];
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => println!("{}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => {
                    eprintln!("no answer: {e}");
                    std::process::exit(1)
                }
            }
        }
        _ => {
            eprintln!("usage: skerry-udp-echo serve PORT | send ADDR PORT TEXT");
            std::process::exit(2)
        }
    }
}
