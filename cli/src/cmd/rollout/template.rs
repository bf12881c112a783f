//! A pod template printed as kubectl's `DescribePodTemplate` prints it (what `rollout history
//! --revision` shows): a pure function of the template's JSON. kubectl writes these lines into a
//! plain buffer, so the tabs stay tabs.

use std::fmt::Write;

use serde_json::{Map, Value};

use crate::cmd::objects::selector_string;

/// kubectl shortens annotation values past this length.
const MAX_ANNOTATION_LEN: usize = 140;
/// Annotations `describe` never shows.
const SKIP_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// kubectl's `PrefixWriter`: each level indents by two spaces.
struct Out(String);

impl Out {
    fn line(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.0.push_str("  ");
        }
        self.0.push_str(text);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn int_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn bool_of(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// A Go `%v` of a string slice: `[a b c]`.
fn go_list(v: &[Value]) -> String {
    let parts: Vec<String> =
        v.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect();
    format!("[{}]", parts.join(" "))
}

/// An int-or-string value (ports) as Go prints it.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The template as `Pod Template:` and its indented fields.
pub fn describe(template: &Value) -> String {
    let mut w = Out(String::new());
    w.line(0, "Pod Template:\n");
    let meta = &template["metadata"];
    let spec = &template["spec"];
    labels(&mut w, "  Labels", meta.get("labels"));
    if meta.get("annotations").and_then(Value::as_object).is_some_and(|a| !a.is_empty()) {
        annotations(&mut w, "  Annotations", meta.get("annotations"));
    }
    let sa = str_of(spec, "serviceAccountName");
    if !sa.is_empty() {
        w.line(1, &format!("Service Account:\t{sa}\n"));
    }
    if !items(spec, "initContainers").is_empty() {
        containers(&mut w, "Init Containers", items(spec, "initContainers"));
    }
    containers(&mut w, "Containers", items(spec, "containers"));
    volumes(&mut w, items(spec, "volumes"));
    topology_spread(&mut w, items(spec, "topologySpreadConstraints"));
    let priority = str_of(spec, "priorityClassName");
    if !priority.is_empty() {
        w.line(1, &format!("Priority Class Name:\t{priority}\n"));
    }
    labels(&mut w, "  Node-Selectors", spec.get("nodeSelector"));
    tolerations(&mut w, "  Tolerations", items(spec, "tolerations"));
    w.0
}

fn sorted(map: Option<&Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = map
        .and_then(Value::as_object)
        .map(Map::iter)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    out.sort();
    out
}

/// kubectl's `printLabelsMultiline`.
fn labels(w: &mut Out, title: &str, map: Option<&Value>) {
    w.line(0, &format!("{title}:\t"));
    let entries = sorted(map);
    if entries.is_empty() {
        w.line(0, "<none>\n");
        return;
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        if i != 0 {
            w.line(0, "\t");
        }
        w.line(0, &format!("{k}={v}\n"));
    }
}

/// kubectl's `printAnnotationsMultiline`: long or multi-line values go on their own lines.
fn annotations(w: &mut Out, title: &str, map: Option<&Value>) {
    w.line(0, &format!("{title}:\t"));
    let entries: Vec<(String, String)> =
        sorted(map).into_iter().filter(|(k, _)| !SKIP_ANNOTATIONS.contains(&k.as_str())).collect();
    if entries.is_empty() {
        w.line(0, "<none>\n");
        return;
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        if i != 0 {
            w.line(0, "\t");
        }
        let value = v.strip_suffix('\n').unwrap_or(v);
        if value.len() + k.len() + 2 > MAX_ANNOTATION_LEN || value.contains('\n') {
            w.line(0, &format!("{k}:\n"));
            for s in value.split('\n') {
                w.line(0, &format!("\t  {}\n", shorten(s, MAX_ANNOTATION_LEN - 2)));
            }
        } else {
            w.line(0, &format!("{k}: {value}\n"));
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn containers(w: &mut Out, label: &str, list: &[Value]) {
    let none = if list.is_empty() { " <none>" } else { "" };
    w.line(0, &format!("  {label}:{none}\n"));
    for c in list {
        basic_info(w, c);
        command(w, c);
        resources(w, &c["resources"]);
        for (title, key) in
            [("Liveness", "livenessProbe"), ("Readiness", "readinessProbe"), ("Startup", "startupProbe")]
        {
            if let Some(p) = c.get(key).filter(|p| p.is_object()) {
                w.line(2, &format!("{title}:\t{}\n", probe(p)));
            }
        }
        if !items(c, "envFrom").is_empty() {
            env_from(w, items(c, "envFrom"));
        }
        env(w, c);
        mounts(w, c);
    }
}

fn ports(list: &[Value], key: &str) -> String {
    let parts: Vec<String> = list
        .iter()
        .map(|p| {
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            format!("{}/{protocol}", int_of(p, key))
        })
        .collect();
    parts.join(", ")
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

fn basic_info(w: &mut Out, c: &Value) {
    w.line(1, &format!(" {}:\n", str_of(c, "name")));
    w.line(2, &format!("Image:\t{}\n", str_of(c, "image")));
    let p = ports(items(c, "ports"), "containerPort");
    if p.contains(',') {
        w.line(2, &format!("Ports:\t{p}\n"));
    } else {
        w.line(2, &format!("Port:\t{}\n", or_none(&p)));
    }
    let hp = ports(items(c, "ports"), "hostPort");
    if hp.contains(',') {
        w.line(2, &format!("Host Ports:\t{hp}\n"));
    } else {
        w.line(2, &format!("Host Port:\t{}\n", or_none(&hp)));
    }
    if let Some(profile) = c.pointer("/securityContext/seccompProfile").filter(|p| p.is_object()) {
        let kind = str_of(profile, "type");
        w.line(2, &format!("SeccompProfile:\t{kind}\n"));
        if kind == "Localhost" {
            w.line(3, &format!("LocalhostProfile:\t{}\n", str_of(profile, "localhostProfile")));
        }
    }
}

fn command(w: &mut Out, c: &Value) {
    for (title, key) in [("Command", "command"), ("Args", "args")] {
        let list = items(c, key);
        if list.is_empty() {
            continue;
        }
        w.line(2, &format!("{title}:\n"));
        for part in list {
            for s in part.as_str().unwrap_or("").split('\n') {
                w.line(3, &format!("{s}\n"));
            }
        }
    }
}

fn resources(w: &mut Out, r: &Value) {
    for (title, key) in [("Limits", "limits"), ("Requests", "requests")] {
        let entries = sorted(r.get(key));
        if entries.is_empty() {
            continue;
        }
        w.line(2, &format!("{title}:\n"));
        for (name, q) in entries {
            w.line(3, &format!("{name}:\t{q}\n"));
        }
    }
}

/// kubectl's `DescribeProbe`.
pub fn probe(p: &Value) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        int_of(p, "initialDelaySeconds"),
        int_of(p, "timeoutSeconds"),
        int_of(p, "periodSeconds"),
        int_of(p, "successThreshold"),
        int_of(p, "failureThreshold")
    );
    if let Some(exec) = p.get("exec").filter(|e| e.is_object()) {
        return format!("exec {} {attrs}", go_list(items(exec, "command")));
    }
    if let Some(h) = p.get("httpGet").filter(|e| e.is_object()) {
        let scheme = str_of(h, "scheme").to_lowercase();
        let port = int_or_string(h.get("port").unwrap_or(&Value::Null));
        let host = str_of(h, "host");
        let host = if port.is_empty() {
            host.to_string()
        } else if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        return format!("http-get {scheme}://{host}{} {attrs}", str_of(h, "path"));
    }
    if let Some(t) = p.get("tcpSocket").filter(|e| e.is_object()) {
        return format!(
            "tcp-socket {}:{} {attrs}",
            str_of(t, "host"),
            int_or_string(t.get("port").unwrap_or(&Value::Null))
        );
    }
    if let Some(g) = p.get("grpc").filter(|e| e.is_object()) {
        return format!("grpc <pod>:{} {} {attrs}", int_of(g, "port"), str_of(g, "service"));
    }
    format!("unknown {attrs}")
}

fn env_from(w: &mut Out, list: &[Value]) {
    w.line(2, "Environment Variables from:\n");
    for e in list {
        let (from, r) = if e.get("configMapRef").is_some_and(Value::is_object) {
            ("ConfigMap", &e["configMapRef"])
        } else {
            ("Secret", &e["secretRef"])
        };
        let optional = bool_of(r, "optional");
        let prefix = str_of(e, "prefix");
        if prefix.is_empty() {
            w.line(3, &format!("{}\t{from}\tOptional: {optional}\n", str_of(r, "name")));
        } else {
            w.line(3, &format!("{}\t{from} with prefix '{prefix}'\tOptional: {optional}\n", str_of(r, "name")));
        }
    }
}

fn env(w: &mut Out, c: &Value) {
    let list = items(c, "env");
    w.line(2, &format!("Environment:{}\n", if list.is_empty() { "\t<none>" } else { "" }));
    for e in list {
        let name = str_of(e, "name");
        let Some(from) = e.get("valueFrom").filter(|v| v.is_object()) else {
            for (i, s) in str_of(e, "value").split('\n').enumerate() {
                if i == 0 {
                    w.line(3, &format!("{name}:\t{s}\n"));
                } else {
                    w.line(3, &format!("\t{s}\n"));
                }
            }
            continue;
        };
        if let Some(f) = from.get("fieldRef").filter(|v| v.is_object()) {
            // A template has no pod to resolve the field from.
            w.line(3, &format!("{name}:\t ({}:{})\n", str_of(f, "apiVersion"), str_of(f, "fieldPath")));
        } else if let Some(r) = from.get("resourceFieldRef").filter(|v| v.is_object()) {
            let resource = str_of(r, "resource");
            let (section, key) = resource.split_once('.').unwrap_or(("", resource));
            let value = match c.pointer(&format!("/resources/{section}/{key}")) {
                Some(v) => int_or_string(v),
                None if section == "limits" && (key == "cpu" || key == "memory") => "node allocatable".into(),
                None => "0".into(),
            };
            w.line(3, &format!("{name}:\t{value} ({resource})\n"));
        } else if let Some(s) = from.get("secretKeyRef").filter(|v| v.is_object()) {
            w.line(
                3,
                &format!(
                    "{name}:\t<set to the key '{}' in secret '{}'>\tOptional: {}\n",
                    str_of(s, "key"),
                    str_of(s, "name"),
                    bool_of(s, "optional")
                ),
            );
        } else if let Some(m) = from.get("configMapKeyRef").filter(|v| v.is_object()) {
            w.line(
                3,
                &format!(
                    "{name}:\t<set to the key '{}' of config map '{}'>\tOptional: {}\n",
                    str_of(m, "key"),
                    str_of(m, "name"),
                    bool_of(m, "optional")
                ),
            );
        }
    }
}

fn mounts(w: &mut Out, c: &Value) {
    let mut list: Vec<&Value> = items(c, "volumeMounts").iter().collect();
    w.line(2, &format!("Mounts:{}\n", if list.is_empty() { "\t<none>" } else { "" }));
    list.sort_by(|a, b| str_of(a, "mountPath").cmp(str_of(b, "mountPath")));
    for m in list {
        let mut flags = vec![if bool_of(m, "readOnly") { "ro".to_string() } else { "rw".to_string() }];
        let sub = str_of(m, "subPath");
        if !sub.is_empty() {
            flags.push(format!("path={sub:?}"));
        }
        w.line(3, &format!("{} from {} ({})\n", str_of(m, "mountPath"), str_of(m, "name"), flags.join(",")));
    }
    let mut devices: Vec<&Value> = items(c, "volumeDevices").iter().collect();
    if !devices.is_empty() {
        w.line(2, "Devices:\n");
        devices.sort_by(|a, b| str_of(a, "devicePath").cmp(str_of(b, "devicePath")));
        for d in devices {
            w.line(3, &format!("{} from {}\n", str_of(d, "devicePath"), str_of(d, "name")));
        }
    }
}

fn volumes(w: &mut Out, list: &[Value]) {
    if list.is_empty() {
        w.line(0, "  Volumes:\t<none>\n");
        return;
    }
    w.line(0, "  Volumes:\n");
    for v in list {
        w.line(1, &format!(" {}:\n", str_of(v, "name")));
        let source = |key: &str| v.get(key).filter(|s| s.is_object());
        if let Some(h) = source("hostPath") {
            let kind = h.get("type").and_then(Value::as_str).unwrap_or("<none>");
            w.line(
                2,
                &format!(
                    "Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{kind}\n",
                    str_of(h, "path")
                ),
            );
        } else if let Some(e) = source("emptyDir") {
            let limit = e.get("sizeLimit").map(int_or_string).filter(|s| !s.is_empty() && s != "0");
            w.line(
                2,
                &format!(
                    "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{}\n",
                    str_of(e, "medium"),
                    limit.as_deref().unwrap_or("<unset>")
                ),
            );
        } else if let Some(s) = source("secret") {
            w.line(
                2,
                &format!(
                    "Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
                    str_of(s, "secretName"),
                    bool_of(s, "optional")
                ),
            );
        } else if let Some(m) = source("configMap") {
            w.line(
                2,
                &format!(
                    "Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n",
                    str_of(m, "name"),
                    bool_of(m, "optional")
                ),
            );
        } else if let Some(n) = source("nfs") {
            w.line(
                2,
                &format!(
                    "Type:\tNFS (an NFS mount that lasts the lifetime of a pod)\n    Server:\t{}\n    Path:\t{}\n    ReadOnly:\t{}\n",
                    str_of(n, "server"),
                    str_of(n, "path"),
                    bool_of(n, "readOnly")
                ),
            );
        } else if let Some(c) = source("persistentVolumeClaim") {
            w.line(
                2,
                &format!(
                    "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}\n",
                    str_of(c, "claimName"),
                    bool_of(c, "readOnly")
                ),
            );
        } else if let Some(d) = source("downwardAPI") {
            w.line(2, "Type:\tDownwardAPI (a volume populated by information about the pod)\n    Items:\n");
            for item in items(d, "items") {
                if let Some(f) = item.get("fieldRef").filter(|f| f.is_object()) {
                    w.line(3, &format!("{} -> {}\n", str_of(f, "fieldPath"), str_of(item, "path")));
                }
                if let Some(r) = item.get("resourceFieldRef").filter(|f| f.is_object()) {
                    w.line(3, &format!("{} -> {}\n", str_of(r, "resource"), str_of(item, "path")));
                }
            }
        } else if let Some(p) = source("projected") {
            w.line(2, "Type:\tProjected (a volume that contains injected data from multiple sources)\n");
            for s in items(p, "sources") {
                if let Some(sec) = s.get("secret").filter(|x| x.is_object()) {
                    w.line(
                        2,
                        &format!("SecretName:\t{}\n    Optional:\t{}\n", str_of(sec, "name"), bool_of(sec, "optional")),
                    );
                } else if s.get("downwardAPI").is_some_and(Value::is_object) {
                    w.line(2, "DownwardAPI:\ttrue\n");
                } else if let Some(cm) = s.get("configMap").filter(|x| x.is_object()) {
                    w.line(
                        2,
                        &format!(
                            "ConfigMapName:\t{}\n    Optional:\t{}\n",
                            str_of(cm, "name"),
                            bool_of(cm, "optional")
                        ),
                    );
                } else if let Some(t) = s.get("serviceAccountToken").filter(|x| x.is_object()) {
                    w.line(2, &format!("TokenExpirationSeconds:\t{}\n", int_of(t, "expirationSeconds")));
                }
            }
        } else {
            w.line(1, "<unknown>\n");
        }
    }
}

fn topology_spread(w: &mut Out, list: &[Value]) {
    if list.is_empty() {
        return;
    }
    let mut list: Vec<&Value> = list.iter().collect();
    list.sort_by(|a, b| str_of(a, "topologyKey").cmp(str_of(b, "topologyKey")));
    w.line(0, "  Topology Spread Constraints:\t");
    for (i, t) in list.iter().enumerate() {
        if i != 0 {
            w.line(0, "  \t");
        }
        let mut text = format!(
            "{}:{} when max skew {} is exceeded",
            str_of(t, "topologyKey"),
            str_of(t, "whenUnsatisfiable"),
            int_of(t, "maxSkew")
        );
        if let Some(sel) = t.get("labelSelector").filter(|s| s.is_object()) {
            text.push_str(&format!(" for selector {}", selector_string(sel).unwrap_or_else(|| "<none>".into())));
        }
        w.line(0, &format!("{text}\n"));
    }
}

/// kubectl's `printTolerationsMultiline`.
fn tolerations(w: &mut Out, title: &str, list: &[Value]) {
    w.line(0, &format!("{title}:\t"));
    if list.is_empty() {
        w.line(0, "<none>\n");
        return;
    }
    let mut list: Vec<&Value> = list.iter().collect();
    list.sort_by(|a, b| str_of(a, "key").cmp(str_of(b, "key")));
    for (i, t) in list.iter().enumerate() {
        if i != 0 {
            w.line(0, "\t");
        }
        let (key, value, effect) = (str_of(t, "key"), str_of(t, "value"), str_of(t, "effect"));
        let mut text = key.to_string();
        if !value.is_empty() {
            let _ = write!(text, "={value}");
        }
        if !effect.is_empty() {
            let _ = write!(text, ":{effect}");
        }
        if str_of(t, "operator") == "Exists" && value.is_empty() {
            text.push_str(if key.is_empty() && effect.is_empty() { "op=Exists" } else { " op=Exists" });
        }
        if let Some(secs) = t.get("tolerationSeconds").and_then(Value::as_i64) {
            let _ = write!(text, " for {secs}s");
        }
        w.line(0, &format!("{text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_simple_template() {
        let t = json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": "5c6b8c7b6d"},
                         "annotations": {"kubernetes.io/change-cause": "image 1.25"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
        });
        assert_eq!(
            describe(&t),
            "Pod Template:\n  Labels:\tapp=web\n\tpod-template-hash=5c6b8c7b6d\n  Annotations:\tkubernetes.io/change-cause: image 1.25\n  Containers:\n   web:\n    Image:\tnginx:1.25\n    Port:\t80/TCP\n    Host Port:\t0/TCP\n    Environment:\t<none>\n    Mounts:\t<none>\n  Volumes:\t<none>\n  Node-Selectors:\t<none>\n  Tolerations:\t<none>\n"
        );
    }

    #[test]
    fn a_full_template() {
        let t = json!({
            "metadata": {},
            "spec": {
                "serviceAccountName": "robot",
                "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c"], "args": ["echo a\necho b"]}],
                "containers": [{
                    "name": "app", "image": "app:2",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}],
                    "resources": {"limits": {"memory": "128Mi", "cpu": "500m"}, "requests": {"cpu": "100m"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                    "readinessProbe": {"exec": {"command": ["cat", "/ready"]}, "initialDelaySeconds": 5},
                    "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "s", "optional": true}, "prefix": "S_"}],
                    "env": [{"name": "A", "value": "1"}, {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/var/data"}, {"name": "cfg", "mountPath": "/etc/app", "readOnly": true, "subPath": "app.conf"}]
                }],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "app"}}, {"name": "host", "hostPath": {"path": "/srv"}}],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "b", "operator": "Exists", "effect": "NoSchedule"}, {"key": "a", "value": "x", "effect": "NoExecute", "tolerationSeconds": 30}],
                "priorityClassName": "high"
            }
        });
        let expected = "Pod Template:\n  Labels:\t<none>\n  Service Account:\trobot\n  Init Containers:\n   init:\n    Image:\tbusybox\n    Port:\t<none>\n    Host Port:\t<none>\n    Command:\n      sh\n      -c\n    Args:\n      echo a\n      echo b\n    Environment:\t<none>\n    Mounts:\t<none>\n  Containers:\n   app:\n    Image:\tapp:2\n    Ports:\t80/TCP, 53/UDP\n    Host Ports:\t0/TCP, 5353/UDP\n    Limits:\n      cpu:\t500m\n      memory:\t128Mi\n    Requests:\n      cpu:\t100m\n    Liveness:\thttp-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3\n    Readiness:\texec [cat /ready] delay=5s timeout=0s period=0s #success=0 #failure=0\n    Environment Variables from:\n      cfg\tConfigMap\tOptional: false\n      s\tSecret with prefix 'S_'\tOptional: true\n    Environment:\n      A:\t1\n      POD:\t (v1:metadata.name)\n      PW:\t<set to the key 'pw' in secret 'db'>\tOptional: false\n    Mounts:\n      /etc/app from cfg (ro,path=\"app.conf\")\n      /var/data from data (rw)\n  Volumes:\n   data:\n    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t\n    SizeLimit:\t<unset>\n   cfg:\n    Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\tapp\n    Optional:\tfalse\n   host:\n    Type:\tHostPath (bare host directory volume)\n    Path:\t/srv\n    HostPathType:\t<none>\n  Priority Class Name:\thigh\n  Node-Selectors:\tdisk=ssd\n  Tolerations:\ta=x:NoExecute for 30s\n\tb:NoSchedule op=Exists\n";
        assert_eq!(describe(&t), expected);
    }

    #[test]
    fn long_annotations_wrap() {
        let long = "x".repeat(150);
        let t = json!({"metadata": {"annotations": {"k": long, "m": "a\nb"}}, "spec": {"containers": []}});
        let text = describe(&t);
        assert!(
            text.contains(&format!("  Annotations:\tk:\n\t  {}...\n\tm:\n\t  a\n\t  b\n", "x".repeat(138))),
            "{text}"
        );
        assert!(text.contains("  Containers: <none>\n"), "{text}");
    }
}
