//! `skerry set image`: changes container images with a strategic merge patch of the pod spec
//! (`spec` of a pod, `spec.template.spec` of a workload) naming only the containers whose image
//! changes, as kubectl's computed patch does. `*=IMAGE` sets every container.

use serde_json::{json, Map, Value};

use crate::cmd::objects::{self, Selection, STRATEGIC_PATCH};
use crate::cmd::Ctx;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// (TYPE NAME | TYPE/NAME | -f FILE) CONTAINER=IMAGE... (`*=IMAGE` for every container)
    #[arg(required = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub select: Selection,
}

/// The container lists of a pod spec, in the order kubectl updates them.
const LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Where an object keeps its pod spec, or kubectl's refusal for objects without one.
fn pod_spec_pointer(obj: &Value) -> std::result::Result<&'static str, String> {
    let kind = obj["kind"].as_str().unwrap_or("");
    match kind {
        "Pod" => Ok("/spec"),
        "CronJob" => Ok("/spec/jobTemplate/spec/template/spec"),
        _ if obj.pointer("/spec/template").is_some_and(Value::is_object) => Ok("/spec/template/spec"),
        _ => {
            let version = obj["apiVersion"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string();
            Err(format!("the object is not a pod or does not have a pod template: *{version}.{kind}"))
        }
    }
}

/// Parses `CONTAINER=IMAGE` pairs (kubectl's `ParsePairs` without removals).
pub fn parse_images(pairs: &[String]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut images: Vec<(String, String)> = Vec::new();
    let mut invalid = Vec::new();
    for p in pairs {
        match p.split_once('=') {
            Some((name, image)) if !name.is_empty() => match images.iter_mut().find(|(n, _)| n == name) {
                Some(old) => old.1 = image.to_string(),
                None => images.push((name.to_string(), image.to_string())),
            },
            _ => invalid.push(p.as_str()),
        }
    }
    if !invalid.is_empty() {
        return Err(format!("invalid image format: {}", invalid.join(", ")));
    }
    Ok(images)
}

/// The strategic merge patch that sets the images (`None` when nothing changes) and the
/// container names that matched no container.
pub fn image_patch(
    obj: &Value,
    images: &[(String, String)],
) -> std::result::Result<(Option<Value>, Vec<String>), String> {
    let pointer = pod_spec_pointer(obj)?;
    let spec = obj.pointer(pointer).cloned().unwrap_or_else(|| json!({}));
    let mut lists: Map<String, Value> = Map::new();
    let mut missing = Vec::new();
    for (name, image) in images {
        let mut found = false;
        for list in LISTS {
            for c in spec[list].as_array().into_iter().flatten() {
                let cname = c["name"].as_str().unwrap_or("");
                if cname != name && name != "*" {
                    continue;
                }
                found = true;
                if c["image"].as_str() == Some(image.as_str()) {
                    continue;
                }
                let entries = lists.entry(list).or_insert_with(|| json!([])).as_array_mut().expect("an array");
                match entries.iter_mut().find(|e| e["name"] == cname) {
                    Some(e) => e["image"] = json!(image),
                    None => entries.push(json!({"image": image, "name": cname})),
                }
            }
        }
        if !found {
            missing.push(name.clone());
        }
    }
    if lists.is_empty() {
        return Ok((None, missing));
    }
    let mut patch = Value::Object(lists);
    for segment in pointer.trim_start_matches('/').split('/').rev() {
        patch = json!({ segment: patch });
    }
    Ok((Some(patch), missing))
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let (words, pairs) = objects::resources_and_pairs(&args.args, "image").map_err(Error::Msg)?;
    let images = parse_images(&pairs).map_err(Error::Msg)?;
    if words.is_empty() && args.select.files.is_empty() {
        return Err(Error::msg("one or more resources must be specified as <resource> <name> or <resource>/<name>"));
    }
    if images.is_empty() {
        return Err(Error::msg("at least one image update is required"));
    }
    if images.len() > 1 && images.iter().any(|(n, _)| n == "*") {
        return Err(Error::msg(
            "all containers are already specified by *, but saw more than one container_name=container_image pairs",
        ));
    }
    // kubectl reads every object before changing any; one it cannot read ends the command.
    let (subjects, errors) = objects::resolve(ctx, &words, &args.select).await?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut found = Vec::new();
    for s in subjects {
        let obj = objects::read(ctx, &s).await?;
        // Listed items may lack their kind; the resource knows it.
        let obj = crate::output::with_type(obj, &s.resource.api_version(), &s.resource.kind);
        found.push((s, obj));
    }
    let mut errors = Vec::new();
    for (s, obj) in found {
        let (patch, missing) = match image_patch(&obj, &images) {
            Ok(p) => p,
            Err(e) => {
                errors.push(Error::msg(format!("{}/{} {e}", s.resource.name, s.name)));
                continue;
            }
        };
        errors.extend(missing.iter().map(|m| Error::msg(format!("unable to find container named {m:?}"))));
        let Some(patch) = patch else { continue };
        match objects::patch(ctx, &s.path(), STRATEGIC_PATCH, &patch).await {
            Ok(_) => objects::done(ctx, &s, "image updated")?,
            Err(Error::Status(st)) => {
                errors.push(Error::msg(format!("failed to patch image update to pod template: {}", st.message)))
            }
            Err(e) => return Err(e),
        }
    }
    crate::cmd::finish(ctx, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {
            "initContainers": [{"name": "init", "image": "busybox:1"}],
            "containers": [{"name": "web", "image": "nginx:1.25"}, {"name": "log", "image": "fluent:2"}]
        }}}})
    }

    fn images(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn patches_only_changed_containers() {
        let (patch, missing) = image_patch(&deploy(), &images(&[("web", "nginx:1.27"), ("log", "fluent:2")])).unwrap();
        assert_eq!(
            patch,
            Some(json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.27", "name": "web"}]}}}}))
        );
        assert!(missing.is_empty());
        let (patch, _) = image_patch(&deploy(), &images(&[("web", "nginx:1.25")])).unwrap();
        assert_eq!(patch, None);
    }

    #[test]
    fn star_sets_every_container_and_missing_names_are_reported() {
        let (patch, _) = image_patch(&deploy(), &images(&[("*", "x:1")])).unwrap();
        assert_eq!(
            patch,
            Some(json!({"spec": {"template": {"spec": {
                "initContainers": [{"image": "x:1", "name": "init"}],
                "containers": [{"image": "x:1", "name": "web"}, {"image": "x:1", "name": "log"}]
            }}}}))
        );
        let (_, missing) = image_patch(&deploy(), &images(&[("nope", "x:1")])).unwrap();
        assert_eq!(missing, ["nope"]);
    }

    #[test]
    fn pods_and_objects_without_templates() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let (patch, _) = image_patch(&pod, &images(&[("c", "b")])).unwrap();
        assert_eq!(patch, Some(json!({"spec": {"containers": [{"image": "b", "name": "c"}]}})));
        let svc = json!({"apiVersion": "v1", "kind": "Service", "spec": {}});
        assert_eq!(
            image_patch(&svc, &images(&[("c", "b")])).unwrap_err(),
            "the object is not a pod or does not have a pod template: *v1.Service"
        );
    }

    #[test]
    fn image_pairs() {
        assert_eq!(parse_images(&["a=x".into(), "b=y:1".into()]).unwrap(), images(&[("a", "x"), ("b", "y:1")]));
        assert_eq!(parse_images(&["a-".into(), "b-".into()]).unwrap_err(), "invalid image format: a-, b-");
    }
}
