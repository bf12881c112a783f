//! The discovery document and resolving the user's words (`po`, `deployments.apps`, `Pod`) to API paths.

use serde::Deserialize;

use crate::error::{Error, Result};

/// One resource type as listed by `GET /skerry/v1/resources`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    pub name: String,
    #[serde(default)]
    pub singular_name: String,
    #[serde(default)]
    pub short_names: Vec<String>,
    pub kind: String,
    #[serde(default)]
    pub group: String,
    pub version: String,
    #[serde(default)]
    pub namespaced: bool,
    #[serde(default)]
    pub categories: Vec<String>,
}

impl ApiResource {
    /// `/api/v1` for the core group, `/apis/{group}/{version}` otherwise.
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The collection path; `ns` `None` means all namespaces (ignored when cluster-scoped).
    pub fn collection(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("{}/namespaces/{ns}/{}", self.prefix(), self.name),
            _ => format!("{}/{}", self.prefix(), self.name),
        }
    }

    pub fn item(&self, ns: &str, name: &str) -> String {
        format!("{}/{name}", self.collection(Some(ns)))
    }

    /// `pod`, or `deployment.apps` for grouped kinds: what kubectl prints before a name.
    pub fn kind_label(&self) -> String {
        let kind = self.kind.to_lowercase();
        if self.group.is_empty() {
            kind
        } else {
            format!("{kind}.{}", self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn matches_word(&self, word: &str) -> bool {
        let w = word.to_lowercase();
        self.name == w
            || self.singular_name == w
            || self.kind.to_lowercase() == w
            || self.short_names.iter().any(|s| s.to_lowercase() == w)
    }
}

/// An older `apiVersion` of a served kind, which the server converts (with a warning).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Legacy {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// The discovery document.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Discovery {
    pub resources: Vec<ApiResource>,
    #[serde(default)]
    pub legacy: Vec<Legacy>,
}

impl Discovery {
    /// Resolves `pods`, `pod`, `po`, `Pod`, `deployments.apps` or `deployments.v1.apps`.
    pub fn resolve(&self, word: &str) -> Result<&ApiResource> {
        let found = self.resources.iter().find(|r| r.matches_word(word)).or_else(|| {
            let (res, rest) = word.split_once('.')?;
            self.resources.iter().find(|r| {
                r.matches_word(res)
                    && !r.group.is_empty()
                    && (rest == r.group || rest == format!("{}.{}", r.version, r.group))
            })
        });
        found.ok_or_else(|| Error::msg(format!("the server doesn't have a resource type \"{word}\"")))
    }

    /// The resource for a manifest's `apiVersion` and `kind`.
    pub fn for_kind(&self, api_version: &str, kind: &str) -> Option<&ApiResource> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let current = self.resources.iter().find(|r| r.kind == kind && r.group == group && r.version == version);
        current.or_else(|| {
            // An older version goes to the served one; the server converts it and says so.
            self.legacy.iter().find(|l| l.kind == kind && l.group == group && l.version == version)?;
            self.resources.iter().find(|r| r.kind == kind)
        })
    }

    /// The resources in a category (`all`), in discovery order.
    pub fn category(&self, category: &str) -> Vec<&ApiResource> {
        self.resources.iter().filter(|r| r.categories.iter().any(|c| c == category)).collect()
    }
}

/// What the user asked for: a resource type and the names given for it (none = all).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: ApiResource,
    pub names: Vec<String>,
}

/// The result of parsing `TYPE[,TYPE] [NAME...]` or `TYPE/NAME...` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    pub targets: Vec<Target>,
    /// Several types were asked for (or `all`): names are printed with their kind.
    pub show_kind: bool,
}

/// Parses kubectl's resource arguments.
pub fn parse_targets(disc: &Discovery, args: &[String]) -> Result<Targets> {
    let Some(first) = args.first() else {
        return Ok(Targets { targets: Vec::new(), show_kind: false });
    };
    if first.contains('/') {
        let mut targets: Vec<Target> = Vec::new();
        for arg in args {
            let Some((word, name)) = arg.split_once('/') else {
                return Err(Error::msg(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skerry get resource/<resource_name>' instead of 'skerry get resource resource/<resource_name>'",
                ));
            };
            if name.is_empty() {
                return Err(Error::msg("arguments in resource/name form must have a single resource and name"));
            }
            let res = disc.resolve(word)?;
            match targets.iter_mut().find(|t| &t.resource == res) {
                Some(t) => t.names.push(name.to_string()),
                None => targets.push(Target { resource: res.clone(), names: vec![name.to_string()] }),
            }
        }
        let show_kind = targets.len() > 1;
        return Ok(Targets { targets, show_kind });
    }
    if let Some(bad) = args[1..].iter().find(|a| a.contains('/')) {
        return Err(Error::msg(format!(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skerry get resource/<resource_name>' instead of 'skerry get resource {bad}'"
        )));
    }
    let names: Vec<String> = args[1..].to_vec();
    let mut targets: Vec<Target> = Vec::new();
    let mut show_kind = false;
    for word in first.split(',').filter(|w| !w.is_empty()) {
        let resolved: Vec<&ApiResource> = if word == "all" {
            show_kind = true;
            disc.category("all")
        } else {
            vec![disc.resolve(word)?]
        };
        for res in resolved {
            if !targets.iter().any(|t| &t.resource == res) {
                targets.push(Target { resource: res.clone(), names: names.clone() });
            }
        }
    }
    if targets.len() > 1 {
        show_kind = true;
    }
    Ok(Targets { targets, show_kind })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DISCOVERY: &str = r#"{"resources":[
      {"name":"pods","singularName":"pod","shortNames":["po"],"kind":"Pod","group":"","version":"v1","namespaced":true,"categories":["all"]},
      {"name":"services","singularName":"service","shortNames":["svc"],"kind":"Service","group":"","version":"v1","namespaced":true,"categories":["all"]},
      {"name":"namespaces","singularName":"namespace","shortNames":["ns"],"kind":"Namespace","group":"","version":"v1","namespaced":false},
      {"name":"deployments","singularName":"deployment","shortNames":["deploy"],"kind":"Deployment","group":"apps","version":"v1","namespaced":true,"categories":["all"]},
      {"name":"replicasets","singularName":"replicaset","shortNames":["rs"],"kind":"ReplicaSet","group":"apps","version":"v1","namespaced":true,"categories":["all"]},
      {"name":"configmaps","singularName":"configmap","shortNames":["cm"],"kind":"ConfigMap","group":"","version":"v1","namespaced":true}
    ],"legacy":[{"group":"extensions","version":"v1beta1","kind":"Deployment","name":"deployments"}]}"#;

    pub(crate) fn discovery() -> Discovery {
        serde_json::from_str(DISCOVERY).unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn resolves_words() {
        let d = discovery();
        for w in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(d.resolve(w).unwrap().name, "pods", "{w}");
        }
        for w in ["deploy", "deployments.apps", "deployment.apps", "deployments.v1.apps", "Deployment"] {
            assert_eq!(d.resolve(w).unwrap().name, "deployments", "{w}");
        }
        assert_eq!(d.resolve("foo").unwrap_err().to_string(), "error: the server doesn't have a resource type \"foo\"");
        assert!(d.resolve("deployments.batch").is_err());
    }

    #[test]
    fn paths() {
        let d = discovery();
        let pods = d.resolve("po").unwrap();
        assert_eq!(pods.collection(Some("default")), "/api/v1/namespaces/default/pods");
        assert_eq!(pods.collection(None), "/api/v1/pods");
        assert_eq!(pods.item("kube-system", "x"), "/api/v1/namespaces/kube-system/pods/x");
        let deploy = d.resolve("deploy").unwrap();
        assert_eq!(deploy.item("a", "web"), "/apis/apps/v1/namespaces/a/deployments/web");
        assert_eq!(deploy.kind_label(), "deployment.apps");
        assert_eq!(pods.kind_label(), "pod");
        let ns = d.resolve("ns").unwrap();
        assert_eq!(ns.collection(Some("default")), "/api/v1/namespaces");
        assert_eq!(ns.item("default", "kube-system"), "/api/v1/namespaces/kube-system");
    }

    #[test]
    fn kinds() {
        let d = discovery();
        assert_eq!(d.for_kind("v1", "Pod").unwrap().name, "pods");
        assert_eq!(d.for_kind("apps/v1", "Deployment").unwrap().name, "deployments");
        assert_eq!(d.for_kind("extensions/v1beta1", "Deployment").unwrap().api_version(), "apps/v1");
        assert!(d.for_kind("extensions/v1beta1", "ReplicaSet").is_none());
        assert!(d.for_kind("v1", "Foo").is_none());
    }

    #[test]
    fn targets() {
        let d = discovery();
        let t = parse_targets(&d, &s(&["po", "a", "b"])).unwrap();
        assert!(!t.show_kind);
        assert_eq!(t.targets.len(), 1);
        assert_eq!(t.targets[0].names, s(&["a", "b"]));
        let t = parse_targets(&d, &s(&["pods,svc"])).unwrap();
        assert!(t.show_kind);
        assert_eq!(t.targets.iter().map(|t| t.resource.name.as_str()).collect::<Vec<_>>(), ["pods", "services"]);
        let t = parse_targets(&d, &s(&["all"])).unwrap();
        assert!(t.show_kind);
        assert_eq!(t.targets.len(), 4);
        let t = parse_targets(&d, &s(&["pod/a", "svc/b", "pod/c"])).unwrap();
        assert_eq!(t.targets[0].names, s(&["a", "c"]));
        assert_eq!(t.targets[1].names, s(&["b"]));
        assert!(parse_targets(&d, &s(&["pod/a", "b"])).is_err());
        assert!(parse_targets(&d, &s(&["pod", "svc/b"])).is_err());
    }
}
