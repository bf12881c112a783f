//! The raw API over the socket: optimistic concurrency, Status errors, the socket's permissions.

use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};
use skerry_tests::skerryd::TestNode;

const PODS: &str = "/api/v1/namespaces/default/pods";

fn assert_status(r: &skerry_tests::http::Response, code: u16, reason: &str) -> Value {
    assert_eq!(r.status, code, "{}", r.text());
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{s:#}");
    assert_eq!(s["status"], "Failure", "{s:#}");
    assert_eq!(s["reason"], reason, "{s:#}");
    assert_eq!(s["code"], code, "{s:#}");
    s
}

#[test]
fn optimistic_concurrency_and_status_errors() {
    let node = TestNode::start();
    let mode = std::fs::metadata(node.skerryd.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the API socket is rw for owner and group only");

    // Bound to another node, so nothing here updates it behind the test's back.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cas", "labels": {"step": "0"}},
        "spec": {"nodeName": "elsewhere", "containers": [{"name": "c", "image": "skerry-test/busybox:1"}]},
    });
    let created = node.api("POST", PODS, Some(&pod));
    assert_eq!(created.status, 201, "{}", created.text());
    assert_status(&node.api("POST", PODS, Some(&pod)), 409, "AlreadyExists");

    let got = node.api("GET", &format!("{PODS}/cas"), None);
    assert_eq!(got.status, 200, "{}", got.text());
    let mut obj = got.json();
    let rv = obj["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    obj["metadata"]["labels"]["step"] = json!("1");
    let first = node.api("PUT", &format!("{PODS}/cas"), Some(&obj));
    assert_eq!(first.status, 200, "{}", first.text());
    let new_rv = first.json()["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert_ne!(new_rv, rv, "an update bumps resourceVersion");

    obj["metadata"]["labels"]["step"] = json!("2");
    let second = node.api("PUT", &format!("{PODS}/cas"), Some(&obj));
    let s = assert_status(&second, 409, "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{s:#}"
    );
    let now = node.api("GET", &format!("{PODS}/cas"), None).json();
    assert_eq!(now["metadata"]["labels"]["step"], "1", "the conflicting write changed nothing");

    // Missing objects: 404 Status naming the object.
    let s = assert_status(&node.api("DELETE", &format!("{PODS}/missing"), None), 404, "NotFound");
    assert_eq!(s["message"], "pods \"missing\" not found", "{s:#}");
    assert_eq!(s["details"]["name"], "missing", "{s:#}");
    assert_eq!(s["details"]["kind"], "pods", "{s:#}");
    assert_status(&node.api("GET", &format!("{PODS}/missing"), None), 404, "NotFound");
    assert_status(&node.api("GET", "/api/v1/namespaces/nope/pods/x", None), 404, "NotFound");

    // Invalid input is a 422 Invalid Status, bad JSON a 400.
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let s = assert_status(&node.api("POST", PODS, Some(&bad)), 422, "Invalid");
    assert!(s["message"].as_str().unwrap().contains("metadata.name"), "{s:#}");
    let raw = skerry_tests::http::request(&node.skerryd.socket(), "POST", PODS, Some(b"{not json")).unwrap();
    assert_status(&raw, 400, "BadRequest");

    // DELETE returns the object (Kubernetes returns it with deletionTimestamp, or a Success Status).
    let del = node.api("DELETE", &format!("{PODS}/cas"), None);
    assert_eq!(del.status, 200, "{}", del.text());
}

#[test]
fn logs_carry_no_colour_unless_stderr_is_a_terminal() {
    // The harness sends skerryd's stderr to a file (as systemd sends it to the journal) and
    // does not set NO_COLOR.
    let mut node = TestNode::start();
    let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": []}});
    assert_status(&node.api("POST", PODS, Some(&bad)), 422, "Invalid");
    node.skerryd.stop();
    let log = node.skerryd.log();
    assert!(log.contains(" INFO "), "skerryd logged at info level:\n{log}");
    assert!(!log.contains('\x1b'), "no ANSI escape in a log written to a file:\n{log:?}");
    // A one-shot run with its output piped: the same.
    let config = node.skerryd.dir().join("config.yaml");
    let out = node.skerryd.run_skerryd(&["--cleanup", "--config", config.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains(" INFO "), "{out}");
    assert!(!out.stderr.contains('\x1b'), "no ANSI escape in piped output: {:?}", out.stderr);
    node.skerryd.start_again();
}
