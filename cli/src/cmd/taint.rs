//! `skerry taint`: adds, changes or removes taints of nodes (`key=value:Effect`, `key:Effect`,
//! `key:Effect-`, `key-`), with kubectl's parsing, checks, messages (`node/N tainted`,
//! `untainted`, `modified`) and exit codes. The new taint list is sent as a JSON merge patch.

use std::io::Write;

use serde_json::{json, Value};

use super::objects::{self, MERGE_PATCH};
use super::Ctx;
use crate::client;
use crate::error::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// node NAME... KEY_1=VAL_1:TAINT_EFFECT_1 ... KEY_N=VAL_N:TAINT_EFFECT_N
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Allow taints to be overwritten, otherwise a taint with the same key and effect is refused
    #[arg(long)]
    pub overwrite: bool,
    /// Select all nodes in the cluster
    #[arg(long)]
    pub all: bool,
    /// Selector (label query) to filter nodes on
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
}

/// One taint as the user wrote it; `effect` is empty when a removal names only the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: String,
}

impl Taint {
    fn from_json(v: &Value) -> Taint {
        let text = |k: &str| v[k].as_str().unwrap_or("").to_string();
        Taint { key: text("key"), value: text("value"), effect: text("effect") }
    }

    /// `key=value:Effect`, as kubectl's `Taint.ToString`.
    pub fn text(&self) -> String {
        let mut s = self.key.clone();
        if !self.value.is_empty() {
            s = format!("{s}={}", self.value);
        }
        if !self.effect.is_empty() {
            s = format!("{s}:{}", self.effect);
        }
        s
    }

    /// Go's `%v` of a `corev1.Taint` (`{key value NoSchedule <nil>}`), which kubectl prints in
    /// its duplicate error.
    fn go_value(&self) -> String {
        format!("{{{} {} {} <nil>}}", self.key, self.value, self.effect)
    }

    fn matches(&self, other: &Taint) -> bool {
        self.key == other.key && self.effect == other.effect
    }
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// kubectl's `parseTaint`: `key=value:Effect`, `key:Effect` or `key`.
fn parse_taint(spec: &str) -> std::result::Result<Taint, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (key, value, effect) = match parts.as_slice() {
        [key] => (*key, "", ""),
        [kv, effect] => {
            if !EFFECTS.contains(effect) {
                return Err(format!("invalid taint effect: {effect}, unsupported taint effect"));
            }
            let kv: Vec<&str> = kv.split('=').collect();
            match kv.as_slice() {
                [key] => (*key, "", *effect),
                [key, value] => {
                    if let Err(e) = super::label::validate_value(value) {
                        return Err(format!("invalid taint spec: {spec}, {e}"));
                    }
                    (*key, *value, *effect)
                }
                _ => return Err(format!("invalid taint spec: {spec}")),
            }
        }
        _ => return Err(format!("invalid taint spec: {spec}")),
    };
    if let Err(e) = super::label::validate_key(key) {
        return Err(format!("invalid taint spec: {spec}, {e}"));
    }
    Ok(Taint { key: key.into(), value: value.into(), effect: effect.into() })
}

/// kubectl's `ParseTaints`: the taints to add (each with an effect, unique by key and effect)
/// and those to remove (`…-`).
pub fn parse_taints(specs: &[String]) -> std::result::Result<(Vec<Taint>, Vec<Taint>), String> {
    let (mut add, mut remove): (Vec<Taint>, Vec<Taint>) = (Vec::new(), Vec::new());
    for spec in specs {
        if let Some(rest) = spec.strip_suffix('-') {
            let t = parse_taint(rest)?;
            remove.push(Taint { value: String::new(), ..t });
            continue;
        }
        let t = parse_taint(spec)?;
        if t.effect.is_empty() {
            return Err(format!("invalid taint spec: {spec}"));
        }
        if add.iter().any(|a| a.matches(&t)) {
            return Err(format!("duplicated taints with the same key and effect: {}", t.go_value()));
        }
        add.push(t);
    }
    Ok((add, remove))
}

/// Splits arguments into resource words and taint specs (kubectl: a spec has `=`, `:` or ends
/// in `-`; every resource comes first).
pub fn split_args(args: &[String]) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let (mut resources, mut specs) = (Vec::new(), Vec::new());
    for a in args {
        let is_taint = a.contains('=') || a.contains(':') || a.ends_with('-');
        match (is_taint, specs.is_empty()) {
            (true, _) => specs.push(a.clone()),
            (false, true) => resources.push(a.clone()),
            (false, false) => return Err(format!("all resources must be specified before taint changes: {a}")),
        }
    }
    Ok((resources, specs))
}

/// kubectl's `Validate`: no taint both added and removed.
pub fn check_conflicts(add: &[Taint], remove: &[Taint]) -> std::result::Result<(), String> {
    let conflicts: Vec<String> = add
        .iter()
        .flat_map(|a| remove.iter().filter(move |r| r.key == a.key && (r.effect.is_empty() || r.effect == a.effect)))
        .map(|r| format!("{}={}", r.key, r.effect))
        .collect();
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "can not both modify and remove the following taint(s) in the same command: {}",
            conflicts.join(", ")
        ))
    }
}

/// kubectl's `updateTaints` for one node: the operation it prints and the node's new taints,
/// or its error.
pub fn update_taints(
    node: &str,
    old: &[Taint],
    add: &[Taint],
    remove: &[Taint],
    overwrite: bool,
) -> std::result::Result<(&'static str, Vec<Taint>), String> {
    if !overwrite {
        let existing: Vec<&str> =
            add.iter().filter(|a| old.iter().any(|o| o.matches(a))).map(|a| a.key.as_str()).collect();
        if !existing.is_empty() {
            return Err(format!(
                "node {node} already has {} taint(s) with same effect(s) and --overwrite is false",
                existing.join(",")
            ));
        }
    }
    // ReorganizeTaints: the new taints, then the old ones they do not replace, minus removals.
    let mut taints: Vec<Taint> = add.to_vec();
    for o in old {
        if !taints.iter().any(|t| t.matches(o)) {
            taints.push(o.clone());
        }
    }
    let added = old.len() != taints.len();
    let mut errors = Vec::new();
    let mut deleted = false;
    for r in remove {
        let before = taints.len();
        if r.effect.is_empty() {
            taints.retain(|t| t.key != r.key);
        } else {
            taints.retain(|t| !t.matches(r));
        }
        deleted = taints.len() != before;
        if !deleted {
            errors.push(format!("taint {:?} not found", r.text()));
        }
    }
    if !errors.is_empty() {
        return Err(if errors.len() == 1 { errors.remove(0) } else { format!("[{}]", errors.join(", ")) });
    }
    let operation = if (added && deleted) || overwrite {
        "modified"
    } else if added {
        "tainted"
    } else {
        "untainted"
    };
    Ok((operation, taints))
}

fn taints_json(taints: &[Taint]) -> Value {
    if taints.is_empty() {
        return Value::Null;
    }
    Value::Array(
        taints
            .iter()
            .map(|t| {
                let mut v = json!({"key": t.key, "effect": t.effect});
                if !t.value.is_empty() {
                    v["value"] = json!(t.value);
                }
                v
            })
            .collect(),
    )
}

pub async fn run(ctx: &mut Ctx, args: Args) -> Result<()> {
    let (resources, specs) = split_args(&args.args).map_err(Error::Msg)?;
    if resources.is_empty() {
        return Err(Error::msg("one or more resources must be specified as <resource> <name>"));
    }
    if specs.is_empty() {
        return Err(Error::msg("at least one taint update is required"));
    }
    let (add, remove) =
        parse_taints(&specs).map_err(|e| Error::msg(format!("{e}\nSee 'skerry taint -h' for help and examples")))?;
    let disc = ctx.discovery().await?.clone();
    let word = resources[0].to_lowercase();
    if disc.resolve(&word)?.kind != "Node" {
        return Err(Error::msg(format!("invalid resource type {word}, only node types are supported")));
    }
    check_conflicts(&add, &remove).map_err(Error::Msg)?;
    if args.all && args.selector.is_some() {
        return Err(Error::msg("setting 'all' parameter with a non empty selector is prohibited"));
    }
    if !args.all && args.selector.is_none() && resources.len() < 2 {
        return Err(Error::msg("at least one resource name must be specified since 'all' parameter is not set"));
    }
    let mut nodes: Vec<(String, Option<Value>)> = Vec::new();
    if args.all || args.selector.is_some() {
        let q: Vec<(&str, String)> = args.selector.iter().map(|s| ("labelSelector", s.clone())).collect();
        let list = ctx.get_json(&format!("/api/v1/nodes{}", client::query(&q)), false).await?;
        for n in list["items"].as_array().into_iter().flatten() {
            nodes.push((n["metadata"]["name"].as_str().unwrap_or("").to_string(), Some(n.clone())));
        }
    } else {
        nodes.extend(resources[1..].iter().map(|n| (n.clone(), None)));
    }
    let mut errors = Vec::new();
    for (name, listed) in nodes {
        let path = format!("/api/v1/nodes/{}", client::encode(&name));
        let node = match listed {
            Some(n) => n,
            None => match objects::collect(ctx.get_json(&path, false).await, &mut errors)? {
                Some(n) => n,
                None => continue,
            },
        };
        let old: Vec<Taint> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Taint::from_json)
            .collect();
        let (operation, taints) = match update_taints(&name, &old, &add, &remove, args.overwrite) {
            Ok(r) => r,
            Err(e) => {
                errors.push(Error::Msg(e));
                continue;
            }
        };
        let patch = json!({"spec": {"taints": taints_json(&taints)}});
        if objects::collect(objects::patch(ctx, &path, MERGE_PATCH, &patch).await, &mut errors)?.is_none() {
            continue;
        }
        writeln!(ctx.out, "node/{name} {operation}")?;
    }
    super::finish(ctx, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn t(key: &str, value: &str, effect: &str) -> Taint {
        Taint { key: key.into(), value: value.into(), effect: effect.into() }
    }

    #[test]
    fn specs_parse_like_kubectl() {
        let (add, remove) =
            parse_taints(&s(&["dedicated=gpu:NoSchedule", "spot:PreferNoSchedule", "old:NoExecute-", "gone-"]))
                .unwrap();
        assert_eq!(add, [t("dedicated", "gpu", "NoSchedule"), t("spot", "", "PreferNoSchedule")]);
        assert_eq!(remove, [t("old", "", "NoExecute"), t("gone", "", "")]);
        assert_eq!(
            parse_taints(&s(&["k=v:Sometimes"])).unwrap_err(),
            "invalid taint effect: Sometimes, unsupported taint effect"
        );
        assert_eq!(parse_taints(&s(&["k:v:NoSchedule"])).unwrap_err(), "invalid taint spec: k:v:NoSchedule");
        assert_eq!(parse_taints(&s(&["k=a=b:NoSchedule"])).unwrap_err(), "invalid taint spec: k=a=b:NoSchedule");
        assert!(
            parse_taints(&s(&["k=v"])).unwrap_err().starts_with("invalid taint spec: k=v, "),
            "no effect: the key is k=v"
        );
        assert_eq!(parse_taints(&s(&["k"])).unwrap_err(), "invalid taint spec: k");
        assert!(parse_taints(&s(&["k=-v:NoSchedule"]))
            .unwrap_err()
            .starts_with("invalid taint spec: k=-v:NoSchedule, a valid label"));
        assert_eq!(
            parse_taints(&s(&["k=a:NoSchedule", "k=b:NoSchedule"])).unwrap_err(),
            "duplicated taints with the same key and effect: {k b NoSchedule <nil>}"
        );
        assert_eq!(
            split_args(&s(&["node", "n1", "k:NoSchedule"])).unwrap(),
            (s(&["node", "n1"]), s(&["k:NoSchedule"]))
        );
        assert_eq!(
            split_args(&s(&["node", "k:NoSchedule", "n1"])).unwrap_err(),
            "all resources must be specified before taint changes: n1"
        );
        assert_eq!(
            check_conflicts(&[t("k", "v", "NoSchedule")], &[t("k", "", "")]).unwrap_err(),
            "can not both modify and remove the following taint(s) in the same command: k="
        );
        assert!(check_conflicts(&[t("k", "v", "NoSchedule")], &[t("k", "", "NoExecute")]).is_ok());
    }

    #[test]
    fn updates_follow_reorganize_taints() {
        let old = [t("a", "1", "NoSchedule"), t("b", "", "NoExecute")];
        let (op, new) = update_taints("n", &old, &[t("c", "", "NoSchedule")], &[], false).unwrap();
        assert_eq!((op, new.len()), ("tainted", 3));
        assert_eq!(new[0].key, "c", "new taints first, as kubectl orders them");
        assert_eq!(
            update_taints("n", &old, &[t("a", "2", "NoSchedule")], &[], false).unwrap_err(),
            "node n already has a taint(s) with same effect(s) and --overwrite is false"
        );
        let (op, new) = update_taints("n", &old, &[t("a", "2", "NoSchedule")], &[], true).unwrap();
        assert_eq!((op, new), ("modified", vec![t("a", "2", "NoSchedule"), t("b", "", "NoExecute")]));
        let (op, new) = update_taints("n", &old, &[], &[t("a", "", "NoSchedule")], false).unwrap();
        assert_eq!((op, new), ("untainted", vec![t("b", "", "NoExecute")]));
        let (op, new) = update_taints("n", &old, &[], &[t("b", "", "")], false).unwrap();
        assert_eq!((op, new.len()), ("untainted", 1));
        assert_eq!(
            update_taints("n", &old, &[], &[t("z", "", "NoSchedule")], false).unwrap_err(),
            "taint \"z:NoSchedule\" not found"
        );
        let (op, _) = update_taints("n", &old, &[t("c", "", "NoSchedule")], &[t("b", "", "")], false).unwrap();
        assert_eq!(op, "modified");
        assert_eq!(taints_json(&[]), Value::Null);
        assert_eq!(taints_json(&[t("a", "", "NoSchedule")]), json!([{"key": "a", "effect": "NoSchedule"}]));
    }
}
