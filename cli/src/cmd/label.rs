//! `skerry label`: adds, changes or removes labels with a JSON merge patch, checking overwrites first.

use std::io::Write;

use hyper::Method;
use serde_json::{Map, Value};

use super::{json_body, request, Ctx};
use crate::error::{Error, Result};
use crate::resources::parse_targets;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE NAME... KEY=VALUE... KEY-... (or TYPE/NAME)
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Allow changing a label that already has a value
    #[arg(long)]
    pub overwrite: bool,
    /// Label the objects matching this label selector
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Label all objects of the type in the namespace
    #[arg(long)]
    pub all: bool,
}

/// One label change: set `key` to a value, or remove it (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<String>,
}

fn is_label_arg(a: &str) -> bool {
    a.contains('=') || (a.ends_with('-') && a.len() > 1)
}

/// Splits the arguments into resource words and label changes, validating the changes.
pub fn split_args(args: &[String]) -> std::result::Result<(Vec<String>, Vec<Change>), String> {
    let first_label = args.iter().position(|a| is_label_arg(a)).unwrap_or(args.len());
    let (resources, labels) = args.split_at(first_label);
    let mut changes = Vec::new();
    for spec in labels {
        if let Some((key, value)) = spec.split_once('=') {
            if value.contains('=') {
                return Err(format!("invalid label spec: {spec}"));
            }
            if let Err(e) = validate_key(key) {
                return Err(format!("invalid label spec: {spec}: {e}"));
            }
            if let Err(e) = validate_value(value) {
                return Err(format!("invalid label value: \"{spec}\": {e}"));
            }
            changes.push(Change { key: key.to_string(), value: Some(value.to_string()) });
        } else if let Some(key) = spec.strip_suffix('-') {
            if let Err(e) = validate_key(key) {
                return Err(format!("invalid label spec: {spec}: {e}"));
            }
            changes.push(Change { key: key.to_string(), value: None });
        } else {
            return Err(format!("invalid label spec: {spec}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for c in &changes {
        if !seen.insert(&c.key) {
            return Err(format!("can not both modify and remove a label in the same command: {}", c.key));
        }
    }
    if changes.is_empty() {
        return Err("at least one label update is required".to_string());
    }
    Ok((resources.to_vec(), changes))
}

const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A qualified name: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters.
pub fn validate_key(key: &str) -> std::result::Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !is_dns_subdomain(p) {
            return Err("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
        }
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !is_name_part(name) {
        return Err(NAME_MSG.into());
    }
    Ok(())
}

pub fn validate_value(value: &str) -> std::result::Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !is_name_part(value) {
        return Err(VALUE_MSG.into());
    }
    Ok(())
}

/// What a change does to an object's labels: the message kubectl prints, or the overwrite error.
pub fn outcome(current: Option<&Map<String, Value>>, changes: &[Change], overwrite: bool) -> std::result::Result<&'static str, String> {
    let get = |k: &str| current.and_then(|l| l.get(k)).and_then(Value::as_str);
    let mut added = false;
    let mut removed = false;
    for c in changes {
        match &c.value {
            Some(v) => match get(&c.key) {
                Some(old) if old != v => {
                    if !overwrite {
                        return Err(format!("'{}' already has a value ({old}), and --overwrite is false", c.key));
                    }
                    added = true;
                }
                Some(_) => {}
                None => added = true,
            },
            None => removed |= get(&c.key).is_some(),
        }
    }
    Ok(match (added, removed) {
        (false, false) => "not labeled",
        (false, true) => "unlabeled",
        _ => "labeled",
    })
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let (words, changes) = split_args(&args.args).map_err(Error::Msg)?;
    if words.is_empty() {
        return Err(Error::msg("one or more resources must be specified as <resource> <name> or <resource>/<name>"));
    }
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, &words)?;
    let mut objects = Vec::new();
    for t in &targets.targets {
        if t.names.is_empty() {
            for item in ctx.select(&t.resource, args.all, args.selector.as_ref()).await? {
                let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                objects.push((t.resource.clone(), name, Some(item)));
            }
        } else {
            objects.extend(t.names.iter().map(|n| (t.resource.clone(), n.clone(), None)));
        }
    }
    if objects.is_empty() {
        writeln!(ctx.err, "No resources found")?;
        return Ok(());
    }
    let mut patch_labels = Map::new();
    for c in &changes {
        patch_labels.insert(c.key.clone(), c.value.clone().map(Value::String).unwrap_or(Value::Null));
    }
    let patch = serde_json::json!({"metadata": {"labels": patch_labels}});
    let mut errors = Vec::new();
    for (res, name, listed) in objects {
        let path = res.item(&ctx.namespace, &name);
        let current = match listed {
            Some(obj) => obj,
            None => match ctx.get_json(&path, false).await {
                Ok(obj) => obj,
                Err(e @ Error::Status(_)) => {
                    errors.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let labels = current["metadata"]["labels"].as_object();
        for c in changes.iter().filter(|c| c.value.is_none()) {
            if !labels.is_some_and(|l| l.contains_key(&c.key)) {
                writeln!(ctx.err, "label \"{}\" not found.", c.key)?;
            }
        }
        let message = match outcome(labels, &changes, args.overwrite) {
            Ok(m) => m,
            Err(e) => {
                errors.push(Error::Msg(e));
                continue;
            }
        };
        if message != "not labeled" {
            let mut req = request(Method::PATCH, &path, json_body(&patch));
            req.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/merge-patch+json"),
            );
            match ctx.json(req).await {
                Ok(_) => {}
                Err(e @ Error::Status(_)) => {
                    errors.push(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        writeln!(ctx.out, "{}/{name} {message}", res.kind_label())?;
    }
    super::finish(ctx, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_resources_and_changes() {
        let (res, changes) = split_args(&s(&["pods", "webapp", "k=v", "example.com/k2=v2", "k3-"])).unwrap();
        assert_eq!(res, s(&["pods", "webapp"]));
        assert_eq!(
            changes,
            vec![
                Change { key: "k".into(), value: Some("v".into()) },
                Change { key: "example.com/k2".into(), value: Some("v2".into()) },
                Change { key: "k3".into(), value: None },
            ]
        );
        let (_, changes) = split_args(&s(&["pod/webapp", "empty="])).unwrap();
        assert_eq!(changes[0].value.as_deref(), Some(""));
    }

    #[test]
    fn rejects_bad_specs() {
        assert_eq!(split_args(&s(&["po", "x", "a=b=c"])).unwrap_err(), "invalid label spec: a=b=c");
        assert!(split_args(&s(&["po", "x", "-bad=v"])).unwrap_err().starts_with("invalid label spec: -bad=v"));
        assert!(split_args(&s(&["po", "x", "k=-v"])).unwrap_err().starts_with("invalid label value: \"k=-v\""));
        assert!(split_args(&s(&["po", "x", &format!("k={}", "a".repeat(64))])).is_err());
        assert!(split_args(&s(&["po", "x", "Bad_Prefix/k=v"])).is_err());
        assert!(split_args(&s(&["po", "x"])).is_err());
        assert!(split_args(&s(&["po", "x", "k=v", "k-"])).is_err());
    }

    #[test]
    fn outcomes() {
        let cur = json!({"app": "web", "tier": "db"});
        let cur = cur.as_object();
        let set = |k: &str, v: &str| Change { key: k.into(), value: Some(v.into()) };
        let del = |k: &str| Change { key: k.into(), value: None };
        assert_eq!(outcome(cur, &[set("new", "1")], false), Ok("labeled"));
        assert_eq!(outcome(cur, &[set("app", "web")], false), Ok("not labeled"));
        assert_eq!(
            outcome(cur, &[set("app", "api")], false),
            Err("'app' already has a value (web), and --overwrite is false".to_string())
        );
        assert_eq!(outcome(cur, &[set("app", "api")], true), Ok("labeled"));
        assert_eq!(outcome(cur, &[del("tier")], false), Ok("unlabeled"));
        assert_eq!(outcome(cur, &[del("missing")], false), Ok("not labeled"));
        assert_eq!(outcome(None, &[set("a", "b")], false), Ok("labeled"));
    }
}
