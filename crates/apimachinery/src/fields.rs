//! Field selectors: `metadata.name=x,spec.nodeName!=`, with `\` escapes, as upstream.

/// A field requirement's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`
    Equals,
    /// `!=`
    NotEquals,
}

/// One clause of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub op: FieldOp,
    /// The value (unescaped).
    pub value: String,
}

/// A parsed field selector; every requirement must hold. Empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The requirements.
    pub requirements: Vec<FieldRequirement>,
}

/// Why a field selector could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldSelectorError(pub String);

/// Splits on unescaped `sep`, keeping escapes in the pieces.
fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn unescape(s: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(other) => {
                    return Err(FieldSelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
                None => {
                    return Err(FieldSelectorError(
                        "invalid field selector: unterminated escape sequence".into(),
                    ));
                }
            }
        } else if matches!(c, ',' | '=' | '!') {
            return Err(FieldSelectorError(format!(
                "invalid field selector: unescaped {c:?} in value"
            )));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses upstream's field selector syntax.
    pub fn parse(input: &str) -> Result<Self, FieldSelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for part in split_unescaped(input, ',') {
            let (field, op, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, FieldOp::NotEquals, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, FieldOp::Equals, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, FieldOp::Equals, v)
            } else {
                return Err(FieldSelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(FieldSelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                op,
                value: unescape(value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// True when this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's fields (looked up through `get`; `None` for a field the
    /// object's kind does not support) satisfy every requirement.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            match r.op {
                FieldOp::Equals => v == r.value,
                FieldOp::NotEquals => v != r.value,
            }
        })
    }

    /// The value this selector requires for `field` with `=`, if any (used to
    /// narrow a list, e.g. `metadata.name`).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = FieldSelector::parse("metadata.name=web,spec.nodeName!=,status.phase==Running")
            .expect("parse");
        assert_eq!(s.requirements.len(), 3);
        let fields = |f: &str| match f {
            "metadata.name" => Some("web".to_owned()),
            "spec.nodeName" => Some("node-1".to_owned()),
            "status.phase" => Some("Running".to_owned()),
            _ => None,
        };
        assert!(s.matches(fields));
        assert!(
            !FieldSelector::parse("spec.nodeName=")
                .expect("parse")
                .matches(fields)
        );
        assert_eq!(s.required_value("metadata.name"), Some("web"));
    }

    #[test]
    fn escapes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b\=c").expect("parse");
        assert_eq!(s.requirements[0].value, "a,b=c");
        assert!(FieldSelector::parse(r"metadata.name=a\q").is_err());
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("=x").is_err());
        assert!(FieldSelector::parse("").expect("empty").is_empty());
    }
}
