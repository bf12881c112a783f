//! The CLI against a fake skerryd on a temporary Unix socket: requests sent and what is printed.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};
use skerry_cli::output::Io;
use support::{json_reply, start, status};
use tokio::io::AsyncWriteExt;

fn pod_table(names: &[&str]) -> Value {
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "42"},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "priority": 0},
            {"name": "Ready", "type": "string", "priority": 0},
            {"name": "Status", "type": "string", "priority": 0},
            {"name": "Restarts", "type": "integer", "priority": 0},
            {"name": "Age", "type": "string", "priority": 0},
            {"name": "Node", "type": "string", "priority": 1}
        ],
        "rows": names.iter().map(|n| json!({
            "cells": [n, "1/1", "Running", 0, "5m", "node-a"],
            "object": {"metadata": {"name": n, "namespace": "default", "labels": {"app": "web"}}}
        })).collect::<Vec<_>>()
    })
}

fn write_manifest(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn apply_reports_each_object_and_server_errors_at_the_end() {
    let fake = start(|s| {
        if s.uri.contains("/pods/bad") {
            return status(422, "Invalid", "Pod \"bad\" is invalid: spec.containers: Required value");
        }
        let outcome = if s.uri.contains("/services/") { "unchanged" } else { "created" };
        let mut r = json_reply(200, serde_json::from_slice(&s.body).unwrap());
        r.headers_mut().insert("x-skerry-apply", outcome.parse().unwrap());
        r.headers_mut().append("warning", r#"299 - "unknown field \"spec.foo\"""#.parse().unwrap());
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        &dir,
        "app.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: webapp\nspec: {}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n---\napiVersion: v1\nkind: Foo\nmetadata:\n  name: x\n",
    );
    let (code, out, err) = fake.run(&["apply", "-f", &file]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "pod/webapp created\nservice/web unchanged\ndeployment.apps/api created\n");
    assert_eq!(
        err,
        format!(
            "Warning: unknown field \"spec.foo\"\nWarning: unknown field \"spec.foo\"\nWarning: unknown field \"spec.foo\"\n\
             error: resource mapping not found for name: \"x\" namespace: \"\" from \"{file}\": no matches for kind \"Foo\" in version \"v1\"\nensure CRDs are installed first\n\
             Error from server (Invalid): Pod \"bad\" is invalid: spec.containers: Required value\n"
        )
    );
    let reqs = fake.requests();
    let uris: Vec<&str> = reqs.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(
        uris,
        [
            "/api/v1/namespaces/default/pods/webapp?fieldManager=skerry",
            "/api/v1/namespaces/default/pods/bad?fieldManager=skerry",
            "/api/v1/namespaces/prod/services/web?fieldManager=skerry",
            "/apis/apps/v1/namespaces/default/deployments/api?fieldManager=skerry",
        ]
    );
    assert!(reqs.iter().all(|r| r.method == "PATCH"));
    assert_eq!(reqs[0].headers.get("content-type").unwrap(), "application/apply-patch+yaml");
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(body, json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"webapp"},"spec":{}}));
}

#[tokio::test]
async fn apply_rejects_namespace_conflict_and_sends_nothing_from_malformed_files() {
    let fake = start(|s| {
        let mut r = json_reply(200, json!({}));
        r.headers_mut().insert("x-skerry-apply", "configured".parse().unwrap());
        let _ = s;
        r
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let good = write_manifest(&dir, "a.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  namespace: other\n");
    let bad = write_manifest(
        &dir,
        "b.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\n---\nkind: Pod\n  bad: indent\n",
    );
    let (code, out, err) = fake.run(&["-n", "mine", "apply", "-f", &good, "-f", &bad]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains(&format!("error: error parsing {bad}: document 2: ")), "{err}");
    assert!(err.contains("error: the namespace from the provided object \"other\" does not match the namespace \"mine\". You must pass '--namespace=other' to perform this operation."), "{err}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn create_prints_created_and_sources_errors() {
    let fake = start(|s| {
        if s.body.windows(6).any(|w| w == b"\"dupe\"") {
            return status(409, "AlreadyExists", "pods \"dupe\" already exists");
        }
        json_reply(201, serde_json::from_slice(&s.body).unwrap())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_manifest(
        &dir,
        "p.json",
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"one"}},{"apiVersion":"v1","kind":"Pod","metadata":{"name":"dupe"}}]}"#,
    );
    let (code, out, err) = fake.run(&["create", "-f", &file]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "pod/one created\n");
    assert_eq!(
        err,
        format!("Error from server (AlreadyExists): error when creating \"{file}\": pods \"dupe\" already exists\n")
    );
    let reqs = fake.requests();
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].uri, "/api/v1/namespaces/default/pods");
}

#[tokio::test]
async fn get_prints_tables_and_not_found() {
    let fake = start(|s| {
        assert_eq!(s.headers.get("accept").unwrap(), "application/json;as=Table;v=v1;g=meta.k8s.io");
        match s.uri.as_str() {
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb" => {
                json_reply(200, pod_table(&["webapp", "queue"]))
            }
            "/api/v1/namespaces/default/pods/webapp" => json_reply(200, pod_table(&["webapp"])),
            "/api/v1/namespaces/default/services" => json_reply(200, pod_table(&[])),
            "/api/v1/pods" => json_reply(200, pod_table(&["webapp"])),
            _ => status(404, "NotFound", "pods \"missing\" not found"),
        }
    })
    .await;
    let (code, out, err) = fake.run(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "NAME     READY   STATUS    RESTARTS   AGE\nwebapp   1/1     Running   0          5m\nqueue    1/1     Running   0          5m\n"
    );

    let (code, out, err) = fake.run(&["get", "po", "webapp", "missing", "-o", "wide", "--show-labels"]).await;
    assert_eq!(code, 1);
    assert_eq!(out, "NAME     READY   STATUS    RESTARTS   AGE   NODE     LABELS\nwebapp   1/1     Running   0          5m    node-a   app=web\n");
    assert_eq!(err, "Error from server (NotFound): pods \"missing\" not found\n");

    let (code, out, err) = fake.run(&["get", "svc"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", "No resources found in default namespace.\n"));

    let (code, out, _) = fake.run(&["get", "pods", "-A"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAMESPACE   NAME     READY"), "{out}");
}

#[tokio::test]
async fn get_yaml_json_and_name() {
    let fake = start(|s| {
        assert_ne!(s.headers.get("accept").unwrap(), "application/json;as=Table;v=v1;g=meta.k8s.io");
        match s.uri.as_str() {
            "/api/v1/namespaces/default/pods" => json_reply(
                200,
                json!({"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[{"metadata":{"name":"a"}}]}),
            ),
            _ => json_reply(200, json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}})),
        }
    })
    .await;
    let (code, out, _) = fake.run(&["get", "pods", "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: a\nmetadata:\n  resourceVersion: ''\n"
    );
    let (_, out, _) = fake.run(&["get", "pod", "a", "-o", "json"]).await;
    assert_eq!(out, "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"Pod\",\n    \"metadata\": {\n        \"name\": \"a\"\n    }\n}\n");
    let (_, out, _) = fake.run(&["get", "pods", "-o", "name"]).await;
    assert_eq!(out, "pod/a\n");
}

#[tokio::test]
async fn delete_waits_until_gone() {
    let gets = Arc::new(Mutex::new(0));
    let gets2 = gets.clone();
    let fake = start(move |s| match s.method.as_str() {
        "DELETE" => json_reply(200, json!({"kind":"Pod","metadata":{"name":"webapp","uid":"u1"}})),
        _ => {
            let mut n = gets2.lock().unwrap();
            *n += 1;
            if *n < 2 {
                json_reply(200, json!({"kind":"Pod","metadata":{"name":"webapp","uid":"u1"}}))
            } else {
                status(404, "NotFound", "pods \"webapp\" not found")
            }
        }
    })
    .await;
    let (code, out, err) = fake.run(&["delete", "pod", "webapp", "--grace-period", "5"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "pod \"webapp\" deleted\n", ""));
    let reqs = fake.requests();
    assert_eq!(reqs[0].uri, "/api/v1/namespaces/default/pods/webapp?gracePeriodSeconds=5");
    let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        body,
        json!({"kind":"DeleteOptions","apiVersion":"v1","gracePeriodSeconds":5,"propagationPolicy":"Background"})
    );
    assert_eq!(*gets.lock().unwrap(), 2);

    let (code, out, err) = fake.run(&["delete", "pod", "webapp", "--force", "--grace-period=0", "--wait=false"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "pod \"webapp\" force deleted\n");
    assert!(err.starts_with("Warning: Immediate deletion does not wait"), "{err}");
}

#[tokio::test]
async fn delete_not_found() {
    let fake = start(|_| status(404, "NotFound", "pods \"x\" not found")).await;
    let (code, out, err) = fake.run(&["delete", "pod", "x"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "Error from server (NotFound): pods \"x\" not found\n"));
    let (code, out, err) = fake.run(&["delete", "pod", "x", "--ignore-not-found"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
}

#[tokio::test]
async fn label_checks_overwrite_and_patches() {
    let fake = start(|s| match s.method.as_str() {
        "GET" => json_reply(200, json!({"kind":"Pod","metadata":{"name":"webapp","labels":{"app":"web","old":"x"}}})),
        _ => json_reply(200, json!({})),
    })
    .await;
    let (code, _, err) = fake.run(&["label", "pods", "webapp", "app=api"]).await;
    assert_eq!((code, err.as_str()), (1, "error: 'app' already has a value (web), and --overwrite is false\n"));
    assert!(fake.requests().iter().all(|r| r.method == "GET"));

    let (code, out, _) = fake.run(&["label", "pod/webapp", "app=api", "tier=fe", "old-", "--overwrite"]).await;
    assert_eq!((code, out.as_str()), (0, "pod/webapp labeled\n"));
    let patch = fake.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.uri, "/api/v1/namespaces/default/pods/webapp");
    assert_eq!(patch.headers.get("content-type").unwrap(), "application/merge-patch+json");
    let body: Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(body, json!({"metadata":{"labels":{"app":"api","tier":"fe","old":null}}}));

    let (_, out, _) = fake.run(&["label", "pods", "webapp", "old-"]).await;
    assert_eq!(out, "pod/webapp unlabeled\n");
}

#[tokio::test]
async fn exec_relays_output_and_exit_code() {
    let fake = start(|_| status(500, "InternalError", "unexpected")).await;
    let (code, out, err) = fake.run(&["exec", "webapp", "--", "sh", "-c", "exit 3"]).await;
    assert_eq!(out, "hello\n");
    assert_eq!(err, "oops\ncommand terminated with exit code 3\n");
    assert_eq!(code, 3);
    let req = fake.requests().into_iter().find(|r| r.method == "POST").expect("an exec request");
    assert_eq!(req.uri, "/api/v1/namespaces/default/pods/webapp/exec?command=sh&command=-c&command=exit%203");
    assert_eq!(req.headers.get("upgrade").unwrap(), "skerry-exec/1");
}

#[tokio::test]
async fn logs_describe_version() {
    let fake = start(|s| {
        let text = |t: &str| Response::new(Full::new(Bytes::from(t.to_string())));
        match s.uri.as_str() {
            "/api/v1/namespaces/default/pods/web/log?container=app&tailLines=2" => text("line1\nline2\n"),
            "/api/v1/namespaces/default/pods/web/describe" => text("Name: web\n"),
            "/version" => json_reply(200, json!({"gitVersion":"v0.1.0","platform":"linux/amd64"})),
            other => status(404, "NotFound", &format!("no {other}")),
        }
    })
    .await;
    assert_eq!(
        fake.run(&["logs", "pod/web", "-c", "app", "--tail", "2"]).await,
        (0, "line1\nline2\n".into(), "".into())
    );
    assert_eq!(fake.run(&["describe", "pod", "web"]).await, (0, "Name: web\n".into(), "".into()));
    let (code, out, _) = fake.run(&["version"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, format!("Client Version: v{}\nServer Version: v0.1.0\n", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn unreachable_daemon() {
    let (io, out, err) = Io::capture();
    let code = skerry_cli::run(["skerry", "--socket", "/nonexistent/skerry.sock", "get", "pods"], io).await;
    assert_eq!(code, 1);
    assert_eq!(out.text(), "");
    assert_eq!(
        err.text(),
        "error: cannot reach skerryd at /nonexistent/skerry.sock: No such file or directory (os error 2); is skerryd running?\n"
    );
}

#[tokio::test]
async fn get_watch_prints_table_then_rows() {
    let fake = start(|s| {
        if s.uri.contains("watch=true") {
            let mut body = String::new();
            for (ty, name) in [("ADDED", "queue"), ("DELETED", "webapp")] {
                body.push_str(&json!({"type": ty, "object": pod_table(&[name])}).to_string());
                body.push('\n');
            }
            return Response::new(Full::new(Bytes::from(body)));
        }
        json_reply(200, pod_table(&["webapp"]))
    })
    .await;
    let (code, out, err) = fake.run(&["get", "pods", "-w"]).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "NAME     READY   STATUS    RESTARTS   AGE\n\
         webapp   1/1     Running   0          5m\n\
         queue    1/1     Running   0          5m\n\
         webapp   1/1     Running   0          5m\n"
    );
    let reqs = fake.requests();
    assert_eq!(reqs[1].uri, "/api/v1/namespaces/default/pods?watch=true&resourceVersion=42");
    assert_eq!(reqs[1].headers.get("accept").unwrap(), "application/json;as=Table;v=v1;g=meta.k8s.io");

    let (_, _, _) = fake.run(&["get", "pod", "webapp", "-w"]).await;
    let reqs = fake.requests();
    assert_eq!(
        reqs[3].uri,
        "/api/v1/namespaces/default/pods?watch=true&fieldSelector=metadata.name%3Dwebapp&resourceVersion=42"
    );
}

#[tokio::test]
async fn get_all_prints_one_table_per_type_with_kinds() {
    let fake = start(|s| match s.uri.as_str() {
        "/api/v1/namespaces/default/pods" => json_reply(200, pod_table(&["webapp"])),
        "/apis/apps/v1/namespaces/default/deployments" => json_reply(200, pod_table(&["api"])),
        _ => json_reply(200, pod_table(&[])),
    })
    .await;
    let (code, out, _) = fake.run(&["get", "all"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "NAME         READY   STATUS    RESTARTS   AGE\npod/webapp   1/1     Running   0          5m\n\n\
         NAME                  READY   STATUS    RESTARTS   AGE\ndeployment.apps/api   1/1     Running   0          5m\n"
    );
}

/// `exec -it` under a real pseudo-terminal (util-linux `script`): raw mode, the
/// initial resize frame, stdin frames, and the terminal restored afterwards.
#[tokio::test]
async fn exec_tty_under_a_pty() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        panic!("this test needs util-linux `script` to get a pseudo-terminal");
    }
    let fake = start(|_| status(500, "InternalError", "unexpected")).await;
    let bin = env!("CARGO_BIN_EXE_skerry");
    let inner = format!(
        "stty cols 100 rows 40; {bin} --socket {} exec -it webapp -- sh; rc=$?; echo; echo RC=$rc; stty -a | grep -o -- '-\\?icanon' | head -1",
        fake.socket.display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Type only once the CLI has connected and sent its window size.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fake.requests().iter().any(|r| r.method == "frame:3") {
        assert!(std::time::Instant::now() < deadline, "no resize frame arrived");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hi").await.unwrap();
    stdin.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stdin.write_all(b"q").await.unwrap();
    stdin.flush().await.unwrap();
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ECHO:hi"), "{text}");
    assert!(text.contains("RC=0"), "{text}");
    assert!(text.contains("icanon") && !text.contains("-icanon"), "terminal not restored: {text}");
    let frames = fake.requests();
    let resize = frames.iter().find(|r| r.method == "frame:3").unwrap();
    assert_eq!(resize.body.as_ref(), &[0, 100, 0, 40]);
    assert!(frames.iter().any(|r| r.method == "frame:0" && r.body.as_ref() == b"hi"), "{frames:?}");
    let exec = frames.iter().find(|r| r.uri.contains("/exec?")).unwrap();
    assert!(exec.uri.ends_with("command=sh&stdin=true&tty=true"), "{}", exec.uri);
}

/// `exec -i` with piped stdin: data frames, then the stdin-EOF frame when the pipe closes.
#[tokio::test]
async fn exec_stdin_pipe_sends_eof() {
    let fake = start(|_| status(500, "InternalError", "unexpected")).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(["--socket", fake.socket.to_str().unwrap(), "exec", "-i", "-t", "webapp", "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ECHO:hello\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Unable to use a TTY - input is not a terminal or the right kind of file\n"
    );
    let frames: Vec<String> =
        fake.requests().iter().filter(|r| r.method.starts_with("frame:")).map(|r| r.method.clone()).collect();
    assert_eq!(frames, ["frame:0", "frame:5"]);
    let exec = fake.requests().into_iter().find(|r| r.uri.contains("/exec?")).unwrap();
    assert!(exec.uri.ends_with("command=cat&stdin=true"), "{}", exec.uri);
}
