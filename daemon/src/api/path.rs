//! Parsing Kubernetes-shaped request paths into (resource type, namespace, name, subresource).

use crate::objects::resource::{self, ResourceType};

use super::error::ApiError;

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rt: &'static ResourceType,
    /// `None` for cluster-scoped types and for lists across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...`.
pub fn parse(path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::path_not_found(path)),
    };
    let lookup = |name: &str| resource::by_path(group, version, name).ok_or_else(|| ApiError::path_not_found(path));
    let target = match rest {
        // /namespaces/{ns}/{resource}[/{name}[/{sub}]] — but /namespaces/{name}/{sub} for the namespace itself.
        ["namespaces", ns, res, tail @ ..] if resource::by_path(group, version, res).is_some_and(|r| r.namespaced) => {
            Target {
                rt: lookup(res)?,
                namespace: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                subresource: match tail {
                    [_, sub] => Some(sub.to_string()),
                    [_] | [] => None,
                    _ => return Err(ApiError::path_not_found(path)),
                },
            }
        }
        [res] => Target { rt: lookup(res)?, namespace: None, name: None, subresource: None },
        [res, name] => Target { rt: lookup(res)?, namespace: None, name: Some(name.to_string()), subresource: None },
        [res, name, sub] => Target {
            rt: lookup(res)?,
            namespace: None,
            name: Some(name.to_string()),
            subresource: Some(sub.to_string()),
        },
        _ => return Err(ApiError::path_not_found(path)),
    };
    if target.name.is_some() && target.rt.namespaced && target.namespace.is_none() {
        return Err(ApiError::path_not_found(path));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse("/api/v1/namespaces/default/pods/webapp/log").unwrap();
        assert_eq!(
            (t.rt.name, t.namespace.as_deref(), t.name.as_deref(), t.subresource.as_deref()),
            ("pods", Some("default"), Some("webapp"), Some("log"))
        );
        let t = parse("/api/v1/pods").unwrap();
        assert_eq!((t.rt.name, t.namespace, t.name), ("pods", None, None));
        let t = parse("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!((t.rt.name, t.name.as_deref()), ("namespaces", Some("kube-system")));
        let t = parse("/api/v1/namespaces/dev/status").unwrap();
        assert_eq!(
            (t.rt.name, t.name.as_deref(), t.subresource.as_deref()),
            ("namespaces", Some("dev"), Some("status"))
        );
        assert!(parse("/api/v1/widgets").is_err());
        assert!(parse("/api/v1/pods/x").is_err());
        assert!(parse("/healthz").is_err());
    }
}
