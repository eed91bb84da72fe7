//! Matching rules shared by plugins: node selector terms, label selectors on
//! typed objects, and taint tolerations, as upstream's helpers define them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kybern_apimachinery::labels::{Operator, Requirement, Selector};

/// A node selector term compiled to label requirements (all must hold).
/// `None` when the term holds an operator upstream would have refused.
pub fn compile_term(term: &NodeSelectorTerm) -> Option<Vec<Requirement>> {
    let mut out = Vec::new();
    for e in term.match_expressions.iter().flatten() {
        let op = match e.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::GreaterThan,
            "Lt" => Operator::LessThan,
            _ => return None,
        };
        out.push(Requirement {
            key: e.key.clone(),
            op,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    // Field selectors on a node support only `metadata.name`; the label
    // `kubernetes.io/hostname` is what users use, and `matchFields` maps to the name.
    for f in term.match_fields.iter().flatten() {
        if f.key != "metadata.name" {
            return None;
        }
        let op = match f.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            _ => return None,
        };
        out.push(Requirement {
            key: FIELD_NAME.into(),
            op,
            values: f.values.clone().unwrap_or_default(),
        });
    }
    Some(out)
}

/// The pseudo-label a compiled `matchFields` requirement reads.
const FIELD_NAME: &str = "\u{0}metadata.name";

/// Whether a node (its name and labels) satisfies compiled requirements. An
/// empty term matches nothing, as upstream.
pub fn term_matches(reqs: &[Requirement], name: &str, labels: &BTreeMap<String, String>) -> bool {
    if reqs.is_empty() {
        return false;
    }
    let get = |k: &str| {
        if k == FIELD_NAME {
            Some(name)
        } else {
            labels.get(k).map(String::as_str)
        }
    };
    reqs.iter().all(|r| r.matches(&get))
}

/// A typed `LabelSelector` as a selector; a malformed one selects nothing.
pub fn label_selector(sel: &LabelSelector) -> Option<Selector> {
    let value = serde_json::to_value(sel).ok()?;
    Selector::from_label_selector(&value).ok()
}

/// Whether labels satisfy a selector.
pub fn selector_matches(sel: &Selector, labels: &BTreeMap<String, String>) -> bool {
    let get = |k: &str| labels.get(k).map(String::as_str);
    sel.requirements.iter().all(|r| r.matches(&get))
}

/// Whether a toleration tolerates a taint (`Exists` matches any value, an
/// empty key with `Exists` matches every taint, an empty effect every effect).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_follow_upstream_rules() {
        let t = |v: serde_json::Value| -> Toleration { serde_json::from_value(v).expect("tol") };
        let gpu = taint("gpu", "true", "NoSchedule");
        assert!(tolerates(
            &t(serde_json::json!({"key": "gpu", "value": "true"})),
            &gpu
        ));
        assert!(!tolerates(
            &t(serde_json::json!({"key": "gpu", "value": "no"})),
            &gpu
        ));
        assert!(tolerates(
            &t(serde_json::json!({"key": "gpu", "operator": "Exists"})),
            &gpu
        ));
        assert!(tolerates(
            &t(serde_json::json!({"operator": "Exists"})),
            &gpu
        ));
        assert!(!tolerates(
            &t(serde_json::json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"})),
            &gpu
        ));
        assert_eq!(
            untolerated(
                std::slice::from_ref(&gpu),
                &[],
                &["NoSchedule", "NoExecute"]
            ),
            Some(&gpu)
        );
    }

    #[test]
    fn node_selector_terms() {
        let term: NodeSelectorTerm = serde_json::from_value(serde_json::json!({
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "cores", "operator": "Gt", "values": ["4"]}
            ],
            "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n9"]}]
        }))
        .expect("term");
        let reqs = compile_term(&term).expect("compiles");
        let labels = |z: &str, c: &str| {
            BTreeMap::from([
                ("zone".to_owned(), z.to_owned()),
                ("cores".to_owned(), c.to_owned()),
            ])
        };
        assert!(term_matches(&reqs, "n1", &labels("a", "8")));
        assert!(!term_matches(&reqs, "n9", &labels("a", "8")));
        assert!(!term_matches(&reqs, "n1", &labels("c", "8")));
        assert!(!term_matches(&reqs, "n1", &labels("a", "2")));
        assert!(
            !term_matches(&[], "n1", &labels("a", "8")),
            "an empty term matches nothing"
        );
    }
}
