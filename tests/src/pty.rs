//! Runs a command on a fresh pseudo-terminal (its controlling tty) so `exec -it` sees a real TTY.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process whose stdin, stdout and stderr are the slave side of a pty.
pub struct Pty {
    master: File,
    child: Child,
    buf: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Pty {
    /// Spawns `cmd` on a new pty of `rows`×`cols`, as a session leader with the pty as its controlling terminal.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Pty {
        let (mut master, mut slave): (RawFd, RawFd) = (-1, -1);
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
        let dup = |fd: RawFd| unsafe { Stdio::from(File::from_raw_fd(libc::dup(fd))) };
        cmd.stdin(dup(slave)).stdout(dup(slave)).stderr(dup(slave));
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {cmd:?} on a pty: {e}"));
        drop(cmd); // closes the Stdio dups held by the Command
        unsafe {
            libc::close(slave);
        }
        let master = unsafe { File::from_raw_fd(master) };
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("duplicating the pty master");
        let sink = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // EIO once every slave fd is closed (the child exited).
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Pty { master, child, buf, reader }
    }

    /// The master side (e.g. to change the window size with `TIOCSWINSZ`).
    pub fn master(&self) -> &File {
        &self.master
    }

    /// Everything the terminal showed so far (lossy UTF-8).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Types `bytes` into the terminal.
    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("writing to the pty");
    }

    /// Waits until the output contains `text`; panics with the output at the deadline.
    pub fn expect(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {text:?} within {timeout:?}; it shows:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit; returns its exit code. Panics (after killing it) at the deadline.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("waiting for the pty child") {
                // The reader ends (EIO) once the last slave fd closes: let it drain.
                let drained = Instant::now() + Duration::from_secs(5);
                while !self.reader.is_finished() && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return s.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                unsafe {
                    libc::kill(self.child.id() as i32, libc::SIGKILL);
                }
                let _ = self.child.wait();
                panic!(
                    "the command on the pty did not exit within {timeout:?}; the terminal shows:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}
