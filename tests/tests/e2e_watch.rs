//! Watching: `get pods -w` and the raw `?watch=true` API from a resourceVersion.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::skerryd::{busybox_pod, deadline, TestNode};

#[test]
fn get_pods_watch_shows_new_pods_and_status_changes() {
    let node = TestNode::start();
    node.import_busybox();
    node.apply(&busybox_pod("old", "Always", &["sleep", "3600"]));
    node.wait_running("old");

    let mut child =
        node.skerryd.command(&["get", "pods", "-w"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let text = || seen.lock().unwrap().clone();
    let wait_for = |what: &str, cond: &dyn Fn(&str) -> bool| {
        let d = deadline();
        while !cond(&text()) {
            assert!(Instant::now() < d, "get pods -w never showed {what}; it printed:\n{}", text());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let rows = |t: &str, name: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_string())
            .collect()
    };
    wait_for("the existing pod", &|t| rows(t, "old") == ["Running"]);
    assert!(text().starts_with("NAME "), "the header comes first:\n{}", text());

    node.apply(&busybox_pod("new", "Always", &["sleep", "3600"]));
    wait_for("the new pod reach Running", &|t| rows(t, "new").last().is_some_and(|s| s == "Running"));
    let statuses = rows(&text(), "new");
    assert!(
        statuses.len() >= 2 && statuses[0] != "Running",
        "the new pod appeared before it ran: {statuses:?}\n{}",
        text()
    );
    assert_eq!(text().lines().filter(|l| l.starts_with("NAME ")).count(), 1, "one header only:\n{}", text());
    assert!(child.try_wait().unwrap().is_none(), "get -w keeps running");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

#[test]
fn raw_watch_from_a_resource_version() {
    let node = TestNode::start();
    node.import_busybox();
    let list = node.api("GET", "/api/v1/namespaces/default/pods", None);
    assert_eq!(list.status, 200, "{}", list.text());
    let rv: u64 = list.json()["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();

    node.apply(
        &busybox_pod("watched", "Always", &["sleep", "3600"])
            .replace("spec:\n", "  labels:\n    app: watched\nspec:\n"),
    );
    node.apply(&busybox_pod("other", "Always", &["sleep", "3600"]));
    node.wait_running("watched");

    // Replays from rv: ADDED first, then the status updates up to Running; ends after timeoutSeconds.
    let started = Instant::now();
    let path = format!(
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=5&labelSelector=app%3Dwatched"
    );
    let mut w = skerry_tests::http::stream(&node.skerryd.socket(), &path).unwrap();
    assert_eq!(w.status, 200);
    let mut events: Vec<Value> = Vec::new();
    while let Some(line) = w.next_line(Instant::now() + Duration::from_secs(30)) {
        events.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}")));
    }
    assert!(w.ended(), "the watch ended by itself (timeoutSeconds=5)");
    assert!(started.elapsed() < Duration::from_secs(20), "it ended near its timeout ({:?})", started.elapsed());
    assert!(!events.is_empty());
    assert_eq!(events[0]["type"], "ADDED", "{events:#?}");
    assert!(
        events.iter().all(|e| e["object"]["metadata"]["name"] == "watched"),
        "the label selector filters: {events:#?}"
    );
    assert!(events[1..].iter().all(|e| e["type"] == "MODIFIED"), "{events:#?}");
    assert!(events.iter().any(|e| e["object"]["status"]["phase"] == "Running"), "{events:#?}");
    let rvs: Vec<u64> =
        events.iter().map(|e| e["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()).collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]) && rvs[0] > rv, "resourceVersions increase from {rv}: {rvs:?}");

    // A live watch sees a deletion.
    let last = *rvs.last().unwrap();
    let path = format!("/api/v1/namespaces/default/pods?watch=true&resourceVersion={last}");
    let mut w = skerry_tests::http::stream(&node.skerryd.socket(), &path).unwrap();
    node.skerry_ok(&["delete", "pod", "watched", "--now"]);
    let d = deadline();
    loop {
        let line = w.next_line(d).expect("the watch reported the deletion");
        let ev: Value = serde_json::from_str(&line).unwrap();
        if ev["type"] == "DELETED" {
            assert_eq!(ev["object"]["metadata"]["name"], "watched");
            break;
        }
    }
}
