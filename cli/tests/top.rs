//! `top pods` and `top nodes` against the fake skerryd: the metrics API paths they ask for,
//! the tables they print, and kubectl's messages when there is nothing to show.

mod support;

use serde_json::{json, Value};
use support::{json_reply, start, status};

const PODS: &str = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods";

fn pod_metrics(ns: &str, name: &str, cpu: &str, memory: &str) -> Value {
    json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
           "metadata": {"name": name, "namespace": ns}, "timestamp": "2024-01-01T00:00:00Z", "window": "10s",
           "containers": [{"name": name, "usage": {"cpu": cpu, "memory": memory}}]})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items})
}

fn uris(fake: &support::Fake) -> Vec<String> {
    fake.requests().into_iter().map(|r| r.uri).collect()
}

#[tokio::test]
async fn top_pods_prints_kubectls_table() {
    let fake = start(|s| match s.uri.as_str() {
        PODS => json_reply(
            200,
            list(
                "PodMetricsList",
                vec![
                    pod_metrics("default", "idle", "12345n", "1024Ki"),
                    pod_metrics("default", "burner", "998765432n", "3Mi"),
                ],
            ),
        ),
        "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dweb" => json_reply(
            200,
            list(
                "PodMetricsList",
                vec![pod_metrics("kube-system", "dns", "5m", "20Mi"), pod_metrics("default", "idle", "0", "1024Ki")],
            ),
        ),
        _ => status(404, "NotFound", "nope"),
    })
    .await;

    let (code, out, err) = fake.run(&["top", "pods"]).await;
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(out, "NAME     CPU(cores)   MEMORY(bytes)   \nburner   999m         3Mi             \nidle     1m           1Mi             \n");

    let (code, out, _) = fake.run(&["top", "pod", "--sort-by=memory", "--no-headers", "--containers"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "burner   burner   999m   3Mi   \nidle     idle     1m     1Mi   \n");

    let (code, out, _) = fake.run(&["top", "po", "-A", "-l", "app=web"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "NAMESPACE     NAME   CPU(cores)   MEMORY(bytes)   \ndefault       idle   0m           1Mi             \nkube-system   dns    5m           20Mi            \n");
    assert_eq!(uris(&fake), [PODS, PODS, "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dweb"]);

    let (code, _, err) = fake.run(&["top", "pods", "--sort-by=age"]).await;
    assert_eq!((code, err.as_str()), (1, "error: --sort-by accepts only cpu or memory\n"));
    let (code, _, err) = fake.run(&["top", "pods", "idle", "-l", "a=b"]).await;
    assert_eq!((code, err.as_str()), (1, "error: only one of NAME or selector can be provided\n"));
}

#[tokio::test]
async fn top_pod_by_name_and_its_errors() {
    let fake = start(|s| match s.uri.as_str() {
        "/apis/metrics.k8s.io/v1beta1/namespaces/prod/pods/web" => {
            json_reply(200, pod_metrics("prod", "web", "250m", "64Mi"))
        }
        _ => status(404, "NotFound", "podmetrics.metrics.k8s.io \"prod/new\" not found"),
    })
    .await;
    let (code, out, _) = fake.run(&["top", "pod", "web", "-n", "prod"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "NAME   CPU(cores)   MEMORY(bytes)   \nweb    250m         64Mi            \n")
    );
    let (code, out, err) = fake.run(&["top", "pod", "new", "-n", "prod"]).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "Error from server (NotFound): podmetrics.metrics.k8s.io \"prod/new\" not found\n")
    );
}

#[tokio::test]
async fn top_pods_without_metrics_says_why() {
    let fake = start(|s| match s.uri.as_str() {
        PODS | "/apis/metrics.k8s.io/v1beta1/namespaces/empty/pods" | "/apis/metrics.k8s.io/v1beta1/namespaces/old/pods" => {
            json_reply(200, list("PodMetricsList", vec![]))
        }
        "/api/v1/namespaces/default/pods" => {
            json_reply(200, json!({"kind": "PodList", "items": [{"metadata": {"name": "fresh", "namespace": "default", "creationTimestamp": "2999-01-01T00:00:00Z"}}]}))
        }
        "/api/v1/namespaces/old/pods" => {
            json_reply(200, json!({"kind": "PodList", "items": [{"metadata": {"name": "stuck", "namespace": "old", "creationTimestamp": "2020-01-01T00:00:00Z"}}]}))
        }
        "/api/v1/namespaces/empty/pods" => json_reply(200, json!({"kind": "PodList", "items": []})),
        _ => status(404, "NotFound", "nope"),
    })
    .await;
    let (code, out, err) = fake.run(&["top", "pods"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (1, "", "error: metrics not available yet\n"));
    let (code, out, err) = fake.run(&["top", "pods", "-n", "empty"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", "No resources found in empty namespace.\n"));
    let (code, _, err) = fake.run(&["top", "pods", "-n", "old"]).await;
    assert_eq!(code, 1);
    assert!(err.starts_with("error: Metrics not available for pod old/stuck, age: "), "{err}");
}

#[tokio::test]
async fn top_nodes_divides_by_each_nodes_allocatable() {
    let node = |name: &str, cpu: &str, memory: &str| {
        json!({"kind": "Node", "metadata": {"name": name, "labels": {}},
               "status": {"capacity": {"cpu": "4", "memory": "8Gi"}, "allocatable": {"cpu": cpu, "memory": memory}}})
    };
    let fake = start(move |s| match s.uri.as_str() {
        "/apis/metrics.k8s.io/v1beta1/nodes" | "/apis/metrics.k8s.io/v1beta1/nodes/n1" => {
            let m = json!({"kind": "NodeMetrics", "metadata": {"name": "n1"}, "timestamp": "2024-01-01T00:00:00Z", "window": "10.5s",
                           "usage": {"cpu": "523400000n", "memory": "1Gi"}});
            if s.uri.ends_with("/n1") { json_reply(200, m) } else { json_reply(200, list("NodeMetricsList", vec![m])) }
        }
        "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=role%3Dedge" => json_reply(200, list("NodeMetricsList", vec![])),
        // n2 has no metrics (its node did not answer): kubectl prints it with <unknown>.
        "/api/v1/nodes" => json_reply(200, json!({"kind": "NodeList", "items": [node("n2", "1", "1Gi"), node("n1", "2", "4Gi")]})),
        "/api/v1/nodes/n1" => json_reply(200, node("n1", "2", "4Gi")),
        _ => status(404, "NotFound", "nodes \"n9\" not found"),
    })
    .await;
    let want = "NAME   CPU(cores)   CPU(%)      MEMORY(bytes)   MEMORY(%)   \n\
                n1     524m         26%         1024Mi          25%         \n\
                n2     <unknown>    <unknown>   <unknown>       <unknown>   \n";
    let (code, out, err) = fake.run(&["top", "nodes"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, want, ""));
    let one = "NAME   CPU(cores)   CPU(%)   MEMORY(bytes)   MEMORY(%)   \nn1     524m         26%      1024Mi          25%         \n";
    let (code, out, _) = fake.run(&["top", "node", "n1"]).await;
    assert_eq!((code, out.as_str()), (0, one));
    let (code, out, _) = fake.run(&["top", "node", "n1", "--show-capacity"]).await;
    assert_eq!((code, out.lines().nth(1)), (0, Some("n1     524m         13%      1024Mi          12%         ")));
    let (code, _, err) = fake.run(&["top", "node", "n9"]).await;
    assert_eq!((code, err.as_str()), (1, "Error from server (NotFound): nodes \"n9\" not found\n"));
    let (code, _, err) = fake.run(&["top", "no", "-l", "role=edge"]).await;
    assert_eq!((code, err.as_str()), (1, "error: metrics not available yet\n"));
}
