//! The Skerry command-line client: a thin, kubectl-like front end to skerryd's HTTP API.
//!
//! The CLI knows no resource types: it turns manifests into JSON, resolves the
//! user's words through the daemon's discovery document, sends requests and
//! prints what comes back (tables are rendered by the daemon).
//!
//! # Layout
//! - [`cmd`]: the clap definitions, the per-invocation [`cmd::Ctx`], and one
//!   module per subcommand (`apply`, `get`, `exec`, ...).
//! - [`client`]: HTTP/1.1 over the daemon's Unix socket (and plain TCP for
//!   `-f http://...`), one connection per request.
//! - [`manifest`]: loading manifests from files, folders, stdin and URLs.
//! - [`resources`]: the discovery document and resolving words to API paths.
//! - [`output`]: table alignment, YAML/JSON printing, the output streams.
//! - [`error`]: the error type, displayed the way kubectl words each error.

pub mod client;
pub mod cmd;
pub mod error;
pub mod manifest;
pub mod output;
pub mod resources;

use std::ffi::OsString;

/// Runs the CLI with the process's arguments and standard streams; returns the exit code.
pub fn main_entry() -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(run(std::env::args_os(), output::Io::std()));
    // Blocking stdin readers (exec -i) must not keep the process alive.
    rt.shutdown_background();
    code
}

/// Parses `args` and runs the command, writing to `io`; returns the exit code.
pub async fn run<I, T>(args: I, io: output::Io) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    cmd::run(args, io).await
}
