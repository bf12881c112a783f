//! Property tests: whatever users send, validation answers with an error or an object — it
//! never panics — and selectors agree with the labels they were built from.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{admit, resource, selector::Selector};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z0-9 ._/-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("image".to_string()),
                    Just("containers".to_string()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn selector_parsing_never_panics(s in "\\PC{0,40}") {
        let _ = Selector::parse(&s);
    }

    #[test]
    fn admit_never_panics(metadata in arb_json(), spec in arb_json()) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
        let _ = admit(&resource::PODS, pod);
    }

    #[test]
    fn map_selectors_match_their_own_labels(labels in prop::collection::btree_map("[a-z][a-z0-9]{0,8}", "[a-z0-9]{0,8}", 0..5)) {
        let labels: BTreeMap<String, String> = labels;
        prop_assert!(Selector::from_map(&labels).matches(&labels));
        let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parsed = Selector::parse(&text.join(",")).unwrap();
        prop_assert!(parsed.matches(&labels));
    }
}
