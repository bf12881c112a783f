//! Workload controllers end to end with a real skerryd and containerd: a Deployment comes up,
//! a new image rolls out through a new ReplicaSet, a deleted pod is replaced. The helpers are
//! small and shared so that more workload tests (rollout CLI, conformance manifests) can join.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use skerry_tests::skerryd::{deadline, TestNode};
use skerry_tests::standins::build_standin;

const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Builds and imports a stand-in web server image called `name` (httpd on port 80).
fn import_web_image(node: &TestNode, name: &str) {
    let out = node.import_image(&build_standin(name, &BTreeSet::from([80])));
    assert!(out.contains("imported"), "importing {name} printed:\n{out}");
}

/// A Deployment of `replicas` pods of `image` labelled `app: NAME` (no pulls, 1 s grace).
fn deployment_yaml(name: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: {image}\n        imagePullPolicy: Never\n        ports:\n        - containerPort: 80\n"
    )
}

/// `get KIND NAME -o json`.
fn get_json(node: &TestNode, kind: &str, name: &str) -> Value {
    let out = node.skerry_ok(&["get", kind, name, "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("get -o json is not JSON ({e}):\n{out}"))
}

/// `get KIND -l SELECTOR -o json` items.
fn list(node: &TestNode, kind: &str, selector: &str) -> Vec<Value> {
    let out = node.skerry_ok(&["get", kind, "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("get -o json is not JSON ({e}):\n{out}"));
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn count(obj: &Value, field: &str) -> i64 {
    obj["status"][field].as_i64().unwrap_or(0)
}

fn running_and_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
}

/// Polls `check` until it returns `Some` (60 s); panics with `what`, the last state it
/// described and the daemon's log.
fn wait_for<T>(node: &TestNode, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = deadline();
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting until {what}; last seen:\n{last}\nskerryd log tail:\n{}",
                node.skerryd.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the Deployment is rolled out as `rollout status` judges it (generation observed,
/// every replica updated and available, no old replica left) and exactly `replicas` pods of it
/// run and are ready; returns those pods.
fn wait_rolled_out(node: &TestNode, deployment: &str, replicas: i64) -> Vec<Value> {
    wait_for(node, &format!("deployment {deployment} has {replicas} updated, available pods"), || {
        let d = get_json(node, "deployment", deployment);
        let pods = list(node, "pods", &format!("app={deployment}"));
        let live: Vec<Value> = pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).cloned().collect();
        let observed = count(&d, "observedGeneration") >= d["metadata"]["generation"].as_i64().unwrap_or(0);
        let done = observed
            && d["spec"]["replicas"].as_i64() == Some(replicas)
            && [count(&d, "replicas"), count(&d, "updatedReplicas"), count(&d, "availableReplicas")] == [replicas; 3]
            && live.len() == replicas as usize
            && pods.len() == live.len()
            && live.iter().all(running_and_ready);
        if done {
            Ok(live)
        } else {
            Err(format!(
                "status: {}\npods:\n{}",
                d["status"],
                node.skerry(&["get", "pods", "-l", &format!("app={deployment}")]).stdout
            ))
        }
    })
}

/// The Deployment's ReplicaSets, oldest revision first.
fn replica_sets(node: &TestNode, deployment: &str) -> Vec<Value> {
    let mut sets = list(node, "replicasets", &format!("app={deployment}"));
    let revision = |s: &Value| {
        s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    sets.sort_by_key(revision);
    sets
}

fn template_hash(obj: &Value) -> String {
    obj["metadata"]["labels"][POD_TEMPLATE_HASH].as_str().unwrap_or_default().to_string()
}

#[test]
fn deployment_comes_up_rolls_a_new_image_and_replaces_a_deleted_pod() {
    let node = TestNode::start();
    import_web_image(&node, "skerry-test/web:1");
    import_web_image(&node, "skerry-test/web:2");

    // Up: two pods of one ReplicaSet.
    let out = node.apply(&deployment_yaml("web", 2, "skerry-test/web:1"));
    assert_eq!(out, "deployment.apps/web created\n");
    let first = wait_rolled_out(&node, "web", 2);
    let sets = replica_sets(&node, "web");
    assert_eq!(sets.len(), 1, "one ReplicaSet: {sets:#?}");
    let h1 = template_hash(&sets[0]);
    assert_eq!(name(&sets[0]), format!("web-{h1}"));
    assert_eq!(sets[0]["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for p in &first {
        assert_eq!(template_hash(p), h1, "pods carry the ReplicaSet's hash");
        assert!(name(p).starts_with(&format!("web-{h1}-")), "{}", name(p));
        assert_eq!(p["metadata"]["ownerReferences"][0]["name"], name(&sets[0]));
    }
    let d = get_json(&node, "deployment", "web");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");

    // A new image: a second ReplicaSet takes over, the old one is scaled to zero.
    let out = node.apply(&deployment_yaml("web", 2, "skerry-test/web:2"));
    assert_eq!(out, "deployment.apps/web configured\n");
    let second = wait_rolled_out(&node, "web", 2);
    let sets = replica_sets(&node, "web");
    assert_eq!(sets.len(), 2, "{sets:#?}");
    let h2 = template_hash(&sets[1]);
    assert_ne!(h1, h2);
    assert_eq!(sets[0]["spec"]["replicas"], 0, "the old ReplicaSet is scaled to zero");
    assert_eq!(sets[1]["spec"]["replicas"], 2);
    assert_eq!(sets[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    let first_names: BTreeSet<String> = first.iter().map(name).collect();
    for p in &second {
        assert_eq!(template_hash(p), h2);
        assert_eq!(p["spec"]["containers"][0]["image"], "skerry-test/web:2");
        assert!(!first_names.contains(&name(p)), "old pods are replaced, not reused");
    }

    // A deleted pod is replaced by a new one.
    let victim = name(&second[0]);
    node.skerry_ok(&["delete", "pod", &victim]);
    let after = wait_rolled_out(&node, "web", 2);
    let names: BTreeSet<String> = after.iter().map(name).collect();
    assert!(!names.contains(&victim), "{victim} is gone: {names:?}");
    assert!(names.contains(&name(&second[1])), "the other pod is untouched: {names:?}");
}

/// `skerry rollout history deploy/NAME` once it equals `want` (the controller copies the
/// change-cause and renumbers revisions asynchronously).
fn wait_history(node: &TestNode, deployment: &str, want: &str) {
    let target = format!("deploy/{deployment}");
    wait_for(node, &format!("the history of {deployment} is {want:?}"), || {
        let out = node.skerry(&["rollout", "history", &target]);
        if out.code == 0 && out.stdout == want {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
}

/// The CLI's workload commands against the real controller: scale, set image with a
/// change-cause, rollout status to the end, history, undo, pause and resume, restart.
#[test]
fn rollout_commands_drive_a_deployment() {
    let node = TestNode::start();
    import_web_image(&node, "skerry-test/web:1");
    import_web_image(&node, "skerry-test/web:2");
    node.apply(&deployment_yaml("site", 1, "skerry-test/web:1"));
    let status = |node: &TestNode| node.skerry_ok(&["rollout", "status", "deployment/site", "--timeout=60s"]);
    assert!(status(&node).ends_with("deployment \"site\" successfully rolled out\n"));

    assert_eq!(node.skerry_ok(&["scale", "deploy/site", "--replicas=2"]), "deployment.apps/site scaled\n");
    let out = node.skerry(&["scale", "deploy/site", "--replicas=3", "--current-replicas=1"]);
    assert_eq!((out.code, out.stderr.as_str()), (1, "error: Expected replicas to be 1, was 2\n"));
    wait_rolled_out(&node, "site", 2);

    assert_eq!(
        node.skerry_ok(&["set", "image", "deploy/site", "web=skerry-test/web:2"]),
        "deployment.apps/site image updated\n"
    );
    assert_eq!(
        node.skerry_ok(&["annotate", "deploy/site", "kubernetes.io/change-cause=web 2"]),
        "deployment.apps/site annotated\n"
    );
    assert!(status(&node).ends_with("deployment \"site\" successfully rolled out\n"));
    wait_rolled_out(&node, "site", 2);
    wait_history(&node, "site", "deployment.apps/site \nREVISION  CHANGE-CAUSE\n1         <none>\n2         web 2\n\n");
    let one = node.skerry_ok(&["rollout", "history", "deploy/site", "--revision=1"]);
    assert!(one.starts_with("deployment.apps/site with revision #1\nPod Template:\n"), "{one}");
    assert!(one.contains("    Image:\tskerry-test/web:1\n"), "{one}");

    // Undo: revision 1's template comes back as revision 3.
    assert_eq!(node.skerry_ok(&["rollout", "undo", "deploy/site"]), "deployment.apps/site rolled back\n");
    status(&node);
    for p in wait_rolled_out(&node, "site", 2) {
        assert_eq!(p["spec"]["containers"][0]["image"], "skerry-test/web:1");
    }
    wait_history(&node, "site", "deployment.apps/site \nREVISION  CHANGE-CAUSE\n2         web 2\n3         <none>\n\n");
    assert_eq!(
        node.skerry_ok(&["rollout", "undo", "deploy/site", "--to-revision=3"]),
        "deployment.apps/site skipped rollback (current template already matches revision 3)\n"
    );

    // Paused: no second pause, no undo, no restart until resumed.
    assert_eq!(node.skerry_ok(&["rollout", "pause", "deploy/site"]), "deployment.apps/site paused\n");
    let out = node.skerry(&["rollout", "pause", "deploy/site"]);
    assert_eq!((out.code, out.stderr.as_str()), (1, "error: deployments.apps \"site\" is already paused\n"));
    let out = node.skerry(&["rollout", "undo", "deploy/site"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "error: you cannot rollback a paused deployment; resume it first with 'skerry rollout resume' and try again\n")
    );
    assert_eq!(node.skerry_ok(&["rollout", "resume", "deploy/site"]), "deployment.apps/site resumed\n");

    // Restart: a new template (the restartedAt annotation), so new pods.
    let before: BTreeSet<String> = wait_rolled_out(&node, "site", 2).iter().map(name).collect();
    assert_eq!(node.skerry_ok(&["rollout", "restart", "deploy/site"]), "deployment.apps/site restarted\n");
    assert!(status(&node).ends_with("deployment \"site\" successfully rolled out\n"));
    let after: BTreeSet<String> = wait_rolled_out(&node, "site", 2).iter().map(name).collect();
    assert!(before.is_disjoint(&after), "restart replaces the pods: {before:?} then {after:?}");
}
