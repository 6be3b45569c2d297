//! Label and field selectors with the grammar, validation and matching rules of
//! `k8s.io/apimachinery/pkg/labels` and `.../fields`.
//!
//! Public API:
//! - [`LabelSelector::parse`]`(&str) -> Result<LabelSelector, SelectorError>`;
//!   [`LabelSelector::matches`]`(&BTreeMap<String, String>)`,
//!   [`LabelSelector::matches_value`]`(Option<&Value>)` (a `metadata.labels` value) and
//!   [`LabelSelector::matches_object`]`(&Value)`.
//! - [`FieldSelector::parse`]`(&str)` (only `metadata.name`/`metadata.namespace`, like the generic
//!   registry), [`FieldSelector::parse_with`]`(&str, &[&str])` for kinds that support more fields
//!   (e.g. Secret `type`, Namespace `status.phase`), [`FieldSelector::matches`]`(&Value)`.
//!
//! Error texts are those of the Go parser, so a `400 BadRequest` carries the same message.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A selector that could not be parsed or names an unsupported field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Syntax error, e.g. `found ')', expected: identifier`.
    #[error("{0}")]
    Syntax(String),
    /// A key or value that is not a valid label key/value.
    #[error("unable to parse requirement: {0}")]
    InvalidRequirement(String),
    /// A field selector on a field the resource does not index.
    #[error("field label not supported: {0}")]
    FieldNotSupported(String),
}

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`: also matches objects without the label.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`: also matches objects without the label.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5` (integer comparison).
    GreaterThan,
    /// `key<5` (integer comparison).
    LessThan,
}

/// One `key op values` requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (sorted, deduplicated), empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl Requirement {
    /// Evaluates the requirement given the label's value (`None` = label absent).
    fn holds(&self, got: Option<&str>) -> bool {
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Operator::Equals | Operator::In => got.is_some_and(contains),
            Operator::NotEquals | Operator::NotIn => !got.is_some_and(contains),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (got, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
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

/// A parsed label selector: the conjunction of its requirements (empty matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// The requirements, in the order given.
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Tok::Ident(s) => s.as_str(),
            Tok::Not => "!",
            Tok::Eq => "=",
            Tok::DoubleEq => "==",
            Tok::NotEq => "!=",
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::End => "",
        };
        f.write_str(s)
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Tok> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('=', Some('=')) => (Tok::DoubleEq, 2),
                ('!', Some('=')) => (Tok::NotEq, 2),
                ('=', _) => (Tok::Eq, 1),
                ('!', _) => (Tok::Not, 1),
                ('(', _) => (Tok::Open, 1),
                (')', _) => (Tok::Close, 1),
                (',', _) => (Tok::Comma, 1),
                ('>', _) => (Tok::Gt, 1),
                _ => (Tok::Lt, 1),
            };
            out.push(tok);
            i += len;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Ident(word),
            });
        }
    }
    out.push(Tok::End);
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::End)
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn syntax<T>(msg: String) -> Result<T, SelectorError> {
        Err(SelectorError::Syntax(msg))
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::Ident(_) | Tok::Not => {
                    // Errors inside a requirement are wrapped, as `labels.Parse` does.
                    let req = self.requirement().map_err(|e| match e {
                        SelectorError::Syntax(m) => SelectorError::InvalidRequirement(m),
                        other => other,
                    })?;
                    reqs.push(req);
                    match self.next() {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => match self.peek() {
                            Tok::Ident(_) | Tok::Not => {}
                            t => {
                                return Self::syntax(format!(
                                    "found '{t}', expected: identifier after ','"
                                ));
                            }
                        },
                        t => {
                            return Self::syntax(format!(
                                "found '{t}', expected: ',' or 'end of string'"
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return Self::syntax(format!(
                        "found '{t}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = *self.peek() == Tok::Not;
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Tok::Ident(k) => k,
            t => return Self::syntax(format!("found '{t}', expected: identifier")),
        };
        validate_label_key(&key)?;
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Ok(Requirement {
                key,
                op,
                values: Vec::new(),
            });
        }
        if negated {
            // `!key` ends the requirement; whatever follows is the caller's syntax error.
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: Vec::new(),
            });
        }
        let op = match self.next() {
            Tok::Eq | Tok::DoubleEq => Operator::Equals,
            Tok::NotEq => Operator::NotEquals,
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Gt => Operator::GreaterThan,
            Tok::Lt => Operator::LessThan,
            t => {
                return Self::syntax(format!(
                    "found '{t}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        };
        let mut values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::InvalidRequirement(
                    "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty".to_owned(),
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                let v = values.first().cloned().unwrap_or_default();
                if v.parse::<i64>().is_err() {
                    return Err(SelectorError::InvalidRequirement(format!(
                        "values[0]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                    )));
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            validate_label_value(i, v)?;
        }
        values.sort();
        values.dedup();
        Ok(Requirement { key, op, values })
    }

    fn exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek().clone() {
            Tok::End | Tok::Comma => Ok(String::new()),
            Tok::Ident(v) => {
                self.pos += 1;
                Ok(v)
            }
            // Keywords are plain values after `=`.
            Tok::In | Tok::NotIn => Ok(self.next().to_string()),
            t => Self::syntax(format!("found '{t}', expected: identifier")),
        }
    }

    /// `parseValues` + `parseIdentifiersList` of the Go parser: `()` is the set `{""}`, and
    /// leading, trailing or doubled commas add `""`.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Tok::Open => {}
            t => return Self::syntax(format!("found '{t}' expected: '('")),
        }
        let is_value = |t: &Tok| matches!(t, Tok::Ident(_) | Tok::In | Tok::NotIn);
        match self.peek().clone() {
            Tok::Close => {
                self.pos += 1;
                return Ok(vec![String::new()]);
            }
            t if is_value(&t) || t == Tok::Comma => {}
            t => {
                return Self::syntax(format!("found '{t}', expected: ',', ')' or identifier"));
            }
        }
        let mut values: Vec<String> = Vec::new();
        loop {
            match self.next() {
                t if is_value(&t) => {
                    values.push(t.to_string());
                    match self.peek().clone() {
                        Tok::Comma => {}
                        Tok::Close => break,
                        t2 => return Self::syntax(format!("found '{t2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek() {
                        Tok::Close => {
                            values.push(String::new());
                            break;
                        }
                        Tok::Comma => {
                            self.pos += 1;
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                t => return Self::syntax(format!("found '{t}', expected: ',', or identifier")),
            }
        }
        match self.next() {
            Tok::Close => Ok(values),
            t => Self::syntax(format!("found '{t}', expected: ')'")),
        }
    }
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first)
        && is_alnum(last)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// RFC 1123 subdomain: lowercase alphanumerics, `-`, `.`, each label starting and ending alnum.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            let (Some(f), Some(e)) = (l.chars().next(), l.chars().last()) else {
                return false;
            };
            let lc = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            lc(f) && lc(e) && l.chars().all(|c| lc(c) || c == '-')
        })
}

const QN_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let bad = |why: String| {
        Err(SelectorError::InvalidRequirement(format!(
            "key: Invalid value: \"{key}\": {why}"
        )))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.contains('/') {
        return bad("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_owned());
    }
    if let Some(p) = prefix {
        if p.is_empty() {
            return bad("prefix part must be non-empty".to_owned());
        }
        if !is_dns1123_subdomain(p) {
            return bad("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_owned());
        }
    }
    if name.is_empty() {
        return bad("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return bad("name part must be no more than 63 characters".to_owned());
    }
    if !is_qualified_name_part(name) {
        return bad(QN_MSG.to_owned());
    }
    Ok(())
}

fn validate_label_value(i: usize, v: &str) -> Result<(), SelectorError> {
    if v.is_empty() {
        return Ok(());
    }
    let why = if v.len() > 63 {
        "must be no more than 63 characters"
    } else if !is_qualified_name_part(v) {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    } else {
        return Ok(());
    };
    Err(SelectorError::InvalidRequirement(format!(
        "values[{i}][{v}]: Invalid value: \"{v}\": {why}"
    )))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; an empty or all-blank string selects
    /// everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut p = Parser {
            toks: lex(input),
            pos: 0,
        };
        Ok(Self {
            requirements: p.parse()?,
        })
    }

    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// True if the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True if every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.holds(labels.get(&r.key).map(String::as_str)))
    }

    /// Matches against a `metadata.labels` JSON value (missing or `null` = no labels), without
    /// copying the labels: list and watch filtering call this for every object.
    pub fn matches_value(&self, labels: Option<&Value>) -> bool {
        let map = labels.and_then(Value::as_object);
        self.requirements.iter().all(|r| {
            let got = map.and_then(|m| m.get(&r.key)).and_then(Value::as_str);
            r.holds(got)
        })
    }

    /// Matches against a whole object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        // Every watch event goes through here: no JSON-pointer parsing, nothing for no selector.
        self.requirements.is_empty()
            || self.matches_value(obj.get("metadata").and_then(|m| m.get("labels")))
    }
}

/// One `field op value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path, e.g. `metadata.name`.
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector: the conjunction of its terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// The terms, in the order given.
    pub requirements: Vec<FieldRequirement>,
}

/// Fields every resource supports (the generic registry's `DefaultClusterScopedAttr`).
pub const DEFAULT_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Splits on separators that are not escaped with `\`.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(SelectorError::Syntax(format!(
                        "invalid field selector: invalid escape sequence: \\{e}"
                    )));
                }
                None => {
                    return Err(SelectorError::Syntax(
                        "invalid field selector: unterminated escape sequence".to_owned(),
                    ));
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a field selector allowing only `metadata.name` and `metadata.namespace`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Self::parse_with(input, DEFAULT_FIELDS)
    }

    /// Parses a field selector allowing the given dotted field paths.
    pub fn parse_with(input: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if input.is_empty() {
            return Ok(Self { requirements });
        }
        for term in split_unescaped(input, ',') {
            if term.is_empty() {
                continue;
            }
            let mut found = None;
            for (i, _) in term.char_indices() {
                let rest = &term[i..];
                if let Some(op) = ["!=", "==", "="].iter().find(|op| rest.starts_with(*op)) {
                    found = Some((&term[..i], *op == "!=", &rest[op.len()..]));
                    break;
                }
            }
            let Some((field, negated, value)) = found else {
                return Err(SelectorError::Syntax(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            if !supported.contains(&field) {
                return Err(SelectorError::FieldNotSupported(field.to_owned()));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                negated,
                value: unescape(value)?,
            });
        }
        Ok(Self { requirements })
    }

    /// True if the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True if every term holds for `obj`; a missing field compares as `""` (so
    /// `metadata.namespace=` selects cluster-scoped objects).
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let mut cur = Some(obj);
            for part in r.field.split('.') {
                cur = cur.and_then(|v| v.get(part));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (got == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(sel("").matches(&labels(&[])));
        assert!(sel("   ").matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn equality_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(sel("app=web").matches(&l));
        assert!(sel("app==web").matches(&l));
        assert!(sel("app = web , tier=front").matches(&l));
        assert!(!sel("app=db").matches(&l));
        assert!(!sel("app!=web").matches(&l));
        assert!(sel("app!=db").matches(&l));
        // `!=` matches objects without the label at all.
        assert!(sel("missing!=x").matches(&l));
        assert!(!sel("missing=x").matches(&l));
        // `key=` requires the label with an empty value.
        assert!(sel("e=").matches(&labels(&[("e", "")])));
        assert!(!sel("e=").matches(&l));
    }

    #[test]
    fn set_operators() {
        let l = labels(&[("env", "prod")]);
        assert!(sel("env in (prod, dev)").matches(&l));
        assert!(sel("env in(prod)").matches(&l));
        assert!(!sel("env in (dev,qa)").matches(&l));
        assert!(sel("env notin (dev,qa)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(sel("other notin (prod)").matches(&l));
        assert!(!sel("other in (prod)").matches(&l));
    }

    #[test]
    fn existence_operators() {
        let l = labels(&[("env", "prod")]);
        assert!(sel("env").matches(&l));
        assert!(!sel("!env").matches(&l));
        assert!(sel("!other").matches(&l));
        assert!(sel("env,!other").matches(&l));
        assert!(!sel("env,other").matches(&l));
        assert!(sel("example.com/role").matches(&labels(&[("example.com/role", "x")])));
    }

    #[test]
    fn gt_lt_compare_integers() {
        let l = labels(&[("n", "5")]);
        assert!(sel("n>3").matches(&l));
        assert!(!sel("n<3").matches(&l));
        assert!(!sel("m>3").matches(&l));
        assert!(LabelSelector::parse("n>x").is_err());
    }

    #[test]
    fn syntax_errors_match_go_messages() {
        assert_eq!(
            LabelSelector::parse("a b").unwrap_err().to_string(),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            LabelSelector::parse("!a=b").unwrap_err().to_string(),
            "found '=', expected: ',' or 'end of string'"
        );
        assert_eq!(
            LabelSelector::parse("a in b").unwrap_err().to_string(),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            LabelSelector::parse("a=b c").unwrap_err().to_string(),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            LabelSelector::parse("a,").unwrap_err().to_string(),
            "found '', expected: identifier after ','"
        );
        // `()` is the set {""} in Go, not an error.
        assert!(sel("a in ()").matches(&labels(&[("a", "")])));
        assert!(sel("a in (,b)").matches(&labels(&[("a", "")])));
        assert!(sel("a in (b,)").matches(&labels(&[("a", "")])));
        assert!(sel("a in (b,,c)").matches(&labels(&[("a", "c")])));
        assert!(sel("a in (in, notin)").matches(&labels(&[("a", "notin")])));
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("!a=b").is_err());
        assert!(LabelSelector::parse("=b").is_err());
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        let e = LabelSelector::parse("-a=b").unwrap_err();
        assert!(matches!(e, SelectorError::InvalidRequirement(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("unable to parse requirement: key: Invalid value: \"-a\"")
        );
        assert!(LabelSelector::parse("a=b_").is_err());
        assert!(LabelSelector::parse(&format!("a={}", "x".repeat(64))).is_err());
        assert!(LabelSelector::parse("Bad_Prefix/a=b").is_err());
        assert!(LabelSelector::parse("a/b/c").is_err());
        assert!(LabelSelector::parse(&format!("a={}", "x".repeat(63))).is_ok());
    }

    #[test]
    fn matches_object_labels() {
        let obj = json!({"metadata": {"labels": {"app": "web"}}});
        assert!(sel("app=web").matches_object(&obj));
        assert!(!sel("app").matches_object(&json!({"metadata": {}})));
        assert!(sel("!app").matches_object(&json!({"metadata": {}})));
    }

    #[test]
    fn field_selector_name_and_namespace() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        assert!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.name==a,metadata.namespace=ns")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            FieldSelector::parse("metadata.namespace!=x")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("").unwrap().matches(&obj));
        let cluster = json!({"metadata": {"name": "c"}});
        assert!(
            FieldSelector::parse("metadata.namespace=")
                .unwrap()
                .matches(&cluster)
        );
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.x=1").unwrap_err().to_string(),
            "field label not supported: spec.x"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name")
                .unwrap_err()
                .to_string(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        let s = FieldSelector::parse_with("type=Opaque", &["type"]).unwrap();
        assert!(s.matches(&json!({"type": "Opaque"})));
    }

    #[test]
    fn field_selector_escapes() {
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap();
        assert_eq!(s.requirements.len(), 1);
        assert!(s.matches(&json!({"metadata": {"name": "a,b"}})));
    }
}
