//! `skerryd`: parses flags, sets up logging and signals, runs the daemon library.

use std::io::IsTerminal;

use clap::Parser;
use skerryd::config::{Config, Flags};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Skerry's errors say the whole story at the top level; no backtrace for a user.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // glibc gives every thread that allocates its own arena, and keeps the memory; on a small
    // edge host two arenas are plenty (measured: 100 pods, 75 MiB → 42 MiB RSS).
    // SAFETY: called before any other thread exists.
    // A fixed mmap threshold keeps large buffers (JSON of lists, pulls) out of the heap, and a
    // low trim threshold gives freed memory back.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
    let flags = Flags::parse();
    let cleanup = flags.cleanup;
    let cluster_reset = flags.cluster_reset;
    let config = Config::load(flags)?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(log_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    if cluster_reset {
        let kept = runtime.block_on(skerryd::daemon::cluster_reset(&config))?;
        tracing::warn!(
            kept = %kept.display(),
            "this server is now a cluster of one with the state it had; start it again without --cluster-reset, then join the other servers anew"
        );
        return Ok(());
    }
    if cleanup {
        runtime.block_on(skerryd::daemon::cleanup())?;
        tracing::info!("removed the nftables table inet skerry");
        return Ok(());
    }
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("shutting down");
            signals.cancel();
        });
        skerryd::daemon::run(config, shutdown).await
    })?;
    Ok(())
}

/// Colour only for a person at a terminal: never in a file or the journal, and never when
/// `NO_COLOR` is set to anything (<https://no-color.org>).
fn log_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        use super::log_colour;
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("".into())));
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None));
        assert!(!log_colour(false, Some("".into())));
    }
}
