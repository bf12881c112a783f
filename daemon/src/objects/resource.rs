//! The resource types Skerry serves: names, groups, scope — the table behind discovery and routing.

use serde::Serialize;

/// One served resource type, as discovery describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceType {
    /// Plural, lower-case name used in paths (`pods`).
    pub name: &'static str,
    pub singular_name: &'static str,
    pub short_names: &'static [&'static str],
    pub kind: &'static str,
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub categories: &'static [&'static str],
}

impl ResourceType {
    /// `apiVersion` as written in manifests: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key under which objects of this type are stored (`pods`, `deployments.apps`).
    pub fn key(&self) -> String {
        if self.group.is_empty() {
            self.name.to_string()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }

    /// How kubectl names the type in `kind/name` output (`pod`, `deployment.apps`).
    pub fn display_kind(&self) -> String {
        if self.group.is_empty() {
            self.singular_name.to_string()
        } else {
            format!("{}.{}", self.singular_name, self.group)
        }
    }
}

pub const NAMESPACES: ResourceType = ResourceType {
    name: "namespaces",
    singular_name: "namespace",
    short_names: &["ns"],
    kind: "Namespace",
    group: "",
    version: "v1",
    namespaced: false,
    categories: &[],
};

pub const PODS: ResourceType = ResourceType {
    name: "pods",
    singular_name: "pod",
    short_names: &["po"],
    kind: "Pod",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &["all"],
};

pub const EVENTS: ResourceType = ResourceType {
    name: "events",
    singular_name: "event",
    short_names: &["ev"],
    kind: "Event",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &[],
};

pub const SERVICES: ResourceType = ResourceType {
    name: "services",
    singular_name: "service",
    short_names: &["svc"],
    kind: "Service",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &["all"],
};

pub const ENDPOINTS: ResourceType = ResourceType {
    name: "endpoints",
    singular_name: "endpoints",
    short_names: &["ep"],
    kind: "Endpoints",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &[],
};

/// Every type the API serves, in discovery order.
pub const ALL: &[ResourceType] = &[NAMESPACES, PODS, EVENTS, SERVICES, ENDPOINTS];

/// Finds a type by group and plural name, as found in a request path.
pub fn by_path(group: &str, version: &str, name: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

/// Finds a type by a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    ALL.iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Finds a type by its storage key (`pods`, `deployments.apps`).
pub fn by_key(key: &str) -> Option<&'static ResourceType> {
    ALL.iter().find(|r| r.key() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        for r in ALL {
            assert_eq!(by_key(&r.key()), Some(r));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
            assert_eq!(by_path(r.group, r.version, r.name), Some(r));
        }
        assert_eq!(by_kind("apps/v1", "Pod"), None);
    }
}
