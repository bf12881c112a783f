//! What the commands that act on existing objects share (`label`, `annotate`, `scale`, `rollout`,
//! `set image`): turning `TYPE NAME`, `TYPE/NAME`, `-f`, `-l` and `--all` into the objects to act
//! on, reading them, patching them, and label selectors as query strings.

use std::io::Write;

use hyper::Method;
use serde_json::Value;

use super::{plan_manifests, request, Ctx};
use crate::client;
use crate::error::{Error, Result};
use crate::resources::{parse_targets, ApiResource};

/// The media types of the three patch kinds the server takes.
pub const MERGE_PATCH: &str = "application/merge-patch+json";
pub const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
pub const JSON_PATCH: &str = "application/json-patch+json";

/// How objects are chosen besides `TYPE NAME` arguments (kubectl's resource builder flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Files, folders, URLs or `-` naming the objects
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Process the folders given with -f recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Select the objects of the given type matching this label selector
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Select all objects of the given type in the namespace
    #[arg(long)]
    pub all: bool,
}

/// One existing object a command acts on.
#[derive(Debug, Clone)]
pub struct Subject {
    pub resource: ApiResource,
    pub namespace: String,
    pub name: String,
    /// The object when a list already returned it; `None` means it still has to be read.
    pub listed: Option<Value>,
}

impl Subject {
    pub fn path(&self) -> String {
        self.resource.item(&self.namespace, &self.name)
    }

    /// `deployment.apps/web`: how kubectl names an object in its messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.resource.kind_label(), self.name)
    }

    /// `deployments.apps`: how kubectl names the resource in `deployments.apps "web" ...` errors.
    pub fn resource_string(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.name.clone()
        } else {
            format!("{}.{}", self.resource.name, self.resource.group)
        }
    }

    /// `Deployment.apps`, or `Pod` for the core group: kubectl's `GroupKind` string.
    pub fn group_kind(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.kind.clone()
        } else {
            format!("{}.{}", self.resource.kind, self.resource.group)
        }
    }

    pub fn is_kind(&self, kind: &str) -> bool {
        self.resource.kind == kind
    }
}

/// Resolves `words` (`TYPE NAME...`, `TYPE/NAME...`) or `-f` files, with `-l`/`--all` for bare
/// types, to subjects. Files that cannot be read or mapped become errors in the second list.
pub async fn resolve(ctx: &mut Ctx, words: &[String], sel: &Selection) -> Result<(Vec<Subject>, Vec<Error>)> {
    let mut subjects = Vec::new();
    let mut errors = Vec::new();
    if !sel.files.is_empty() {
        if !words.is_empty() {
            return Err(Error::msg(
                "there is no need to specify a resource type as a separate argument when passing arguments with -f",
            ));
        }
        let (planned, errs) = plan_manifests(ctx, &sel.files, sel.recursive).await?;
        errors.extend(errs);
        for p in planned {
            match p.name {
                Some(name) if !name.is_empty() => {
                    subjects.push(Subject { resource: p.resource, namespace: p.namespace, name, listed: None })
                }
                _ => errors.push(Error::msg(format!("resource name may not be empty (from \"{}\")", p.source))),
            }
        }
        return Ok((subjects, errors));
    }
    if words.is_empty() {
        return Ok((subjects, errors));
    }
    let disc = ctx.discovery().await?.clone();
    let targets = parse_targets(&disc, words)?;
    for t in targets.targets {
        if t.names.is_empty() {
            for item in ctx.select(&t.resource, sel.all, sel.selector.as_ref()).await? {
                let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                let namespace = ctx.namespace.clone();
                subjects.push(Subject { resource: t.resource.clone(), namespace, name, listed: Some(item) });
            }
            continue;
        }
        if sel.all || sel.selector.is_some() {
            return Err(Error::msg("name cannot be provided when a selector is specified"));
        }
        for name in t.names {
            let namespace = ctx.namespace.clone();
            subjects.push(Subject { resource: t.resource.clone(), namespace, name, listed: None });
        }
    }
    Ok((subjects, errors))
}

/// The object itself: the listed copy, or a fresh GET.
pub async fn read(ctx: &mut Ctx, subject: &Subject) -> Result<Value> {
    match &subject.listed {
        Some(obj) => Ok(obj.clone()),
        None => ctx.get_json(&subject.path(), false).await,
    }
}

/// Sends a PATCH of the given media type and returns the updated object.
pub async fn patch(ctx: &mut Ctx, path: &str, content_type: &'static str, body: &Value) -> Result<Value> {
    let mut req = request(Method::PATCH, path, super::json_body(body));
    req.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    ctx.json(req).await
}

/// Keeps going over several objects as kubectl does: a refusal (the server's or the command's
/// own) is collected (`None`), anything else (the daemon is gone, a broken reply) ends the command.
pub fn collect<T>(result: Result<T>, errors: &mut Vec<Error>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e @ (Error::Status(_) | Error::Msg(_))) => {
            errors.push(e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Prints `deployment.apps/web <operation>` (kubectl's name printer with an operation).
pub fn done(ctx: &mut Ctx, subject: &Subject, operation: &str) -> Result<()> {
    writeln!(ctx.out, "{} {operation}", subject.label())?;
    Ok(())
}

/// Splits arguments into resource words and `KEY=VALUE`/`KEY-` pairs, kubectl's
/// `GetResourcesAndPairs`: every resource must come before the first pair.
pub fn resources_and_pairs(
    args: &[String],
    pair_type: &str,
) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let mut resources = Vec::new();
    let mut pairs = Vec::new();
    for a in args {
        let is_pair = (a.contains('=') && !a.starts_with('=')) || (a.ends_with('-') && a != "-");
        match (is_pair, pairs.is_empty()) {
            (true, _) => pairs.push(a.clone()),
            (false, true) => resources.push(a.clone()),
            (false, false) => return Err(format!("all resources must be specified before {pair_type} changes: {a}")),
        }
    }
    Ok((resources, pairs))
}

/// A `metav1.LabelSelector` (`matchLabels`, `matchExpressions`) as a selector string
/// (`app=web,tier in (a,b)`), requirements sorted by key as Kubernetes prints them.
/// `None` for an empty selector (which selects everything).
pub fn selector_string(sel: &Value) -> Option<String> {
    let mut terms: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("").to_string();
        let mut values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let term = match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        };
        terms.push((key, term));
    }
    if terms.is_empty() {
        return None;
    }
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    Some(terms.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(","))
}

/// Lists a collection in `namespace`, optionally with a label selector.
pub async fn list(ctx: &mut Ctx, collection: &str, selector: Option<&str>) -> Result<Vec<Value>> {
    let q: Vec<(&str, String)> = selector.map(|s| ("labelSelector", s.to_string())).into_iter().collect();
    let v = ctx.get_json(&format!("{collection}{}", client::query(&q)), false).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn pairs_come_after_resources() {
        assert_eq!(
            resources_and_pairs(&s(&["deploy", "web", "a=b", "c-"]), "image").unwrap(),
            (s(&["deploy", "web"]), s(&["a=b", "c-"]))
        );
        assert_eq!(resources_and_pairs(&s(&["deploy/web", "-"]), "image").unwrap().0, s(&["deploy/web", "-"]));
        assert_eq!(
            resources_and_pairs(&s(&["deploy", "a=b", "web"]), "image").unwrap_err(),
            "all resources must be specified before image changes: web"
        );
    }

    #[test]
    fn selectors_as_strings() {
        assert_eq!(
            selector_string(&json!({"matchLabels": {"tier": "fe", "app": "web"}})).as_deref(),
            Some("app=web,tier=fe")
        );
        assert_eq!(
            selector_string(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "Exists"},
                {"key": "b", "operator": "NotIn", "values": ["x"]}
            ]}))
            .as_deref(),
            Some("app=web,b notin (x),!canary,env in (dev,prod),zone")
        );
        assert_eq!(selector_string(&json!({})), None);
    }
}
