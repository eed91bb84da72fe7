//! Label selectors: upstream's string syntax (`a=b,c!=d,e in (f,g),!h`) and the
//! structured `LabelSelector` (`matchLabels`, `matchExpressions`), and matching.

use serde_json::Value;

use crate::names;

/// A requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`
    Equals,
    /// `key!=value` (also true when the key is absent)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also true when the key is absent)
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>n` (integers)
    GreaterThan,
    /// `key<n` (integers)
    LessThan,
}

/// One clause of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (one for `=`/`!=`/`>`/`<`, any number for `in`/`notin`, none otherwise).
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether labels (looked up through `get`) satisfy this requirement.
    pub fn matches<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        let value = get(&self.key);
        match self.op {
            Operator::Equals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|w| w == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.iter().any(|w| w == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

/// A parsed label selector: all requirements must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// The requirements, all of which must match.
    pub requirements: Vec<Requirement>,
}

/// Why a selector could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
    In,
    NotIn,
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            (c, _) if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ('!', Some('=')) => (Token::NotEq, 2),
            ('!', _) => (Token::Not, 1),
            ('=', Some('=')) => (Token::DoubleEq, 2),
            ('=', _) => (Token::Eq, 1),
            ('>', _) => (Token::Gt, 1),
            ('<', _) => (Token::Lt, 1),
            (',', _) => (Token::Comma, 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !"!=<>,()".contains(chars[i])
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                });
                continue;
            }
        };
        tokens.push(tok);
        i += len;
    }
    tokens
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let errs = names::qualified_name(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[0][{key}]: Invalid value: {key:?}: {}",
            errs.join("; ")
        )))
    }
}

fn check_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let errs = names::label_value(value);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "unable to parse requirement: values[0][{key}]: Invalid value: {value:?}: {}",
            errs.join("; ")
        )))
    }
}

impl Selector {
    /// Selects everything.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// True when this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Parses upstream's selector syntax.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input);
        let mut pos = 0;
        let mut requirements = Vec::new();
        let unexpected = |found: Option<&Token>, expected: &str| {
            let found = match found {
                Some(Token::Ident(s)) => s.clone(),
                Some(t) => format!("{t:?}"),
                None => "end of input".to_owned(),
            };
            SelectorError(format!("found '{found}', expected: {expected}"))
        };
        while pos < tokens.len() {
            // One requirement.
            let req = if tokens[pos] == Token::Not {
                pos += 1;
                let Some(Token::Ident(key)) = tokens.get(pos) else {
                    return Err(unexpected(tokens.get(pos), "identifier after '!'"));
                };
                pos += 1;
                check_key(key)?;
                Requirement {
                    key: key.clone(),
                    op: Operator::DoesNotExist,
                    values: vec![],
                }
            } else {
                let Some(Token::Ident(key)) = tokens.get(pos) else {
                    return Err(unexpected(tokens.get(pos), "!, identifier"));
                };
                let key = key.clone();
                pos += 1;
                check_key(&key)?;
                match tokens.get(pos) {
                    None | Some(Token::Comma) => Requirement {
                        key,
                        op: Operator::Exists,
                        values: vec![],
                    },
                    Some(
                        op @ (Token::Eq | Token::DoubleEq | Token::NotEq | Token::Gt | Token::Lt),
                    ) => {
                        let op = match op {
                            Token::NotEq => Operator::NotEquals,
                            Token::Gt => Operator::GreaterThan,
                            Token::Lt => Operator::LessThan,
                            _ => Operator::Equals,
                        };
                        pos += 1;
                        // A missing value after '=' means the empty value.
                        let value = match tokens.get(pos) {
                            Some(Token::Ident(v)) => {
                                pos += 1;
                                v.clone()
                            }
                            None | Some(Token::Comma)
                                if matches!(op, Operator::Equals | Operator::NotEquals) =>
                            {
                                String::new()
                            }
                            other => return Err(unexpected(other, "identifier")),
                        };
                        if matches!(op, Operator::GreaterThan | Operator::LessThan)
                            && value.parse::<i64>().is_err()
                        {
                            return Err(SelectorError(format!(
                                "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"
                            )));
                        }
                        check_value(&key, &value)?;
                        Requirement {
                            key,
                            op,
                            values: vec![value],
                        }
                    }
                    Some(op @ (Token::In | Token::NotIn)) => {
                        let op = if *op == Token::In {
                            Operator::In
                        } else {
                            Operator::NotIn
                        };
                        pos += 1;
                        if tokens.get(pos) != Some(&Token::Open) {
                            return Err(unexpected(tokens.get(pos), "'('"));
                        }
                        pos += 1;
                        let mut values = Vec::new();
                        loop {
                            match tokens.get(pos) {
                                Some(Token::Ident(v)) => {
                                    check_value(&key, v)?;
                                    values.push(v.clone());
                                    pos += 1;
                                }
                                // `in (a,,b)` and `in ()` hold empty values, as upstream.
                                Some(Token::Comma | Token::Close) => values.push(String::new()),
                                other => return Err(unexpected(other, "identifier, ',' or ')'")),
                            }
                            match tokens.get(pos) {
                                Some(Token::Comma) => pos += 1,
                                Some(Token::Close) => {
                                    pos += 1;
                                    break;
                                }
                                other => return Err(unexpected(other, "',' or ')'")),
                            }
                        }
                        values.sort();
                        values.dedup();
                        Requirement { key, op, values }
                    }
                    other => return Err(unexpected(other, "=, !=, ==, in, notin, >, <")),
                }
            };
            requirements.push(req);
            match tokens.get(pos) {
                None => break,
                Some(Token::Comma) => {
                    pos += 1;
                    if pos == tokens.len() {
                        return Err(unexpected(None, "identifier after ','"));
                    }
                }
                other => return Err(unexpected(other, "','")),
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels` and
    /// `matchExpressions`). `null` or `{}` selects everything.
    pub fn from_label_selector(value: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(ml) = value.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                let v = v
                    .as_str()
                    .ok_or_else(|| SelectorError(format!("matchLabels[{k}] must be a string")))?;
                check_key(k)?;
                check_value(k, v)?;
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Operator::Equals,
                    values: vec![v.to_owned()],
                });
            }
        }
        if let Some(exprs) = value.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SelectorError("matchExpressions[].key is required".into()))?;
                check_key(key)?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Operator::In,
                    Some("NotIn") => Operator::NotIn,
                    Some("Exists") => Operator::Exists,
                    Some("DoesNotExist") => Operator::DoesNotExist,
                    other => {
                        return Err(SelectorError(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                let needs_values = matches!(op, Operator::In | Operator::NotIn);
                if needs_values == values.is_empty() {
                    return Err(SelectorError(format!(
                        "values: Invalid value: {values:?}: {}",
                        if needs_values {
                            "for 'in', 'notin' operators, values set can't be empty"
                        } else {
                            "values set must be empty for exists and does not exist"
                        }
                    )));
                }
                requirements.push(Requirement {
                    key: key.to_owned(),
                    op,
                    values,
                });
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector { requirements })
    }

    /// Whether a `metadata.labels` object satisfies every requirement.
    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let map = labels.and_then(Value::as_object);
        self.matches_with(|k| map.and_then(|m| m.get(k)).and_then(Value::as_str))
    }

    /// Whether labels, looked up through `get`, satisfy every requirement.
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(&get))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                Operator::Equals => format!("{}={}", r.key, r.values[0]),
                Operator::NotEquals => format!("{}!={}", r.key, r.values[0]),
                Operator::GreaterThan => format!("{}>{}", r.key, r.values[0]),
                Operator::LessThan => format!("{}<{}", r.key, r.values[0]),
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_every_operator() {
        let labels = json!({"app": "web", "tier": "front", "n": "5"});
        let l = Some(&labels);
        assert!(sel("").matches_labels(l));
        assert!(sel("app=web").matches_labels(l));
        assert!(sel("app==web").matches_labels(l));
        assert!(sel("app = web , tier").matches_labels(l));
        assert!(!sel("app!=web").matches_labels(l));
        assert!(sel("missing!=x").matches_labels(l));
        assert!(sel("tier in (front, back)").matches_labels(l));
        assert!(!sel("tier notin (front)").matches_labels(l));
        assert!(sel("missing notin (front)").matches_labels(l));
        assert!(sel("!missing").matches_labels(l));
        assert!(!sel("!app").matches_labels(l));
        assert!(sel("n>4,n<6").matches_labels(l));
        assert!(!sel("n>5").matches_labels(l));
        assert!(sel("app.kubernetes.io/name!=x").matches_labels(None));
        assert!(!sel("app").matches_labels(None));
        assert!(sel("app=").matches_labels(Some(&json!({"app": ""}))));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "app=web,",
            "=web",
            "app in web",
            "app in (a",
            "a b",
            "app>x",
            "!",
            "bad key=1",
            "app=in valid",
            "-x=1",
            "a=b=c",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Selector::parse(&format!("a={}", "v".repeat(64))).is_err());
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(
            sel("tier in (b,a), app=web").to_string(),
            "app=web,tier in (a,b)"
        );
    }

    #[test]
    fn structured_selectors() {
        let s = Selector::from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}, {"key": "x", "operator": "DoesNotExist"}]
        }))
        .expect("valid");
        assert!(s.matches_labels(Some(&json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches_labels(Some(&json!({"app": "web", "tier": "front", "x": "1"}))));
        assert!(
            Selector::from_label_selector(&json!({}))
                .expect("empty")
                .is_empty()
        );
        assert!(
            Selector::from_label_selector(
                &json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
            )
            .is_err()
        );
        assert!(
            Selector::from_label_selector(
                &json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]})
            )
            .is_err()
        );
    }
}
