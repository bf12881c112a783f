//! `skerry logs`: stdout and stderr, --tail, --timestamps, --previous after a crash, -c, and -f until the container exits.

use std::time::Duration;

use skerry_tests::skerryd::{busybox_pod, column, run_with_timeout, TestNode, BUSYBOX};

#[test]
fn logs_of_a_crashing_container_tail_timestamps_previous() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&busybox_pod(
        "crash",
        "Always",
        // stdout and stderr are separate pipes: the pause keeps their order unambiguous.
        &["sh", "-c", "for i in 1 2 3; do echo line$i; done; sleep 0.3; echo err >&2; sleep 1; exit 1"],
    ));

    let out = node
        .wait_output(&["logs", "crash"], "shows the first run's output", |o| o.code == 0 && o.stdout.contains("err"));
    assert_eq!(out.stdout, "line1\nline2\nline3\nerr\n", "stdout and stderr in order:\n{out}");
    // The last line is `err`; poll because a restart can briefly show an empty log.
    node.wait_output(&["logs", "crash", "--tail", "1"], "prints only the last line", |o| o.stdout == "err\n");
    node.wait_output(&["logs", "crash", "--tail=2"], "prints the last two lines", |o| o.stdout == "line3\nerr\n");

    let out =
        node.wait_output(&["logs", "crash", "--timestamps"], "shows timestamped lines", |o| o.stdout.contains("line1"));
    for line in out.stdout.lines() {
        let (ts, text) = line.split_once(' ').unwrap_or_else(|| panic!("no timestamp in {line:?}"));
        ts.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("{ts:?} is not RFC 3339 ({e}) in:\n{}", out.stdout));
        assert!(["line1", "line2", "line3", "err"].contains(&text), "{line:?}");
    }

    // The restart loop: CrashLoopBackOff shows in get pods, the restart is counted.
    node.wait_output(&["get", "pods"], "shows STATUS CrashLoopBackOff", |o| {
        column(&o.stdout, "crash", "STATUS").as_deref() == Some("CrashLoopBackOff")
    });
    let pod = node.wait_pod("crash", "has restarted", |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_u64() >= Some(1)
    });
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 1, "{pod:#}");
    assert_eq!(last["reason"], "Error", "{pod:#}");
    let table = node.skerry_ok(&["get", "pods"]);
    let restarts = column(&table, "crash", "RESTARTS").unwrap();
    assert!(restarts.starts_with(|c: char| c.is_ascii_digit() && c != '0'), "RESTARTS counts the restart:\n{table}");

    let out = node.skerry(&["logs", "crash", "--previous"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout, "line1\nline2\nline3\nerr\n", "--previous shows the previous run:\n{out}");
    let out = node.skerry(&["logs", "-p", "crash", "--tail", "1"]);
    assert_eq!(out.stdout, "err\n", "{out}");
}

#[test]
fn logs_of_a_two_container_pod_and_follow() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: two
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-a; exec sleep 3600"]
  - name: b
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "echo from-b; exec sleep 3600"]
"#
    ));
    node.wait_running("two");
    node.wait_output(&["logs", "two", "-c", "b"], "shows container b's output", |o| o.stdout == "from-b\n");
    node.wait_output(&["logs", "two", "--container=a"], "shows container a's output", |o| o.stdout == "from-a\n");
    let out = node.skerry(&["logs", "two", "-c", "nope"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("container nope is not valid for pod two"), "{out}");
    let out = node.skerry(&["logs", "missing"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(out.stderr, "Error from server (NotFound): pods \"missing\" not found\n");

    // -f follows a running container and ends by itself when it exits.
    node.apply(&busybox_pod(
        "ticker",
        "Never",
        &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick$i; sleep 0.2; done"],
    ));
    node.wait_pod("ticker", "has started", |p| {
        p["status"]["containerStatuses"][0]["state"].get("waiting").is_none()
            && p["status"]["containerStatuses"][0]["state"].is_object()
    });
    let out = run_with_timeout(node.skerryd.command(&["logs", "-f", "ticker"]), None, Duration::from_secs(30));
    assert_eq!(out.code, 0, "{out}");
    let want: String = (1..=10).map(|i| format!("tick{i}\n")).collect();
    assert_eq!(out.stdout, want, "logs -f printed every line and ended when the container exited:\n{out}");
    node.wait_pod("ticker", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    // Following a finished container prints its log and returns at once.
    let out = run_with_timeout(node.skerryd.command(&["logs", "-f", "ticker"]), None, Duration::from_secs(30));
    assert_eq!(out.stdout, want, "{out}");

    // kubectl (since 1.20) defaults to the first container and names all of them on stderr;
    // `exec` does the same.
    let out = node.skerry(&["logs", "two"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "from-a\n"), "{out}");
    assert_eq!(out.stderr, "Defaulted container \"a\" out of: a, b\n", "{out}");
    let out = node.skerry(&["exec", "two", "--", "echo", "hi"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "hi\n"), "{out}");
    assert_eq!(out.stderr, "Defaulted container \"a\" out of: a, b\n", "{out}");
}
