//! Node selector terms (node affinity, volume node affinity), taints and tolerations: parsed
//! once from JSON, then matched against many nodes without touching JSON again.
//!
//! The rules are `k8s.io/component-helpers/scheduling/corev1`'s: terms are ORed, the
//! requirements of a term ANDed, an empty term matches nothing, and a term that does not parse
//! (an `In` without values, a `Gt` whose value is not an integer, a field other than
//! `metadata.name`) never matches while the other terms still count — kube-scheduler ignores
//! such parse errors "for backwards compatibility".

use std::collections::HashMap;

use serde_json::Value;

/// The labels of a node, looked up by key.
pub(crate) type Labels = HashMap<String, String>;

/// One `matchExpressions` operator with its operands.
#[derive(Debug, Clone)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// A label requirement: `key` `op`.
#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    /// Parses one requirement; `None` when kube's selector parser would reject it.
    fn parse(v: &Value) -> Option<Requirement> {
        let key = v["key"].as_str()?.to_string();
        let values: Vec<String> = v["values"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let single_int = || match values.as_slice() {
            [one] => one.parse::<i64>().ok(),
            _ => None,
        };
        let op = match v["operator"].as_str()? {
            "In" if !values.is_empty() => Op::In(values),
            "NotIn" if !values.is_empty() => Op::NotIn(values),
            "Exists" if values.is_empty() => Op::Exists,
            "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
            "Gt" => Op::Gt(single_int()?),
            "Lt" => Op::Lt(single_int()?),
            _ => return None,
        };
        Some(Requirement { key, op })
    }

    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::In(values) => value.is_some_and(|v| values.contains(v)),
            Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
            Op::Lt(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
        }
    }
}

/// A `matchFields` requirement: the only field is `metadata.name`, with `In` or `NotIn` and
/// exactly one value (`nodeSelectorRequirementsAsFieldSelector`).
#[derive(Debug, Clone)]
struct FieldRequirement {
    name: String,
    equal: bool,
}

impl FieldRequirement {
    fn parse(v: &Value) -> Option<FieldRequirement> {
        if v["key"] != "metadata.name" {
            return None;
        }
        let name = match v["values"].as_array().map(Vec::as_slice) {
            Some([one]) => one.as_str()?.to_string(),
            _ => return None,
        };
        match v["operator"].as_str()? {
            "In" => Some(FieldRequirement { name, equal: true }),
            "NotIn" => Some(FieldRequirement { name, equal: false }),
            _ => None,
        }
    }
}

/// One `nodeSelectorTerm` (also a preferred term's `preference`).
#[derive(Debug, Clone)]
pub(crate) struct Term {
    labels: Vec<Requirement>,
    fields: Vec<FieldRequirement>,
    /// False when any requirement failed to parse, or when the term is empty: it matches nothing.
    valid: bool,
    /// The node names of the term's `matchFields` `metadata.name In` requirements, read
    /// without validation as NodeAffinity's PreFilter does (`None`: the term has none).
    in_names: Option<Vec<String>>,
}

impl Term {
    pub(crate) fn parse(v: &Value) -> Term {
        let list = |field: &str| v[field].as_array().cloned().unwrap_or_default();
        let (exprs, fields) = (list("matchExpressions"), list("matchFields"));
        let labels: Vec<Requirement> = exprs.iter().filter_map(Requirement::parse).collect();
        let parsed_fields: Vec<FieldRequirement> = fields.iter().filter_map(FieldRequirement::parse).collect();
        let valid = labels.len() == exprs.len()
            && parsed_fields.len() == fields.len()
            && !(exprs.is_empty() && fields.is_empty());
        // PreFilter intersects the `In` sets of a term's `metadata.name` requirements.
        let mut in_names: Option<Vec<String>> = None;
        for f in &fields {
            if f["key"] == "metadata.name" && f["operator"] == "In" {
                let values: Vec<String> = f["values"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                in_names = Some(match in_names {
                    None => values,
                    Some(before) => before.into_iter().filter(|n| values.contains(n)).collect(),
                });
            }
        }
        Term { labels, fields: parsed_fields, valid, in_names }
    }

    pub(crate) fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.valid
            && self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|f| (f.name == name) == f.equal)
    }
}

/// A `NodeSelector`: `nodeSelectorTerms`, ORed.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSelector {
    terms: Vec<Term>,
}

impl NodeSelector {
    /// Parses a value holding `nodeSelectorTerms` (`requiredDuringScheduling…`, a volume's
    /// `nodeAffinity.required`).
    pub(crate) fn parse(v: &Value) -> NodeSelector {
        let terms = v["nodeSelectorTerms"].as_array().map(|a| a.iter().map(Term::parse).collect()).unwrap_or_default();
        NodeSelector { terms }
    }

    pub(crate) fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(name, labels))
    }

    /// The node names NodeAffinity's PreFilter narrows the pass to: the union over terms of
    /// each term's `metadata.name In` intersection. `None` when some term does not name nodes
    /// (terms are ORed, so every node may match); `Some(empty)` when the terms conflict.
    pub(crate) fn named_nodes(&self) -> Option<Vec<String>> {
        if self.terms.is_empty() {
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        for term in &self.terms {
            for n in term.in_names.as_ref()? {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        Some(names)
    }
}

/// The three taint effects; anything else is kept but never blocks nor scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other,
}

impl Effect {
    fn parse(s: &str) -> Effect {
        match s {
            "NoSchedule" => Effect::NoSchedule,
            "PreferNoSchedule" => Effect::PreferNoSchedule,
            "NoExecute" => Effect::NoExecute,
            _ => Effect::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

impl Taint {
    pub(crate) fn parse(v: &Value) -> Taint {
        Taint {
            key: v["key"].as_str().unwrap_or("").to_string(),
            value: v["value"].as_str().unwrap_or("").to_string(),
            effect: Effect::parse(v["effect"].as_str().unwrap_or("")),
        }
    }

    /// Whether the taint keeps pods that do not tolerate it off the node (NoSchedule, NoExecute).
    pub(crate) fn blocks(&self) -> bool {
        matches!(self.effect, Effect::NoSchedule | Effect::NoExecute)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Toleration {
    key: String,
    /// `Exists`; otherwise `Equal` (the default). `None`: an unknown operator, tolerates nothing.
    exists: Option<bool>,
    value: String,
    /// `None`: every effect.
    effect: Option<Effect>,
}

impl Toleration {
    pub(crate) fn parse(v: &Value) -> Toleration {
        let exists = match v["operator"].as_str().unwrap_or("") {
            "" | "Equal" => Some(false),
            "Exists" => Some(true),
            _ => None,
        };
        let effect = v["effect"].as_str().filter(|e| !e.is_empty()).map(Effect::parse);
        Toleration {
            key: v["key"].as_str().unwrap_or("").to_string(),
            exists,
            value: v["value"].as_str().unwrap_or("").to_string(),
            effect,
        }
    }

    /// `Toleration.ToleratesTaint`: the effect (if set) and key (if set) must match; `Exists`
    /// matches any value, `Equal` the same value. An empty key with `Exists` tolerates all.
    pub(crate) fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.exists {
            Some(true) => true,
            Some(false) => self.value == taint.value,
            None => false,
        }
    }

    /// Whether the toleration counts for PreferNoSchedule scoring (no effect, or that effect).
    pub(crate) fn for_prefer_no_schedule(&self) -> bool {
        self.effect.is_none_or(|e| e == Effect::PreferNoSchedule)
    }
}

/// `TolerationsTolerateTaint`.
pub(crate) fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requirement_operators() {
        let node = labels(&[("zone", "a"), ("cores", "8"), ("gpu", "")]);
        let term = |op: &str, values: Value| {
            Term::parse(
                &json!({"matchExpressions": [{"key": if op.starts_with('G') || op.starts_with('L') { "cores" } else { "zone" }, "operator": op, "values": values}]}),
            )
        };
        for (op, values, want) in [
            ("In", json!(["a", "b"]), true),
            ("In", json!(["b"]), false),
            ("NotIn", json!(["b"]), true),
            ("NotIn", json!(["a"]), false),
            ("Exists", json!([]), true),
            ("DoesNotExist", json!([]), false),
            ("Gt", json!(["7"]), true),
            ("Gt", json!(["8"]), false),
            ("Lt", json!(["9"]), true),
            ("Lt", json!(["8"]), false),
            // Rejected by the parser, so the term matches nothing.
            ("In", json!([]), false),
            ("Exists", json!(["a"]), false),
            ("Gt", json!(["x"]), false),
            ("Gt", json!(["1", "2"]), false),
            ("Near", json!(["a"]), false),
        ] {
            assert_eq!(term(op, values.clone()).matches("n1", &node), want, "{op} {values}");
        }
        // Absent labels: NotIn and DoesNotExist match; Gt on a non-integer value does not.
        let absent = |op: &str| {
            Term::parse(
                &json!({"matchExpressions": [{"key": "disk", "operator": op, "values": if op == "NotIn" { json!(["ssd"]) } else { json!([]) }}]}),
            )
        };
        assert!(absent("NotIn").matches("n1", &node));
        assert!(absent("DoesNotExist").matches("n1", &node));
        let gt_text = Term::parse(&json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["1"]}]}));
        assert!(!gt_text.matches("n1", &node));
    }

    #[test]
    fn terms_or_requirements_and_fields() {
        let node = labels(&[("zone", "a"), ("disk", "ssd")]);
        let sel = NodeSelector::parse(&json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "disk", "operator": "In", "values": ["hdd"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}], "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
        ]}));
        assert!(sel.matches("n1", &node));
        assert!(!sel.matches("n2", &node));
        // An empty term and an empty list match nothing; a bad term does not spoil a good one.
        assert!(!NodeSelector::parse(&json!({"nodeSelectorTerms": [{}]})).matches("n1", &node));
        assert!(!NodeSelector::parse(&json!({"nodeSelectorTerms": []})).matches("n1", &node));
        let mixed = NodeSelector::parse(&json!({"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["n1"]}]},
            {"matchExpressions": [{"key": "disk", "operator": "Exists"}]},
        ]}));
        assert!(mixed.matches("n1", &node));
        let not_in = NodeSelector::parse(
            &json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]}),
        );
        assert!(!not_in.matches("n1", &node) && not_in.matches("n2", &node));
    }

    #[test]
    fn named_nodes_as_prefilter() {
        let names = |terms: Value| NodeSelector::parse(&json!({"nodeSelectorTerms": terms})).named_nodes();
        let field = |op: &str, values: &[&str]| json!({"key": "metadata.name", "operator": op, "values": values});
        assert_eq!(names(json!([{"matchFields": [field("In", &["a", "b"])]}])), Some(vec!["a".into(), "b".into()]));
        assert_eq!(
            names(json!([{"matchFields": [field("In", &["a", "b"]), field("In", &["b", "c"])]}])),
            Some(vec!["b".into()])
        );
        assert_eq!(
            names(json!([{"matchFields": [field("In", &["a"])]}, {"matchFields": [field("In", &["c"])]}])),
            Some(vec!["a".into(), "c".into()])
        );
        assert_eq!(names(json!([{"matchFields": [field("In", &["a"]), field("In", &["b"])]}])), Some(vec![]));
        // A term without names lets every node through; NotIn names nothing.
        assert_eq!(
            names(
                json!([{"matchFields": [field("In", &["a"])]}, {"matchExpressions": [{"key": "x", "operator": "Exists"}]}])
            ),
            None
        );
        assert_eq!(names(json!([{"matchFields": [field("NotIn", &["a"])]}])), None);
    }

    #[test]
    fn tolerations() {
        let taint = |k: &str, v: &str, e: &str| Taint::parse(&json!({"key": k, "value": v, "effect": e}));
        let tol = |v: Value| Toleration::parse(&v);
        let t = taint("dedicated", "db", "NoSchedule");
        for (toleration, want) in [
            (json!({"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}), true),
            (json!({"key": "dedicated", "value": "db"}), true),
            (json!({"key": "dedicated", "value": "web"}), false),
            (json!({"key": "dedicated", "operator": "Exists"}), true),
            (json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"key": "other", "operator": "Exists"}), false),
            // An empty key with Equal only matches a taint with an empty key and value.
            (json!({"operator": "Equal"}), false),
            (json!({"key": "dedicated", "operator": "Lt", "value": "db"}), false),
        ] {
            assert_eq!(tol(toleration.clone()).tolerates(&t), want, "{toleration}");
        }
        assert!(taint("a", "", "NoExecute").blocks() && !taint("a", "", "PreferNoSchedule").blocks());
        assert!(tol(json!({"key": "a", "operator": "Exists"})).for_prefer_no_schedule());
        assert!(!tol(json!({"key": "a", "operator": "Exists", "effect": "NoSchedule"})).for_prefer_no_schedule());
    }
}
