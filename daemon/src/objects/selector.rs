//! Label selectors: the `-l` string syntax and the `matchLabels`/`matchExpressions` form, and matching.

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the string form (`app=web,tier!=db,env in (a,b),!legacy`).
    pub fn parse(input: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for term in split_terms(input) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_term(term)?);
        }
        Ok(Selector(requirements))
    }

    /// Builds a selector from a plain map (ReplicationController, Service).
    pub fn from_map(map: &BTreeMap<String, String>) -> Selector {
        Selector(map.iter().map(|(k, v)| Requirement::Equals(k.clone(), v.clone())).collect())
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels` and `matchExpressions`).
    pub fn from_label_selector(value: &serde_json::Value) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        if let Some(map) = value.get("matchLabels").and_then(|m| m.as_object()) {
            for (k, v) in map {
                let v = v.as_str().ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                requirements.push(Requirement::Equals(k.clone(), v.to_string()));
            }
        }
        if let Some(exprs) = value.get("matchExpressions").and_then(|m| m.as_array()) {
            for e in exprs {
                let key = e.get("key").and_then(|k| k.as_str()).ok_or("matchExpressions: key is required")?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let key = key.to_string();
                requirements.push(match e.get("operator").and_then(|o| o.as_str()) {
                    Some("In") => Requirement::In(key, values),
                    Some("NotIn") => Requirement::NotIn(key, values),
                    Some("Exists") => Requirement::Exists(key),
                    Some("DoesNotExist") => Requirement::DoesNotExist(key),
                    other => return Err(format!("matchExpressions: unknown operator {other:?}")),
                });
            }
        }
        Ok(Selector(requirements))
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let bad = || format!("unable to parse requirement: {term:?}");
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(checked_key(key.trim())?));
    }
    for (op, set_op) in [(" notin ", true), (" in ", false)] {
        if let Some((key, rest)) = term.split_once(op) {
            let rest = rest.trim();
            let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
            let values: Vec<String> =
                inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
            for v in &values {
                super::validation::label_value(v)?;
            }
            let key = checked_key(key.trim())?;
            return Ok(if set_op { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = term.split_once(op) {
            let key = checked_key(key.trim())?;
            let value = value.trim().to_string();
            super::validation::label_value(&value)?;
            return Ok(if negate { Requirement::NotEquals(key, value) } else { Requirement::Equals(key, value) });
        }
    }
    Ok(Requirement::Exists(checked_key(term)?))
}

fn checked_key(key: &str) -> Result<String, String> {
    super::validation::qualified_name(key)?;
    Ok(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn string_selectors() {
        let l = labels(&[("app", "webapp"), ("release", "0")]);
        assert!(Selector::parse("").unwrap().matches(&l));
        assert!(Selector::parse("release=0").unwrap().matches(&l));
        assert!(Selector::parse("release==0,app=webapp").unwrap().matches(&l));
        assert!(!Selector::parse("release!=0").unwrap().matches(&l));
        assert!(Selector::parse("release in (0, 1)").unwrap().matches(&l));
        assert!(!Selector::parse("release notin (0,1)").unwrap().matches(&l));
        assert!(Selector::parse("app,!tier").unwrap().matches(&l));
        assert!(!Selector::parse("tier").unwrap().matches(&l));
        assert!(Selector::parse("a b=c").is_err());
        assert!(Selector::parse("release in 0").is_err());
    }

    #[test]
    fn object_selectors() {
        let sel = Selector::from_label_selector(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]
        }))
        .unwrap();
        assert!(sel.matches(&labels(&[("app", "web")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "db")])));
    }
}
