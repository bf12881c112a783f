//! The Node authorizer: whether a request may go ahead, as a pure function of who asks, what
//! is asked and which objects the pods bound to the asking node use. It never reads the store,
//! never filters a list (the API does), and never authenticates (the TLS layer and
//! `identity::Identity` do).
//!
//! After Kubernetes' Node authorizer (`plugin/pkg/auth/authorizer/node`) with the checks of its
//! NodeRestriction admission plugin folded in, since Skerry has no second stage:
//!
//! * The admin — a server's Unix socket — may do anything. So may a **server's** node
//!   certificate: servers hold and replicate every object anyway, so limiting them would protect
//!   nothing.
//! * An **agent** (`system:node:<name>`) may read (get, list, watch) Nodes, Namespaces, Services
//!   and Endpoints (its proxy and DNS need them); create, update and patch its own Node and
//!   update or patch its own `nodes/status`, never another's; get the pods bound to it, and list
//!   or watch pods — the API must then serve only `spec.nodeName=<name>` ([`pod_list_filter`]);
//!   update or patch `pods/status` of its pods and delete its pods (a terminated pod's final
//!   removal); get a Secret, ConfigMap, PersistentVolumeClaim or PersistentVolume only when a pod
//!   bound to it uses it, and list or watch a single named Secret or ConfigMap on the same terms
//!   (a field selector on `metadata.name`, as Kubernetes allows, so a mirror can watch what its
//!   pods use); create, update and patch Events. Everything else is denied, including creating
//!   pods, changing a pod's spec and reading any other Secret.
//!
//! What "uses" means is [`Graph`]; [`PodGraph`] computes it from pods and claims, following
//! Kubernetes' `VisitPodSecretNames`/`VisitPodConfigmapNames`: volumes (also projected and the
//! volume plugins' secret references), `env` `secretKeyRef`/`configMapKeyRef` and `envFrom` of
//! every container kind, image pull secrets, claims (also generic ephemeral volumes'
//! `<pod>-<volume>` claims) and the volumes they are bound to. Not followed: Secrets a
//! PersistentVolume names (CSI secret references) and service-account tokens.

use std::collections::{HashMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, PersistentVolumeClaim, Pod, Volume};

use super::identity::{Identity, Role};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A server's local Unix socket.
    Admin,
    /// A peer with a verified node certificate.
    Node(Identity),
}

/// What is asked, as Kubernetes' verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }

    fn reads(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One API request, as the authorizer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub verb: Verb,
    /// The resource key: `pods`, `secrets`, `deployments.apps`, `events.events.k8s.io`.
    pub resource: &'a str,
    /// `status`, `log`, `exec`, …
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// The object's name: from the path, from a `metadata.name` field selector on a list or
    /// watch, or — for a create — from the object in the body (the API fills it in).
    pub name: Option<&'a str>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Why not, for the 403's message.
    Deny(String),
}

/// The kinds of object a pod makes visible to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Secret,
    ConfigMap,
    PersistentVolumeClaim,
    PersistentVolume,
}

impl Kind {
    fn singular(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
            Kind::PersistentVolumeClaim => "persistentvolumeclaim",
            Kind::PersistentVolume => "persistentvolume",
        }
    }
}

/// What the decision needs to know of the cluster.
pub trait Graph {
    /// Whether `node` has a pod bound to it that is this object (for [`Kind::Pod`]) or uses it.
    /// `namespace` is empty for PersistentVolumes.
    fn relates(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool;
}

/// [`Graph`] computed from pods and claims: for each node, what its bound pods use.
#[derive(Debug, Default, Clone)]
pub struct PodGraph {
    edges: HashSet<(String, Kind, String, String)>,
}

impl Graph for PodGraph {
    fn relates(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        // Owned tuple: a HashSet of tuples cannot be probed with borrowed parts.
        self.edges.contains(&(node.to_string(), kind, namespace.to_string(), name.to_string()))
    }
}

impl PodGraph {
    /// The graph of `pods` (those without `spec.nodeName` add nothing) with `claims` telling
    /// which PersistentVolume each claim is bound to.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
        claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
    ) -> PodGraph {
        let volumes: HashMap<(&str, &str), &str> = claims
            .into_iter()
            .filter_map(|c| {
                let bound = c.spec.as_ref()?.volume_name.as_deref().filter(|v| !v.is_empty())?;
                Some(((c.metadata.namespace.as_deref().unwrap_or_default(), c.metadata.name.as_deref()?), bound))
            })
            .collect();
        let mut graph = PodGraph::default();
        for pod in pods {
            graph.add_pod(pod, |ns, claim| volumes.get(&(ns, claim)).map(|v| v.to_string()));
        }
        graph
    }

    /// What the pods bound to `node` are or use, as (kind, namespace, name); the namespace is
    /// empty for PersistentVolumes. An agent's mirror follows these.
    pub fn used_by<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (Kind, &'a str, &'a str)> + 'a {
        self.edges
            .iter()
            .filter(move |(n, ..)| n == node)
            .map(|(_, kind, ns, name)| (*kind, ns.as_str(), name.as_str()))
    }

    /// Adds one pod; `volume_of(namespace, claim)` names the PersistentVolume a claim is bound to.
    pub fn add_pod(&mut self, pod: &Pod, volume_of: impl Fn(&str, &str) -> Option<String>) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let Some(node) = spec.node_name.as_deref().filter(|n| !n.is_empty()) else { return };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut add = |kind: Kind, namespace: &str, name: &str| {
            if !name.is_empty() {
                self.edges.insert((node.to_string(), kind, namespace.to_string(), name.to_string()));
            }
        };
        add(Kind::Pod, ns, pod_name);

        for s in spec.image_pull_secrets.iter().flatten() {
            add(Kind::Secret, ns, &s.name);
        }
        let containers: Vec<(&[EnvVar], &[EnvFromSource])> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c: &Container| (c.env.as_deref().unwrap_or_default(), c.env_from.as_deref().unwrap_or_default()))
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.env.as_deref().unwrap_or_default(), c.env_from.as_deref().unwrap_or_default())),
            )
            .collect();
        for (env, env_from) in containers {
            for from in env_from {
                if let Some(s) = &from.secret_ref {
                    add(Kind::Secret, ns, &s.name);
                }
                if let Some(c) = &from.config_map_ref {
                    add(Kind::ConfigMap, ns, &c.name);
                }
            }
            for source in env.iter().filter_map(|e| e.value_from.as_ref()) {
                if let Some(s) = &source.secret_key_ref {
                    add(Kind::Secret, ns, &s.name);
                }
                if let Some(c) = &source.config_map_key_ref {
                    add(Kind::ConfigMap, ns, &c.name);
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            for secret in volume_secrets(volume) {
                add(Kind::Secret, ns, secret);
            }
            if let Some(c) = &volume.config_map {
                add(Kind::ConfigMap, ns, &c.name);
            }
            for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(s) = &source.secret {
                    add(Kind::Secret, ns, &s.name);
                }
                if let Some(c) = &source.config_map {
                    add(Kind::ConfigMap, ns, &c.name);
                }
            }
            let claim = match (&volume.persistent_volume_claim, &volume.ephemeral) {
                (Some(c), _) => Some(c.claim_name.clone()),
                // A generic ephemeral volume's claim is named after the pod and the volume.
                (None, Some(_)) => Some(format!("{pod_name}-{}", volume.name)),
                (None, None) => None,
            };
            if let Some(claim) = claim {
                add(Kind::PersistentVolumeClaim, ns, &claim);
                if let Some(pv) = volume_of(ns, &claim) {
                    add(Kind::PersistentVolume, "", &pv);
                }
            }
        }
    }
}

/// The Secrets a volume names: the secret volume and the volume plugins' secret references.
fn volume_secrets(v: &Volume) -> Vec<&str> {
    let refs = [
        v.cephfs.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.cinder.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.flex_volume.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.iscsi.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.rbd.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.scale_io.as_ref().map(|s| &s.secret_ref),
        v.storageos.as_ref().and_then(|s| s.secret_ref.as_ref()),
        v.csi.as_ref().and_then(|s| s.node_publish_secret_ref.as_ref()),
    ];
    refs.into_iter()
        .flatten()
        .map(|r| r.name.as_str())
        .chain(v.secret.as_ref().and_then(|s| s.secret_name.as_deref()))
        .chain(v.azure_file.as_ref().map(|s| s.secret_name.as_str()))
        .collect()
}

/// Label prefixes a node may never set or change on its own Node (Kubernetes' NodeRestriction):
/// roles are given by admins, and `node-restriction.kubernetes.io/` exists to be trusted.
const NODE_FORBIDDEN_LABELS: &[&str] = &["node-restriction.kubernetes.io/", "node-role.kubernetes.io/"];

/// What an agent may not do to its own Node even though it may write it (Kubernetes'
/// NodeRestriction admission, folded in): create it with, or change, labels under
/// [`NODE_FORBIDDEN_LABELS`], and change its taints. `old` is the stored Node (`None` on a
/// create); the error is the API server's message. Admins and servers are not restricted.
pub fn node_restriction(
    principal: &Principal,
    old: Option<&serde_json::Value>,
    new: &serde_json::Value,
) -> Result<(), String> {
    let Principal::Node(Identity { node_name, role: Role::Agent }) = principal else {
        return Ok(());
    };
    let labels = |v: Option<&serde_json::Value>| -> std::collections::BTreeMap<String, String> {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .and_then(|l| l.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
            .unwrap_or_default()
    };
    let (before, after) = (labels(old), labels(Some(new)));
    let restricted = |k: &str| NODE_FORBIDDEN_LABELS.iter().any(|p| k.starts_with(p));
    let mut touched: Vec<&str> = after
        .iter()
        .filter(|(k, v)| restricted(k) && before.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(before.keys().filter(|k| restricted(k) && !after.contains_key(*k)).map(String::as_str))
        .collect();
    touched.sort();
    touched.dedup();
    if !touched.is_empty() {
        return Err(match old {
            None => format!("node {node_name:?} is not allowed to set the following labels: {}", touched.join(", ")),
            Some(_) => format!("node {node_name:?} is not allowed to modify labels: {}", touched.join(", ")),
        });
    }
    if let Some(old) = old {
        let taints =
            |v: &serde_json::Value| v.pointer("/spec/taints").cloned().filter(|t| !t.is_null()).unwrap_or_default();
        if taints(old) != taints(new) {
            return Err(format!("node {node_name:?} is not allowed to modify taints"));
        }
    }
    Ok(())
}

/// For a node principal, the node whose pods alone a pod list or watch may return
/// (`spec.nodeName=<node>`); `None` when the principal sees every pod.
pub fn pod_list_filter(principal: &Principal) -> Option<&str> {
    match principal {
        Principal::Node(Identity { node_name, role: Role::Agent }) => Some(node_name),
        _ => None,
    }
}

/// Whether `principal` may do anything (the admin, a server), so that no decision for it
/// depends on the request's details or the [`Graph`].
pub fn unrestricted(principal: &Principal) -> bool {
    pod_list_filter(principal).is_none()
}

/// Decides `req` by `principal` (see the module doc for the rules).
pub fn authorize(principal: &Principal, req: &Request<'_>, graph: &impl Graph) -> Decision {
    let node = match principal {
        Principal::Admin | Principal::Node(Identity { role: Role::Server, .. }) => return Decision::Allow,
        Principal::Node(Identity { node_name, role: Role::Agent }) => node_name.as_str(),
    };
    let verb = req.verb;
    let what = match req.subresource {
        Some(sub) => format!("{}/{sub}", req.resource),
        None => req.resource.to_string(),
    };
    let deny_verb = || Decision::Deny(format!("node '{node}' cannot {verb} {what}"));
    match (req.resource, req.subresource) {
        ("nodes", None) => match verb {
            Verb::Get | Verb::List | Verb::Watch => Decision::Allow,
            Verb::Create | Verb::Update | Verb::Patch => own_node(node, req),
            _ => deny_verb(),
        },
        ("nodes", Some("status")) => match verb {
            Verb::Update | Verb::Patch => own_node(node, req),
            _ => deny_verb(),
        },
        ("namespaces" | "services" | "endpoints", None) if verb.reads() => Decision::Allow,
        ("pods", None) => match verb {
            Verb::Get | Verb::Delete => related(node, Kind::Pod, req, graph),
            // A single named pod is checked; a list or watch is narrowed to the node's pods by the API.
            Verb::List | Verb::Watch if req.name.is_some() => related(node, Kind::Pod, req, graph),
            Verb::List | Verb::Watch => Decision::Allow,
            Verb::Create => {
                Decision::Deny(format!("node '{node}' cannot create pods; pods are created through a server"))
            }
            _ => Decision::Deny(format!("node '{node}' cannot {verb} a pod; it may only change a pod's status")),
        },
        ("pods", Some("status")) => match verb {
            Verb::Update | Verb::Patch => related(node, Kind::Pod, req, graph),
            _ => deny_verb(),
        },
        ("secrets" | "configmaps", None) => {
            let kind = if req.resource == "secrets" { Kind::Secret } else { Kind::ConfigMap };
            match verb {
                Verb::Get => related(node, kind, req, graph),
                Verb::List | Verb::Watch if req.name.is_some() => related(node, kind, req, graph),
                Verb::List | Verb::Watch => Decision::Deny(format!(
                    "node '{node}' can only read individual {}s that its pods use, not list them",
                    kind.singular()
                )),
                _ => deny_verb(),
            }
        }
        ("persistentvolumeclaims", None) if verb == Verb::Get => related(node, Kind::PersistentVolumeClaim, req, graph),
        ("persistentvolumes", None) if verb == Verb::Get => related(node, Kind::PersistentVolume, req, graph),
        ("events" | "events.events.k8s.io", None) if matches!(verb, Verb::Create | Verb::Update | Verb::Patch) => {
            Decision::Allow
        }
        _ => deny_verb(),
    }
}

/// Create, update or patch of a Node: only the asking node's own.
fn own_node(node: &str, req: &Request<'_>) -> Decision {
    match req.name {
        Some(name) if name == node => Decision::Allow,
        Some(name) => Decision::Deny(format!("node '{node}' can only change its own Node object, not '{name}'")),
        None => Decision::Deny(format!("node '{node}' can only change its own Node object, and no name was given")),
    }
}

/// Allowed when the named object is one of the node's pods or used by one.
fn related(node: &str, kind: Kind, req: &Request<'_>, graph: &impl Graph) -> Decision {
    let Some(name) = req.name.filter(|n| !n.is_empty()) else {
        return Decision::Deny(format!("node '{node}' can only access individual {}s by name", kind.singular()));
    };
    let namespace = if kind == Kind::PersistentVolume {
        ""
    } else {
        match req.namespace.filter(|n| !n.is_empty()) {
            Some(ns) => ns,
            None => {
                return Decision::Deny(format!("node '{node}' can only access {}s in a namespace", kind.singular()))
            }
        }
    };
    if graph.relates(node, kind, namespace, name) {
        return Decision::Allow;
    }
    // Kubernetes' own wording; the API's 403 names the object before it.
    Decision::Deny(format!("no relationship found between node '{node}' and this object"))
}

#[cfg(test)]
mod tests;
