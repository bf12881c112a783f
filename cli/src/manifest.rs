//! Loading manifests from files, folders, stdin and http URLs into JSON objects.
//!
//! Every source is read and parsed before anything is sent: a file that fails
//! to parse contributes nothing and yields one error; the other files still load.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// One object to send, and the source it came from (a path, `STDIN` or a URL).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub source: String,
    pub object: Value,
}

/// What loading produced: the objects in order, and error lines (without `error: `).
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Manifest>,
    pub errors: Vec<String>,
}

/// Loads every `-f` argument in order. `-` reads stdin; folders hold *.yaml,
/// *.yml and *.json files, taken in name order (descending only when `recursive`).
pub async fn load(args: &[String], recursive: bool) -> Loaded {
    let mut loaded = Loaded::default();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            if let Err(e) = tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text).await {
                loaded.errors.push(format!("error reading STDIN: {e}"));
                continue;
            }
            add(&mut loaded, "STDIN", &text);
        } else if arg.starts_with("https://") {
            loaded.errors.push("https URLs are not supported yet: download the file and pass it with -f".to_string());
        } else if arg.starts_with("http://") {
            match fetch_url(arg).await {
                Ok(text) => add(&mut loaded, arg, &text),
                Err(e) => loaded.errors.push(e),
            }
        } else {
            let path = Path::new(arg);
            if !path.exists() {
                loaded.errors.push(format!("the path \"{arg}\" does not exist"));
                continue;
            }
            let files = if path.is_dir() {
                match walk(path, recursive) {
                    Ok(files) => files,
                    Err(e) => {
                        loaded.errors.push(format!("error reading \"{arg}\": {e}"));
                        continue;
                    }
                }
            } else {
                vec![path.to_path_buf()]
            };
            for file in files {
                let source = file.display().to_string();
                match std::fs::read(&file) {
                    Ok(bytes) => add(&mut loaded, &source, &String::from_utf8_lossy(&bytes)),
                    Err(e) => loaded.errors.push(format!("error reading \"{source}\": {e}")),
                }
            }
        }
    }
    loaded
}

fn add(loaded: &mut Loaded, source: &str, text: &str) {
    match parse(source, text) {
        Ok(objects) => {
            loaded.objects.extend(objects.into_iter().map(|object| Manifest { source: source.to_string(), object }))
        }
        Err(e) => loaded.errors.push(e),
    }
}

/// The manifest files of a folder, in name order, like kubectl's walk.
pub fn walk(dir: &Path, recursive: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
    entries.sort();
    let mut files = Vec::new();
    for path in entries {
        if path.is_dir() {
            if recursive {
                files.extend(walk(&path, recursive)?);
            }
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            files.push(path);
        }
    }
    Ok(files)
}

/// Parses one source's text (JSON or multi-document YAML) into objects,
/// expanding `List`s and skipping empty documents. Any error rejects the whole source.
pub fn parse(source: &str, text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    if text.trim_start().starts_with('{') {
        for (i, v) in serde_json::Deserializer::from_str(text).into_iter::<Value>().enumerate() {
            let v = v.map_err(|e| format!("error parsing {source}: document {}: {e}", i + 1))?;
            docs.push(v);
        }
    } else {
        for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            // The iterator would repeat a parse error forever: stop at the first one.
            let v = Value::deserialize(de).map_err(|e| format!("error parsing {source}: document {}: {e}", i + 1))?;
            docs.push(v);
        }
    }
    let mut objects = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        match doc {
            Value::Null => continue,
            Value::Object(ref map) if map.is_empty() => continue,
            Value::Object(_) => {}
            other => {
                return Err(format!(
                    "error parsing {source}: document {}: expected an object, found {}",
                    i + 1,
                    type_name(&other)
                ))
            }
        }
        let items = match doc.get("items") {
            Some(Value::Array(items))
                if doc.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) =>
            {
                items.clone()
            }
            _ => vec![doc],
        };
        for item in items {
            validate(source, &item)?;
            objects.push(item);
        }
    }
    Ok(objects)
}

fn validate(source: &str, obj: &Value) -> Result<(), String> {
    let mut missing = Vec::new();
    for field in ["apiVersion", "kind"] {
        if obj.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            missing.push(format!("{field} not set"));
        }
    }
    match missing.len() {
        0 => Ok(()),
        1 => Err(format!("error validating \"{source}\": error validating data: {}", missing[0])),
        _ => Err(format!("error validating \"{source}\": error validating data: [{}]", missing.join(", "))),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Downloads an http:// URL (no TLS) with one GET.
async fn fetch_url(url: &str) -> Result<String, String> {
    let fail = |e: String| format!("unable to read URL \"{url}\": {e}");
    let rest = &url["http://".len()..];
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&addr).await.map_err(|e| fail(e.to_string()))?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(crate::client::empty())
        .map_err(|e| fail(e.to_string()))?;
    let resp = crate::client::send_over(stream, req).await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("unable to read URL \"{url}\", server reported {status}, status code={}", status.as_u16()));
    }
    let body = crate::client::read_body(resp).await.map_err(|e| fail(e.to_string()))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shared/conformance` beside the repository (or `$SKERRY_CONFORMANCE`).
    fn conformance(rel: &str) -> String {
        let base = std::env::var("SKERRY_CONFORMANCE")
            .unwrap_or_else(|_| format!("{}/../../shared/conformance", env!("CARGO_MANIFEST_DIR")));
        assert!(Path::new(&base).is_dir(), "conformance manifests not found at {base}; set SKERRY_CONFORMANCE");
        format!("{base}/{rel}")
    }

    fn names(objs: &[Value]) -> Vec<String> {
        objs.iter()
            .map(|o| format!("{}/{}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap_or("")))
            .collect()
    }

    #[test]
    fn multi_document_yaml_skips_empty_documents() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n---\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n";
        let objs = parse("x.yaml", text).unwrap();
        assert_eq!(names(&objs), ["Pod/a", "Service/b"]);
    }

    #[test]
    fn list_is_expanded_in_yaml_and_json() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: b}\n";
        assert_eq!(names(&parse("l.yaml", yaml).unwrap()), ["Pod/a", "Pod/b"]);
        let json = r#"{"apiVersion":"v1","kind":"PodList","items":[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"c"}}]}"#;
        assert_eq!(names(&parse("l.json", json).unwrap()), ["Pod/c"]);
    }

    #[test]
    fn json_keeps_field_order() {
        let json = r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"s"},"spec":{}}"#;
        let objs = parse("s.json", json).unwrap();
        let keys: Vec<&String> = objs[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["kind", "apiVersion", "metadata", "spec"]);
    }

    #[test]
    fn missing_api_version_and_kind() {
        let e = parse("job.yaml", "metadata:\n  name: x\n").unwrap_err();
        assert_eq!(e, "error validating \"job.yaml\": error validating data: [apiVersion not set, kind not set]");
        let e = parse("job.yaml", "kind: Job\nmetadata:\n  name: x\n").unwrap_err();
        assert_eq!(e, "error validating \"job.yaml\": error validating data: apiVersion not set");
    }

    #[tokio::test]
    async fn guestbook_json_files() {
        let loaded = load(&[conformance("guestbook-go")], false).await;
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let objs: Vec<Value> = loaded.objects.iter().map(|m| m.object.clone()).collect();
        assert_eq!(
            names(&objs),
            [
                "ReplicationController/guestbook",
                "Service/guestbook",
                "ReplicationController/redis-master",
                "Service/redis-master",
                "ReplicationController/redis-slave",
                "Service/redis-slave"
            ]
        );
        assert!(loaded.objects[0].source.ends_with("guestbook-go/guestbook-controller.json"));
    }

    #[tokio::test]
    async fn folder_order_and_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let pod = |n: &str| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {n}\n");
        std::fs::write(dir.path().join("b.yaml"), pod("b")).unwrap();
        std::fs::write(dir.path().join("a.yml"), pod("a")).unwrap();
        std::fs::write(dir.path().join("c.txt"), pod("c")).unwrap();
        std::fs::create_dir(dir.path().join("aa")).unwrap();
        std::fs::write(dir.path().join("aa/z.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"z"}}"#)
            .unwrap();
        let arg = dir.path().display().to_string();
        let flat = load(std::slice::from_ref(&arg), false).await;
        let objs: Vec<Value> = flat.objects.iter().map(|m| m.object.clone()).collect();
        assert_eq!(names(&objs), ["Pod/a", "Pod/b"]);
        let deep = load(&[arg], true).await;
        let objs: Vec<Value> = deep.objects.iter().map(|m| m.object.clone()).collect();
        assert_eq!(names(&objs), ["Pod/a", "Pod/z", "Pod/b"]);
    }

    #[tokio::test]
    async fn malformed_yaml_names_file_document_and_line() {
        let file = conformance("seed-head/_invalid/stateful_applications/persistent-volume.yaml");
        let loaded = load(std::slice::from_ref(&file), false).await;
        assert!(loaded.objects.is_empty(), "nothing from a malformed file is kept");
        assert_eq!(loaded.errors.len(), 1);
        let e = &loaded.errors[0];
        assert!(e.starts_with(&format!("error parsing {file}: document 2: ")), "{e}");
        assert!(e.contains("line 29"), "{e}");

        let file = conformance(
            "seed-head/_invalid/Kubernetes_patterns/Foundational-Patterns/predictable_demands/volumes_pvc.yaml",
        );
        let loaded = load(std::slice::from_ref(&file), false).await;
        let e = &loaded.errors[0];
        assert!(e.starts_with(&format!("error parsing {file}: document 1: ")), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[tokio::test]
    async fn invalid_folder_loads_nothing_and_reports_each_file() {
        let loaded = load(&[conformance("seed-head/_invalid")], true).await;
        assert!(loaded.objects.is_empty(), "{:?}", loaded.objects);
        assert_eq!(loaded.errors.len(), 5, "{:#?}", loaded.errors);
        assert!(loaded.errors.iter().any(|e| e.contains("job.yaml\": error validating data: apiVersion not set")));
    }

    #[tokio::test]
    async fn missing_path_and_https() {
        let loaded = load(&["/nonexistent/x.yaml".into(), "https://example.invalid/x.yaml".into()], false).await;
        assert_eq!(
            loaded.errors,
            [
                "the path \"/nonexistent/x.yaml\" does not exist",
                "https URLs are not supported yet: download the file and pass it with -f"
            ]
        );
    }

    #[tokio::test]
    async fn http_url_is_fetched() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await.unwrap();
            let body = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n";
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            tokio::io::AsyncWriteExt::write_all(&mut s, resp.as_bytes()).await.unwrap();
        });
        let url = format!("http://{addr}/pod.yaml");
        let loaded = load(std::slice::from_ref(&url), false).await;
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        assert_eq!(loaded.objects[0].source, url);
        assert_eq!(loaded.objects[0].object["metadata"]["name"], "web");
    }
}
