//! A Job's `successPolicy`, validated as upstream validates it: only for
//! Indexed Jobs, 1 to 20 rules, each with `succeededIndexes` (increasing
//! intervals within the completions), `succeededCount` (no more than the
//! completions or the indexes it counts among), or both.

use kybern_apimachinery::Cause;
use serde_json::Value;

/// Rules a success policy may hold.
const MAX_RULES: usize = 20;

/// Characters a rule's `succeededIndexes` may take.
const MAX_INDEXES_CHARS: usize = 64 * 1024;

/// The causes `spec.successPolicy` of a Job's `spec` gives.
pub fn validate(spec: &Value, causes: &mut Vec<Cause>) {
    let Some(policy) = spec.get("successPolicy").filter(|p| !p.is_null()) else {
        return;
    };
    if spec.get("completionMode").and_then(Value::as_str) != Some("Indexed") {
        causes.push(Cause::invalid(
            "spec.successPolicy",
            policy,
            "requires indexed completion mode",
        ));
        return;
    }
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if rules.is_empty() {
        causes.push(Cause::required(
            "spec.successPolicy.rules",
            "at least one rules must be specified when the successPolicy is specified",
        ));
    }
    if rules.len() > MAX_RULES {
        causes.push(Cause::too_many(
            "spec.successPolicy.rules",
            rules.len(),
            MAX_RULES,
        ));
    }
    let completions = spec.get("completions").and_then(Value::as_i64).unwrap_or(0);
    for (i, rule) in rules.iter().enumerate() {
        rule_causes(
            rule,
            &format!("spec.successPolicy.rules[{i}]"),
            completions,
            causes,
        );
    }
}

fn rule_causes(rule: &Value, path: &str, completions: i64, causes: &mut Vec<Cause>) {
    let indexes = rule.get("succeededIndexes").filter(|v| !v.is_null());
    let count = rule.get("succeededCount").filter(|v| !v.is_null());
    if indexes.is_none() && count.is_none() {
        causes.push(Cause::required(
            path,
            "at least one of succeededCount or succeededIndexes must be specified",
        ));
    }
    let mut total = None;
    if let Some(value) = indexes {
        let field = format!("{path}.succeededIndexes");
        let text = value.as_str().unwrap_or_default();
        if text.len() > MAX_INDEXES_CHARS {
            causes.push(Cause::too_long(field.clone(), MAX_INDEXES_CHARS));
        }
        match index_count(text, completions) {
            Ok(n) => total = Some(n),
            Err(why) => causes.push(Cause::invalid(
                field,
                value,
                format!("error parsing succeededIndexes: {why}"),
            )),
        }
    }
    if let Some(value) = count {
        let field = format!("{path}.succeededCount");
        let n = value.as_i64().unwrap_or(-1);
        if n < 0 {
            causes.push(Cause::invalid(
                field.clone(),
                value,
                "must be greater than or equal to 0",
            ));
        }
        if n > completions {
            causes.push(Cause::invalid(
                field.clone(),
                value,
                format!(
                    "must be less than or equal to {completions} (the number of specified completions)"
                ),
            ));
        }
        if let Some(total) = total
            && n > total
        {
            causes.push(Cause::invalid(
                field,
                value,
                format!(
                    "must be less than or equal to {total} (the number of indexes in the specified succeededIndexes field)"
                ),
            ));
        }
    }
}

/// How many indexes `text` (`"1,3-5,7"`) names, each below `completions`
/// and in increasing order, or why it is malformed, in upstream's words.
fn index_count(text: &str, completions: i64) -> Result<i64, String> {
    if text.is_empty() {
        return Ok(0);
    }
    let number = |s: &str| {
        s.parse::<i64>()
            .ok()
            .ok_or_else(|| format!("cannot convert string to integer for index: {s:?}"))
    };
    let (mut last, mut total) = (None::<i64>, 0);
    for interval in text.split(',') {
        let limits: Vec<&str> = interval.split('-').collect();
        if limits.len() > 2 {
            return Err(format!(
                "the fragment {interval:?} violates the requirement that an index interval can have at most two parts separated by '-'"
            ));
        }
        let first = number(limits[0])?;
        if first >= completions {
            return Err(format!("too large index: {:?}", limits[0]));
        }
        if let Some(last) = last
            && last >= first
        {
            return Err(format!(
                "non-increasing order, previous: {last}, current: {first}"
            ));
        }
        total += 1;
        last = Some(first);
        if let Some(end) = limits.get(1) {
            let end_index = number(end)?;
            if end_index >= completions {
                return Err(format!("too large index: {end:?}"));
            }
            if first >= end_index {
                return Err(format!(
                    "non-increasing order, previous: {first}, current: {end_index}"
                ));
            }
            total += end_index - first;
            last = Some(end_index);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn causes_of(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&spec, &mut causes);
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn index_lists_are_counted_or_refused_in_upstreams_words() {
        assert_eq!(index_count("", 5), Ok(0));
        assert_eq!(index_count("0,2-4", 5), Ok(4));
        for (text, why) in [
            ("1-2-3", "at most two parts"),
            ("a", "cannot convert string to integer for index: \"a\""),
            ("-1", "cannot convert string to integer for index: \"\""),
            ("5", "too large index: \"5\""),
            ("0-7", "too large index: \"7\""),
            ("3,1", "non-increasing order, previous: 3, current: 1"),
            ("2-2", "non-increasing order, previous: 2, current: 2"),
        ] {
            let err = index_count(text, 5).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn success_policies_are_validated_as_upstream_validates_them() {
        let indexed = |rules: Value| json!({"completionMode": "Indexed", "completions": 4, "successPolicy": {"rules": rules}});
        assert!(
            causes_of(indexed(
                json!([{"succeededIndexes": "0-1", "succeededCount": 2}])
            ))
            .is_empty()
        );
        let non_indexed =
            json!({"completions": 4, "successPolicy": {"rules": [{"succeededCount": 1}]}});
        assert!(causes_of(non_indexed)[0].contains("requires indexed completion mode"));
        assert!(causes_of(indexed(json!([])))[0].starts_with("spec.successPolicy.rules: "));
        let many: Vec<Value> = (0..21).map(|_| json!({"succeededCount": 1})).collect();
        assert_eq!(causes_of(indexed(json!(many))).len(), 1);
        let causes = causes_of(indexed(
            json!([{}, {"succeededCount": 5}, {"succeededIndexes": "0-1", "succeededCount": 3}]),
        ));
        assert_eq!(causes.len(), 3, "{causes:?}");
        assert!(
            causes[0].starts_with("spec.successPolicy.rules[0]: "),
            "{causes:?}"
        );
        assert!(
            causes[1].contains("rules[1].succeededCount")
                && causes[1].contains("(the number of specified completions)"),
            "{causes:?}"
        );
        assert!(
            causes[2].contains("rules[2].succeededCount")
                && causes[2].contains("must be less than or equal to 2"),
            "{causes:?}"
        );
        let causes = causes_of(indexed(json!([{"succeededIndexes": "4"}])));
        assert!(
            causes[0].contains("error parsing succeededIndexes: too large index"),
            "{causes:?}"
        );
    }
}
