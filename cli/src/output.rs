//! Printing: the output streams, kubectl-style table alignment, YAML, JSON and names.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Map, Value};

/// Where a command writes: stdout and stderr, or buffers in tests.
pub struct Io {
    pub out: Box<dyn Write + Send>,
    pub err: Box<dyn Write + Send>,
    /// Whether `out` is a terminal (for progress displays).
    pub tty: bool,
}

impl Io {
    pub fn std() -> Io {
        Io { out: Box::new(std::io::stdout()), err: Box::new(std::io::stderr()), tty: std::io::stdout().is_terminal() }
    }

    /// Buffers for tests: returns the Io and handles on what was written to out and err.
    pub fn capture() -> (Io, SharedBuf, SharedBuf) {
        let out = SharedBuf::default();
        let err = SharedBuf::default();
        (Io { out: Box::new(out.clone()), err: Box::new(err.clone()), tty: false }, out, err)
    }
}

/// A cloneable in-memory writer.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The output formats of `get` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl Format {
    pub fn parse(s: Option<&str>) -> Result<Format, String> {
        Ok(match s {
            None | Some("") => Format::Table,
            Some("wide") => Format::Wide,
            Some("yaml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("name") => Format::Name,
            Some(other) => {
                return Err(format!(
                    "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,wide,yaml"
                ))
            }
        })
    }
}

/// Serializes a value as kubectl does: JSON indented by 4 spaces, or YAML.
pub fn render(value: &Value, format: Format) -> String {
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            value.serialize(&mut ser).expect("a JSON value always serializes");
            buf.push(b'\n');
            String::from_utf8(buf).expect("serde_json writes UTF-8")
        }
        _ => serde_yaml_ng::to_string(value).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n")),
    }
}

/// Wraps objects in the `List` kubectl prints for several objects.
pub fn list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
}

/// Puts `apiVersion` and `kind` first in an object that lacks them (list items do).
pub fn with_type(obj: Value, api_version: &str, kind: &str) -> Value {
    let Value::Object(map) = obj else { return obj };
    if map.contains_key("kind") && map.contains_key("apiVersion") {
        return Value::Object(map);
    }
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String(kind.into()));
    for (k, v) in map {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// A `meta.k8s.io/v1` Table as the server returns it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Table {
    pub column_definitions: Vec<Column>,
    pub rows: Vec<Row>,
    pub metadata: Value,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Column {
    pub name: String,
    pub priority: i32,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct Row {
    pub cells: Vec<Value>,
    pub object: Value,
}

/// How a table is decorated on the client, as kubectl does.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    pub wide: bool,
    pub no_headers: bool,
    /// Leading NAMESPACE column (`-A`).
    pub namespace_column: bool,
    /// Trailing LABELS column (`--show-labels`).
    pub show_labels: bool,
    /// One column per label key (`-L`).
    pub label_columns: Vec<String>,
    /// Prefix for the name column (`pod`) when several types are printed.
    pub kind_prefix: Option<String>,
}

impl Table {
    /// The header and rows as plain strings, with the client-side columns added.
    pub fn render(&self, opts: &TableOptions) -> Vec<Vec<String>> {
        let shown: Vec<usize> = (0..self.column_definitions.len())
            .filter(|&i| opts.wide || self.column_definitions[i].priority == 0)
            .collect();
        let name_col = self.column_definitions.iter().position(|c| c.name.eq_ignore_ascii_case("name")).unwrap_or(0);
        let mut lines = Vec::new();
        if !opts.no_headers {
            let mut header = Vec::new();
            if opts.namespace_column {
                header.push("NAMESPACE".to_string());
            }
            header.extend(shown.iter().map(|&i| self.column_definitions[i].name.to_uppercase()));
            header.extend(opts.label_columns.iter().map(|k| k.rsplit('/').next().unwrap_or(k).to_uppercase()));
            if opts.show_labels {
                header.push("LABELS".to_string());
            }
            lines.push(header);
        }
        for row in &self.rows {
            let meta = &row.object["metadata"];
            let mut line = Vec::new();
            if opts.namespace_column {
                line.push(meta["namespace"].as_str().unwrap_or("").to_string());
            }
            for &i in &shown {
                let mut cell = cell_text(row.cells.get(i).unwrap_or(&Value::Null));
                if i == name_col {
                    if let Some(kind) = &opts.kind_prefix {
                        cell = format!("{kind}/{cell}");
                    }
                }
                line.push(cell);
            }
            let labels = meta["labels"].as_object();
            for key in &opts.label_columns {
                line.push(labels.and_then(|l| l.get(key)).and_then(Value::as_str).unwrap_or("").to_string());
            }
            if opts.show_labels {
                line.push(labels_text(labels));
            }
            lines.push(line);
        }
        lines
    }
}

/// `k=v,k2=v2` sorted by key, or `<none>`.
pub fn labels_text(labels: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = labels
        .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs.join(",")
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".to_string(),
        other => other.to_string(),
    }
}

/// kubectl's tabwriter: minimum cell width 6, padding 3, the last column unpadded.
const MIN_WIDTH: usize = 6;
const PADDING: usize = 3;

/// The width of each column but the last, as kubectl's tabwriter computes it.
pub fn column_widths(lines: &[Vec<String>]) -> Vec<usize> {
    let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
    (0..cols.saturating_sub(1))
        .map(|c| {
            let w = lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0);
            (w + PADDING).max(MIN_WIDTH)
        })
        .collect()
}

/// Formats one line with the given widths (a cell wider than its column pushes the rest).
pub fn format_line(line: &[String], widths: &[usize]) -> String {
    let mut s = String::new();
    for (i, cell) in line.iter().enumerate() {
        if i + 1 < line.len() {
            let w = widths.get(i).copied().unwrap_or(0).max(cell.chars().count() + PADDING);
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        } else {
            s.push_str(cell);
        }
    }
    s.push('\n');
    s
}

/// Aligns lines into columns as kubectl does.
pub fn align(lines: &[Vec<String>]) -> String {
    let widths = column_widths(lines);
    lines.iter().map(|l| format_line(l, &widths)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> Table {
        serde_json::from_value(json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "Ready", "type": "string", "priority": 0},
                {"name": "Status", "type": "string", "priority": 0},
                {"name": "Restarts", "type": "integer", "priority": 0},
                {"name": "Age", "type": "string", "priority": 0},
                {"name": "IP", "type": "string", "priority": 1}
            ],
            "rows": [
                {"cells": ["webapp", "1/1", "Running", 0, "5m", "10.42.0.5"],
                 "object": {"metadata": {"name": "webapp", "namespace": "default", "labels": {"b": "2", "a": "1"}}}},
                {"cells": ["queue-longer-name", "0/1", "Pending", 12, "3h", null],
                 "object": {"metadata": {"name": "queue-longer-name", "namespace": "kube-system"}}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn aligns_like_kubectl() {
        let t = table();
        let text = align(&t.render(&TableOptions::default()));
        assert_eq!(
            text,
            "NAME                READY   STATUS    RESTARTS   AGE\n\
             webapp              1/1     Running   0          5m\n\
             queue-longer-name   0/1     Pending   12         3h\n"
        );
    }

    #[test]
    fn min_width_applies_to_narrow_columns() {
        let lines = vec![vec!["A".to_string(), "B".to_string()], vec!["x".to_string(), "y".to_string()]];
        assert_eq!(align(&lines), "A     B\nx     y\n");
    }

    #[test]
    fn wide_namespace_labels_and_kind() {
        let t = table();
        let opts = TableOptions {
            wide: true,
            namespace_column: true,
            show_labels: true,
            kind_prefix: Some("pod".into()),
            ..Default::default()
        };
        let text = align(&t.render(&opts));
        assert_eq!(
            text,
            "NAMESPACE     NAME                    READY   STATUS    RESTARTS   AGE   IP          LABELS\n\
             default       pod/webapp              1/1     Running   0          5m    10.42.0.5   a=1,b=2\n\
             kube-system   pod/queue-longer-name   0/1     Pending   12         3h    <none>      <none>\n"
        );
    }

    #[test]
    fn label_columns_and_no_headers() {
        let t = table();
        let opts = TableOptions { no_headers: true, label_columns: vec!["a".into()], ..Default::default() };
        let lines = t.render(&opts);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].last().unwrap(), "1");
        assert_eq!(lines[1].last().unwrap(), "");
    }

    #[test]
    fn json_uses_four_spaces_and_list_shape() {
        let v = list(vec![with_type(json!({"metadata": {"name": "a"}}), "v1", "Pod")]);
        let text = render(&v, Format::Json);
        assert!(text.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"List\",\n    \"items\": [\n        {\n            \"apiVersion\": \"v1\",\n            \"kind\": \"Pod\""), "{text}");
        let yaml = render(&v, Format::Yaml);
        assert!(yaml.starts_with("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n"), "{yaml}");
    }
}
