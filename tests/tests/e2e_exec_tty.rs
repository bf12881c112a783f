//! `skerry exec` with a real terminal (`-it`), window sizes, and piped stdin (`-i`).

use std::time::Duration;

use skerry_tests::pty::Pty;
use skerry_tests::skerryd::{run_with_timeout, TestNode};
use skerry_tests::standins::{self, page};

const WEBAPP_IMAGE: &str = "richardchesterwood/k8s-fleetman-webapp-angular:release0";
const T: Duration = Duration::from_secs(30);

/// The seed's webapp pod only (its stand-in image and the first document of pods.yml).
fn webapp(node: &TestNode) {
    let file = standins::seed_pods();
    standins::import_standins(node, &file);
    let text = std::fs::read_to_string(&file).unwrap();
    node.apply(text.split("\n---").next().unwrap());
    node.wait_running("webapp");
}

#[test]
fn exec_it_gives_a_real_terminal_with_the_callers_size() {
    let node = TestNode::start();
    webapp(&node);

    let mut sh = Pty::spawn(node.skerryd.command(&["exec", "-it", "webapp", "--", "sh"]), 40, 100);
    sh.expect("# ", T); // root's prompt
    sh.send(b"wget -qO- http://localhost:80; tty; stty size\r");
    sh.expect(page(WEBAPP_IMAGE).trim(), T);
    sh.expect("/dev/pts/", T);
    sh.expect("40 100", T);

    // Resizing the caller's terminal reaches the container's (SIGWINCH → resize).
    let ws = libc::winsize { ws_row: 50, ws_col: 120, ws_xpixel: 0, ws_ypixel: 0 };
    let master = std::os::fd::AsRawFd::as_raw_fd(sh.master());
    assert_eq!(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) }, 0);
    // The resize travels asynchronously: ask until the new size shows.
    let deadline = std::time::Instant::now() + T;
    loop {
        sh.send(b"stty size\r");
        std::thread::sleep(Duration::from_millis(300));
        if sh.output().contains("50 120") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stty size never showed 50 120 after a resize:\n{}", sh.output());
    }

    sh.send(b"exit\r");
    assert_eq!(sh.wait(T), 0, "exit 0 from the shell ends exec with 0:\n{}", sh.output());

    // The shell's exit code comes back through a terminal session too.
    let mut sh = Pty::spawn(node.skerryd.command(&["exec", "-it", "webapp", "--", "sh"]), 24, 80);
    sh.expect("# ", T);
    sh.send(b"exit 3\r");
    assert_eq!(sh.wait(T), 3, "{}", sh.output());
    assert!(sh.output().contains("command terminated with exit code 3"), "{}", sh.output());
}

#[test]
fn exec_i_forwards_stdin_until_eof() {
    let node = TestNode::start();
    webapp(&node);
    // kubectl closes the remote stdin at EOF, so `cat` ends.
    let out =
        run_with_timeout(node.skerryd.command(&["exec", "-i", "webapp", "--", "cat"]), Some(b"piped through\n"), T);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "piped through\n", "{out}");
    let out =
        run_with_timeout(node.skerryd.command(&["exec", "-i", "webapp", "--", "wc", "-l"]), Some(b"a\nb\nc\n"), T);
    assert_eq!(out.stdout.trim(), "3", "{out}");
}
