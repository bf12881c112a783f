//! `skerry label` and `skerry annotate`: add, change or remove labels or annotations with a JSON
//! merge patch, checking overwrites first. The two commands differ only in [`Field`].

use std::io::Write;

use serde_json::{Map, Value};

use super::objects::{self, Selection, MERGE_PATCH};
use super::Ctx;
use crate::error::{Error, Result};

/// The arguments of `label` and `annotate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TYPE NAME... KEY=VALUE... KEY-... (or TYPE/NAME, or -f FILE with the changes only)
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Allow changing a key that already has a value
    #[arg(long)]
    pub overwrite: bool,
    /// Change the object only if it is still at this resourceVersion (a single object only)
    #[arg(long)]
    pub resource_version: Option<String>,
    #[command(flatten)]
    pub select: Selection,
}

/// Which metadata map a command edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Field::Labels => "label",
            Field::Annotations => "annotation",
        }
    }
}

/// The annotation kubectl lets `annotate` overwrite without `--overwrite`.
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// One change: set `key` to a value, or remove it (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub value: Option<String>,
}

/// Splits the arguments into resource words and changes, validating the changes as kubectl
/// does for `field` (label keys and values are checked here; annotation values are free text).
pub fn split_args(args: &[String], field: Field) -> std::result::Result<(Vec<String>, Vec<Change>), String> {
    let (resources, specs) = objects::resources_and_pairs(args, field.noun())?;
    let mut changes: Vec<Change> = Vec::new();
    for spec in &specs {
        let change = match field {
            Field::Labels => label_change(spec)?,
            Field::Annotations => match spec.split_once('=') {
                Some((key, value)) if !spec.starts_with('=') => Change { key: key.into(), value: Some(value.into()) },
                _ => match spec.strip_suffix('-') {
                    Some(key) if !key.is_empty() => Change { key: key.into(), value: None },
                    _ => return Err(format!("invalid annotation format: {spec}")),
                },
            },
        };
        // A repeated key of the same sort replaces the earlier one, as kubectl's map does.
        match changes.iter_mut().find(|c| c.key == change.key && c.value.is_some() == change.value.is_some()) {
            Some(old) => *old = change,
            None => changes.push(change),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let both: Vec<&str> = changes.iter().filter(|c| !seen.insert(&c.key)).map(|c| c.key.as_str()).collect();
    if let Some(key) = both.first() {
        return Err(match field {
            Field::Labels => format!("can not both modify and remove a label in the same command: {key}"),
            Field::Annotations => format!(
                "can not both modify and remove the following annotation(s) in the same command: {}",
                both.join(", ")
            ),
        });
    }
    if changes.is_empty() {
        return Err(format!("at least one {} update is required", field.noun()));
    }
    Ok((resources, changes))
}

fn label_change(spec: &str) -> std::result::Result<Change, String> {
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
        return Ok(Change { key: key.to_string(), value: Some(value.to_string()) });
    }
    match spec.strip_suffix('-') {
        Some(key) => {
            if let Err(e) = validate_key(key) {
                return Err(format!("invalid label spec: {spec}: {e}"));
            }
            Ok(Change { key: key.to_string(), value: None })
        }
        None => Err(format!("invalid label spec: {spec}")),
    }
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

/// What the changes do to an object's current map: the operation kubectl prints, or the
/// overwrite error. `annotate` always says `annotated` and may overwrite the change-cause.
pub fn outcome(
    current: Option<&Map<String, Value>>,
    changes: &[Change],
    overwrite: bool,
    field: Field,
) -> std::result::Result<&'static str, String> {
    let get = |k: &str| current.and_then(|l| l.get(k)).and_then(Value::as_str);
    let mut conflicts = Vec::new();
    let mut added = false;
    let mut removed = false;
    for c in changes {
        match &c.value {
            Some(v) => match get(&c.key) {
                Some(old) if old != v => {
                    let exempt = field == Field::Annotations && c.key == CHANGE_CAUSE;
                    if !(overwrite || exempt) {
                        conflicts.push(format!("'{}' already has a value ({old})", c.key));
                    }
                    added = true;
                }
                Some(_) => {}
                None => added = true,
            },
            None => removed |= get(&c.key).is_some(),
        }
    }
    if let Some(first) = conflicts.first() {
        return Err(match field {
            Field::Labels => format!("{first}, and --overwrite is false"),
            Field::Annotations => {
                format!("--overwrite is false but found the following declared annotation(s): {}", conflicts.join("; "))
            }
        });
    }
    Ok(match (field, added, removed) {
        (Field::Annotations, ..) => "annotated",
        (Field::Labels, false, false) => "not labeled",
        (Field::Labels, false, true) => "unlabeled",
        (Field::Labels, ..) => "labeled",
    })
}

/// Runs `label` (`Field::Labels`) or `annotate` (`Field::Annotations`).
pub async fn run(ctx: &mut Ctx, args: Args, field: Field) -> Result<()> {
    let (words, changes) = split_args(&args.args, field).map_err(Error::Msg)?;
    if words.is_empty() && args.select.files.is_empty() {
        return Err(Error::msg("one or more resources must be specified as <resource> <name> or <resource>/<name>"));
    }
    let (subjects, mut errors) = objects::resolve(ctx, &words, &args.select).await?;
    if subjects.is_empty() && errors.is_empty() {
        writeln!(ctx.err, "No resources found")?;
        return Ok(());
    }
    if args.resource_version.is_some() && subjects.len() > 1 {
        return Err(Error::msg("--resource-version may only be used with a single resource"));
    }
    let mut map = Map::new();
    for c in &changes {
        map.insert(c.key.clone(), c.value.clone().map(Value::String).unwrap_or(Value::Null));
    }
    let mut patch = serde_json::json!({"metadata": {field.key(): map}});
    if let Some(rv) = &args.resource_version {
        patch["metadata"]["resourceVersion"] = Value::String(rv.clone());
    }
    for subject in subjects {
        let Some(current) = objects::collect(objects::read(ctx, &subject).await, &mut errors)? else { continue };
        let existing = current["metadata"][field.key()].as_object();
        if field == Field::Labels {
            for c in changes.iter().filter(|c| c.value.is_none()) {
                if !existing.is_some_and(|l| l.contains_key(&c.key)) {
                    writeln!(ctx.err, "label \"{}\" not found.", c.key)?;
                }
            }
        }
        let operation = match outcome(existing, &changes, args.overwrite, field) {
            Ok(m) => m,
            Err(e) => {
                errors.push(Error::Msg(e));
                continue;
            }
        };
        if operation != "not labeled" {
            let sent = objects::patch(ctx, &subject.path(), MERGE_PATCH, &patch).await;
            if objects::collect(sent, &mut errors)?.is_none() {
                continue;
            }
        }
        objects::done(ctx, &subject, operation)?;
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
        let (res, changes) =
            split_args(&s(&["pods", "webapp", "k=v", "example.com/k2=v2", "k3-"]), Field::Labels).unwrap();
        assert_eq!(res, s(&["pods", "webapp"]));
        assert_eq!(
            changes,
            vec![
                Change { key: "k".into(), value: Some("v".into()) },
                Change { key: "example.com/k2".into(), value: Some("v2".into()) },
                Change { key: "k3".into(), value: None },
            ]
        );
        let (_, changes) = split_args(&s(&["pod/webapp", "empty="]), Field::Labels).unwrap();
        assert_eq!(changes[0].value.as_deref(), Some(""));
    }

    #[test]
    fn rejects_bad_label_specs() {
        let labels = |v: &[&str]| split_args(&s(v), Field::Labels);
        assert_eq!(labels(&["po", "x", "a=b=c"]).unwrap_err(), "invalid label spec: a=b=c");
        assert!(labels(&["po", "x", "-bad=v"]).unwrap_err().starts_with("invalid label spec: -bad=v"));
        assert!(labels(&["po", "x", "k=-v"]).unwrap_err().starts_with("invalid label value: \"k=-v\""));
        assert!(labels(&["po", "x", &format!("k={}", "a".repeat(64))]).is_err());
        assert!(labels(&["po", "x", "Bad_Prefix/k=v"]).is_err());
        assert_eq!(labels(&["po", "x"]).unwrap_err(), "at least one label update is required");
        assert!(labels(&["po", "x", "k=v", "k-"]).is_err());
        assert_eq!(labels(&["po", "k=v", "x"]).unwrap_err(), "all resources must be specified before label changes: x");
    }

    #[test]
    fn annotation_specs_take_any_value() {
        let (res, changes) = split_args(
            &s(&["deploy/web", "kubernetes.io/change-cause=image=nginx:1.25 for a=b", "old-"]),
            Field::Annotations,
        )
        .unwrap();
        assert_eq!(res, s(&["deploy/web"]));
        assert_eq!(changes[0].value.as_deref(), Some("image=nginx:1.25 for a=b"));
        assert_eq!(changes[1], Change { key: "old".into(), value: None });
        assert_eq!(
            split_args(&s(&["po", "x", "a=1", "a-", "b=2", "b-"]), Field::Annotations).unwrap_err(),
            "can not both modify and remove the following annotation(s) in the same command: a, b"
        );
        assert_eq!(
            split_args(&s(&["po", "x"]), Field::Annotations).unwrap_err(),
            "at least one annotation update is required"
        );
        let (_, changes) = split_args(&s(&["po", "x", "a=1", "a=2"]), Field::Annotations).unwrap();
        assert_eq!(changes, vec![Change { key: "a".into(), value: Some("2".into()) }]);
    }

    #[test]
    fn label_outcomes() {
        let cur = json!({"app": "web", "tier": "db"});
        let cur = cur.as_object();
        let set = |k: &str, v: &str| Change { key: k.into(), value: Some(v.into()) };
        let del = |k: &str| Change { key: k.into(), value: None };
        let l = Field::Labels;
        assert_eq!(outcome(cur, &[set("new", "1")], false, l), Ok("labeled"));
        assert_eq!(outcome(cur, &[set("app", "web")], false, l), Ok("not labeled"));
        assert_eq!(
            outcome(cur, &[set("app", "api")], false, l),
            Err("'app' already has a value (web), and --overwrite is false".to_string())
        );
        assert_eq!(outcome(cur, &[set("app", "api")], true, l), Ok("labeled"));
        assert_eq!(outcome(cur, &[del("tier")], false, l), Ok("unlabeled"));
        assert_eq!(outcome(cur, &[del("missing")], false, l), Ok("not labeled"));
        assert_eq!(outcome(None, &[set("a", "b")], false, l), Ok("labeled"));
    }

    #[test]
    fn annotation_outcomes() {
        let cur = json!({"a": "1", "b": "2", CHANGE_CAUSE: "first"});
        let cur = cur.as_object();
        let set = |k: &str, v: &str| Change { key: k.into(), value: Some(v.into()) };
        let a = Field::Annotations;
        assert_eq!(outcome(cur, &[set("a", "1")], false, a), Ok("annotated"));
        assert_eq!(outcome(cur, &[set(CHANGE_CAUSE, "second")], false, a), Ok("annotated"));
        assert_eq!(
            outcome(cur, &[set("a", "x"), set("b", "y")], false, a),
            Err("--overwrite is false but found the following declared annotation(s): 'a' already has a value (1); 'b' already has a value (2)".to_string())
        );
        assert_eq!(outcome(cur, &[set("a", "x")], true, a), Ok("annotated"));
    }
}
