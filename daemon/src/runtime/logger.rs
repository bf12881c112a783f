//! Container logs in the CRI format: the `skerry-logger` side that writes them
//! and the readers (`read_log`, `follow_log`) that turn them back into text.
//!
//! The shim starts the logger through the `binary://` stdio URI (containerd
//! 1.6 `pkg/process/io.go`): the container's stdout is fd 3, stderr fd 4, and
//! fd 5 is a pipe the shim blocks on until we close it. Arguments are the
//! URI's query as `key value` pairs in random order; the env carries
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE`. When the container exits the shim
//! closes its ends and sends SIGTERM; we ignore SIGTERM and drain both pipes to
//! EOF so the last lines are not lost.
//!
//! Each line is written as `<RFC3339 nanos> <stdout|stderr> <F|P> <text>` and
//! flushed at once. `P` marks a piece of a line: longer than 16 KiB, a last
//! line without a newline, or an unterminated line that saw no more data for
//! [`PARTIAL_FLUSH`] (readers join pieces, so this only affects timing).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest line piece written as one record.
pub const MAX_LINE: usize = 16 * 1024;
/// How often `follow_log` looks for new data.
pub const FOLLOW_POLL: Duration = Duration::from_millis(150);
/// How long an unterminated line may wait for the rest before it is written
/// as a partial record.
pub const PARTIAL_FLUSH: Duration = Duration::from_millis(250);

/// Errors of the logger binary.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    #[error("missing `path` argument; the shim passes it from the binary:// URI query (?path=FILE)")]
    NoPath,
    #[error("opening log file {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Finds the value of `key` in the shim's `key value key value …` arguments.
pub fn arg_value(args: &[String], key: &str) -> Option<String> {
    args.chunks(2).find(|pair| pair[0] == key).and_then(|pair| pair.get(1).cloned())
}

/// Formats one CRI record (with the trailing newline).
pub fn format_record(time: jiff::Timestamp, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = format!("{time:.9} {} {} ", stream.as_str(), if partial { "P" } else { "F" }).into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// Splits a stream into records and hands each to `emit(partial, text)`.
/// Before blocking for more input while holding an unterminated line, it asks
/// `quiet()`; if nothing more is coming soon, the piece is written as a
/// partial record so output like `printf hello` shows up without waiting for
/// the pipe to close (the shim only closes it when the task is deleted).
pub fn split_records(
    mut input: impl Read,
    mut quiet: impl FnMut() -> bool,
    mut emit: impl FnMut(bool, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(MAX_LINE);
    loop {
        if !line.is_empty() && quiet() {
            emit(true, &line)?;
            line.clear();
        }
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if !line.is_empty() {
                emit(true, &line)?;
            }
            return Ok(());
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(MAX_LINE - line.len())];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&window[..i]);
                    emit(false, &line)?;
                    line.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    line.extend_from_slice(window);
                    rest = &rest[window.len()..];
                    if line.len() >= MAX_LINE {
                        emit(true, &line)?;
                        line.clear();
                    }
                }
            }
        }
    }
}

/// True when `fd` has no data within [`PARTIAL_FLUSH`].
fn no_data_soon(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, PARTIAL_FLUSH.as_millis() as i32) };
    n == 0
}

/// The logger's main: copies fds 3 and 4 into the CRI log named by `path`.
pub fn run_logger(args: &[String]) -> Result<(), LoggerError> {
    let path = arg_value(args, "path").ok_or(LoggerError::NoPath)?;
    // SAFETY: setting dispositions to ignore is async-signal-safe and done
    // before any thread starts.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, nix::sys::signal::SigHandler::SigIgn);
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn);
    }
    if let Some(dir) = Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&path)
        .map_err(|source| LoggerError::Open { path: PathBuf::from(&path), source })?;
    let file = Arc::new(Mutex::new(file));
    // SAFETY: the shim hands us fds 3, 4 and 5 and nothing else owns them.
    let (stdout, stderr, ready) =
        unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4), OwnedFd::from_raw_fd(5)) };
    drop(ready); // tells the shim we are ready
    let threads: Vec<_> = [(stdout, Stream::Stdout), (stderr, Stream::Stderr)]
        .into_iter()
        .map(|(fd, stream)| {
            let file = Arc::clone(&file);
            std::thread::spawn(move || copy_stream(File::from(fd), stream, &file))
        })
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("skerry-logger: {path}: {e}");
        }
    }
    Ok(())
}

fn copy_stream(input: File, stream: Stream, out: &Mutex<File>) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let probe = input.try_clone()?;
    split_records(
        input,
        || no_data_soon(probe.as_fd()),
        |partial, text| {
            let record = format_record(jiff::Timestamp::now(), stream, partial, text);
            let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&record)?;
            f.flush()
        },
    )
}

/// One parsed CRI record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
}

/// Parses `TIME STREAM TAG TEXT`; None for a malformed line.
pub fn parse_record(line: &str) -> Option<LogRecord<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    Some(LogRecord { time, stream, partial: tag.starts_with('P'), text })
}

/// Turns records back into text lines: partial pieces are joined; with
/// `timestamps` each line starts with the time of its first piece.
#[derive(Default)]
struct Assembler {
    pending: String,
    pending_time: Option<String>,
}

impl Assembler {
    fn push(&mut self, line: &str, timestamps: bool) -> Option<String> {
        let rec = parse_record(line)?;
        if self.pending_time.is_none() {
            self.pending_time = Some(rec.time.to_string());
        }
        self.pending.push_str(rec.text);
        if rec.partial {
            return None;
        }
        let time = self.pending_time.take().unwrap_or_default();
        let text = std::mem::take(&mut self.pending);
        Some(if timestamps { format!("{time} {text}\n") } else { format!("{text}\n") })
    }

    /// A trailing partial line (a last line without newline).
    fn finish(&mut self, timestamps: bool) -> Option<String> {
        let time = self.pending_time.take()?;
        let text = std::mem::take(&mut self.pending);
        Some(if timestamps { format!("{time} {text}") } else { text })
    }
}

/// Reads a CRI log file as text; `tail` keeps the last N lines. A missing
/// file reads as empty. A trailing partial line is shown as it is.
pub fn read_log(path: &Path, tail: Option<usize>, timestamps: bool) -> std::io::Result<String> {
    let (lines, _) = read_lines_from(path, 0, timestamps, true)?;
    let skip = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    Ok(lines[skip..].concat())
}

/// Text lines of the records from `offset` on, and the offset just after the
/// last complete (`F`) record. Pieces after it are left for the next read,
/// unless `flush_partial` asks to show them now.
fn read_lines_from(
    path: &Path,
    offset: u64,
    timestamps: bool,
    flush_partial: bool,
) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let mut asm = Assembler::default();
    let mut out = Vec::new();
    let (mut pos, mut committed) = (0usize, 0usize);
    for raw in data.split_inclusive(|b| *b == b'\n') {
        if raw.last() != Some(&b'\n') {
            break; // a record still being written
        }
        pos += raw.len();
        let line = String::from_utf8_lossy(&raw[..raw.len() - 1]);
        if let Some(text) = asm.push(&line, timestamps) {
            out.push(text);
            committed = pos;
        }
    }
    if flush_partial {
        out.extend(asm.finish(timestamps));
    }
    Ok((out, offset + committed as u64))
}

/// Sends the log's text (the last `tail` lines first), then everything
/// appended later, polling every [`FOLLOW_POLL`] until `stop` is cancelled or
/// the receiver goes away. A file that shrinks (rotated or truncated) is read
/// again from the start.
pub async fn follow_log(
    path: PathBuf,
    tail: Option<usize>,
    timestamps: bool,
    out: mpsc::Sender<String>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let p = path.clone();
    let (lines, mut offset) = tokio::task::spawn_blocking(move || read_lines_from(&p, 0, timestamps, false))
        .await
        .map_err(std::io::Error::other)??;
    let skip = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    for line in &lines[skip..] {
        if out.send(line.clone()).await.is_err() {
            return Ok(());
        }
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = out.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
        let len = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
        }
        if len == offset {
            continue;
        }
        let p = path.clone();
        let start = offset;
        let (lines, next) = tokio::task::spawn_blocking(move || read_lines_from(&p, start, timestamps, false))
            .await
            .map_err(std::io::Error::other)??;
        offset = next.max(offset);
        for line in lines {
            if out.send(line).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        split_records(
            input,
            || false,
            |p, t| {
                out.push((p, t.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn splits_lines_and_marks_partials() {
        assert_eq!(records(b"a\nbc\n"), vec![(false, b"a".to_vec()), (false, b"bc".to_vec())]);
        assert_eq!(records(b"a\nlast"), vec![(false, b"a".to_vec()), (true, b"last".to_vec())]);
        let long = vec![b'x'; MAX_LINE + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let r = records(&input);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (true, long[..MAX_LINE].to_vec()));
        assert_eq!(r[1], (false, b"xxxxx".to_vec()));
        assert_eq!(records(b"\n"), vec![(false, Vec::new())]);
    }

    #[test]
    fn record_format_matches_cri() {
        let t: jiff::Timestamp = "2016-10-06T00:17:09.669794202Z".parse().unwrap();
        assert_eq!(format_record(t, Stream::Stdout, false, b"hi"), b"2016-10-06T00:17:09.669794202Z stdout F hi\n");
        let t: jiff::Timestamp = "2016-10-06T00:17:09Z".parse().unwrap();
        assert_eq!(format_record(t, Stream::Stderr, true, b"x"), b"2016-10-06T00:17:09.000000000Z stderr P x\n");
    }

    #[test]
    fn args_come_in_pairs_in_any_order() {
        let args: Vec<String> = ["ns", "k8s", "path", "/var/log/x.log"].iter().map(|s| s.to_string()).collect();
        assert_eq!(arg_value(&args, "path").as_deref(), Some("/var/log/x.log"));
        assert_eq!(arg_value(&args, "nope"), None);
    }

    #[test]
    fn reads_back_text_with_tail_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:00.000000001Z stdout F one\n\
             2024-01-01T00:00:00.000000002Z stderr P tw\n\
             2024-01-01T00:00:00.000000003Z stderr F o\n\
             2024-01-01T00:00:00.000000004Z stdout F three\n",
        )
        .unwrap();
        assert_eq!(read_log(&path, None, false).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(read_log(&path, Some(2), false).unwrap(), "two\nthree\n");
        assert_eq!(read_log(&path, Some(1), true).unwrap(), "2024-01-01T00:00:00.000000004Z three\n");
        assert_eq!(read_log(&dir.path().join("missing"), None, false).unwrap(), "");
    }

    #[tokio::test]
    async fn follow_sees_appended_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, "2024-01-01T00:00:00Z stdout F a\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow_log(path.clone(), None, false, tx, stop.clone()));
        assert_eq!(rx.recv().await.unwrap(), "a\n");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2024-01-01T00:00:01Z stdout P b\n").unwrap();
        f.write_all(b"2024-01-01T00:00:02Z stdout F c\n").unwrap();
        assert_eq!(rx.recv().await.unwrap(), "bc\n");
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
