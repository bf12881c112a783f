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

pub const NODES: ResourceType = ResourceType {
    name: "nodes",
    singular_name: "node",
    short_names: &["no"],
    kind: "Node",
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

pub const REPLICATION_CONTROLLERS: ResourceType = ResourceType {
    name: "replicationcontrollers",
    singular_name: "replicationcontroller",
    short_names: &["rc"],
    kind: "ReplicationController",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &["all"],
};

pub const DEPLOYMENTS: ResourceType = ResourceType {
    name: "deployments",
    singular_name: "deployment",
    short_names: &["deploy"],
    kind: "Deployment",
    group: "apps",
    version: "v1",
    namespaced: true,
    categories: &["all"],
};

pub const REPLICA_SETS: ResourceType = ResourceType {
    name: "replicasets",
    singular_name: "replicaset",
    short_names: &["rs"],
    kind: "ReplicaSet",
    group: "apps",
    version: "v1",
    namespaced: true,
    categories: &["all"],
};

pub const PERSISTENT_VOLUMES: ResourceType = ResourceType {
    name: "persistentvolumes",
    singular_name: "persistentvolume",
    short_names: &["pv"],
    kind: "PersistentVolume",
    group: "",
    version: "v1",
    namespaced: false,
    categories: &[],
};

pub const PERSISTENT_VOLUME_CLAIMS: ResourceType = ResourceType {
    name: "persistentvolumeclaims",
    singular_name: "persistentvolumeclaim",
    short_names: &["pvc"],
    kind: "PersistentVolumeClaim",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &[],
};

pub const CONFIG_MAPS: ResourceType = ResourceType {
    name: "configmaps",
    singular_name: "configmap",
    short_names: &["cm"],
    kind: "ConfigMap",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &[],
};

pub const SECRETS: ResourceType = ResourceType {
    name: "secrets",
    singular_name: "secret",
    short_names: &[],
    kind: "Secret",
    group: "",
    version: "v1",
    namespaced: true,
    categories: &[],
};

pub const STORAGE_CLASSES: ResourceType = ResourceType {
    name: "storageclasses",
    singular_name: "storageclass",
    short_names: &["sc"],
    kind: "StorageClass",
    group: "storage.k8s.io",
    version: "v1",
    namespaced: false,
    categories: &[],
};

/// Join tokens (`skerry token`): only a hash of each secret is stored.
pub const JOIN_TOKENS: ResourceType = ResourceType {
    name: "jointokens",
    singular_name: "jointoken",
    short_names: &[],
    kind: "JoinToken",
    group: "skerry.io",
    version: "v1",
    namespaced: false,
    categories: &[],
};

/// Every type the API serves, in discovery order (`get all` lists its category in this order,
/// as kubectl does: pods, replication controllers, services, deployments, replica sets).
pub const ALL: &[ResourceType] = &[
    NAMESPACES,
    NODES,
    PODS,
    EVENTS,
    REPLICATION_CONTROLLERS,
    SERVICES,
    ENDPOINTS,
    DEPLOYMENTS,
    REPLICA_SETS,
    PERSISTENT_VOLUMES,
    PERSISTENT_VOLUME_CLAIMS,
    CONFIG_MAPS,
    SECRETS,
    STORAGE_CLASSES,
    JOIN_TOKENS,
];

/// An older `apiVersion` of a served kind: accepted, converted to the served version, with a
/// deprecation warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Legacy {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Plural name, as in paths.
    pub name: &'static str,
}

impl Legacy {
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }
}

/// The older versions Skerry still accepts (removed from Kubernetes in 1.16, still in many
/// manifests).
pub const LEGACY: &[Legacy] = &[
    Legacy { group: "extensions", version: "v1beta1", kind: "Deployment", name: "deployments" },
    Legacy { group: "apps", version: "v1beta1", kind: "Deployment", name: "deployments" },
    Legacy { group: "apps", version: "v1beta2", kind: "Deployment", name: "deployments" },
    Legacy { group: "extensions", version: "v1beta1", kind: "ReplicaSet", name: "replicasets" },
    Legacy { group: "apps", version: "v1beta2", kind: "ReplicaSet", name: "replicasets" },
];

/// The served type an older `apiVersion`/`kind` converts to.
pub fn legacy_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let legacy = LEGACY.iter().find(|l| l.kind == kind && l.api_version() == api_version)?;
    ALL.iter().find(|r| r.kind == legacy.kind)
}

/// Finds a type by group and plural name, as found in a request path (older versions of a
/// kind resolve to the served type).
pub fn by_path(group: &str, version: &str, name: &str) -> Option<&'static ResourceType> {
    ALL.iter().find(|r| r.group == group && r.version == version && r.name == name).or_else(|| {
        let legacy = LEGACY.iter().find(|l| l.group == group && l.version == version && l.name == name)?;
        ALL.iter().find(|r| r.kind == legacy.kind)
    })
}

/// Finds a type by a manifest's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    ALL.iter().find(|r| r.kind == kind && r.api_version() == api_version)
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
        assert_eq!(by_path("extensions", "v1beta1", "deployments"), Some(&DEPLOYMENTS));
        assert_eq!(legacy_kind("apps/v1beta2", "ReplicaSet"), Some(&REPLICA_SETS));
        assert_eq!(legacy_kind("apps/v1beta1", "ReplicaSet"), None);
    }
}
