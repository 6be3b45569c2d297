//! A subset of CEL, enough for the `x-kubernetes-validations` rules CRDs commonly carry:
//! immutability (`self == oldSelf`), field presence (`has(self.a)`), boolean logic, comparisons,
//! arithmetic, `size`, string functions, `in` and the `all`/`exists`/`exists_one`/`map`/`filter`
//! macros, over the JSON value at the rule's schema node (`self`) and its previous value
//! (`oldSelf`).
//!
//! What this subset cannot parse or evaluate (other functions, optionals, type conversions,
//! runtime errors such as a missing key) is reported as an error, and the caller skips the rule:
//! a rule is never failed for a reason the real server would not fail it for.

use std::collections::BTreeMap;

use serde_json::{Number, Value};

/// A parsed CEL expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal (ints and doubles as JSON numbers).
    Lit(Value),
    /// `[a, b]`.
    List(Vec<Expr>),
    /// A variable: `self`, `oldSelf` or a macro's iteration variable.
    Ident(String),
    /// `e.field`.
    Member(Box<Expr>, String),
    /// `e[i]` / `e["key"]`.
    Index(Box<Expr>, Box<Expr>),
    /// `f(args)` or `target.f(args)` (macros included).
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    /// `!e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `a op b`.
    Binary(String, Box<Expr>, Box<Expr>),
    /// `c ? a : b`.
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// Why a rule could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CelError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, CelError> {
    Err(CelError(m.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    Punct(&'static str),
}

const PUNCTS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "(", ")", "[", "]", "{", "}", ".", ",", "?", ":", "!", "-",
    "+", "*", "/", "%", "<", ">",
];

fn lex(src: &str) -> Result<Vec<Tok>, CelError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                // `1.size()` is not a float: a dot must be followed by a digit.
                if chars[i] == '.' && !chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                    break;
                }
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let text = text.trim_end_matches('u');
            if let Ok(n) = text.parse::<i64>() {
                out.push(Tok::Int(n));
            } else if let Ok(f) = text.parse::<f64>() {
                out.push(Tok::Float(f));
            } else {
                return err(format!("bad number {text}"));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c == '"' || c == '\'' {
            if chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c) {
                return err("triple-quoted strings are not supported");
            }
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return err("unterminated string"),
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars.get(i + 1).copied();
                        s.push(match e {
                            Some('n') => '\n',
                            Some('t') => '\t',
                            Some('r') => '\r',
                            Some(x @ ('\\' | '"' | '\'')) => x,
                            _ => return err("unsupported escape"),
                        });
                        i += 2;
                    }
                    Some(&x) => {
                        s.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                return err(format!("unexpected character {c:?}"));
            };
            out.push(Tok::Punct(p));
            i += p.len();
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_punct(&self, p: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Punct(x)) if *x == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        let yes = self.peek_punct(p);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect(&mut self, p: &str) -> Result<(), CelError> {
        if self.eat(p) {
            Ok(())
        } else {
            err(format!("expected {p}"))
        }
    }

    fn expr(&mut self) -> Result<Expr, CelError> {
        let c = self.or()?;
        if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }

    fn binary_level(
        &mut self,
        ops: &[&'static str],
        next: fn(&mut Self) -> Result<Expr, CelError>,
    ) -> Result<Expr, CelError> {
        let mut left = next(self)?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Punct(p)) if ops.contains(p) => *p,
                Some(Tok::Ident(i)) if i == "in" && ops.contains(&"in") => "in",
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = next(self)?;
            left = Expr::Binary(op.to_owned(), Box::new(left), Box::new(right));
        }
    }

    fn or(&mut self) -> Result<Expr, CelError> {
        self.binary_level(&["||"], Self::and)
    }

    fn and(&mut self) -> Result<Expr, CelError> {
        self.binary_level(&["&&"], Self::relation)
    }

    fn relation(&mut self) -> Result<Expr, CelError> {
        self.binary_level(&["==", "!=", "<", "<=", ">", ">=", "in"], Self::additive)
    }

    fn additive(&mut self) -> Result<Expr, CelError> {
        self.binary_level(&["+", "-"], Self::multiplicative)
    }

    fn multiplicative(&mut self) -> Result<Expr, CelError> {
        self.binary_level(&["*", "/", "%"], Self::unary)
    }

    fn unary(&mut self) -> Result<Expr, CelError> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.postfix()
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, CelError> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn postfix(&mut self) -> Result<Expr, CelError> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return err("expected a field name");
                };
                self.pos += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else {
                    e = Expr::Member(Box::new(e), name);
                }
            } else if self.eat("[") {
                let i = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(i));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, CelError> {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return err("unexpected end of expression");
        };
        self.pos += 1;
        match t {
            Tok::Int(n) => Ok(Expr::Lit(Value::from(n))),
            Tok::Float(f) => Ok(Expr::Lit(
                Number::from_f64(f).map_or(Value::Null, Value::Number),
            )),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Ident(i) => match i.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                _ if self.eat("(") => {
                    let args = self.args(")")?;
                    Ok(Expr::Call(None, i, args))
                }
                _ => Ok(Expr::Ident(i)),
            },
            Tok::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("[") => Ok(Expr::List(self.args("]")?)),
            Tok::Punct(p) => err(format!("unexpected {p}")),
        }
    }
}

/// Parses a CEL expression (of the supported subset).
pub fn parse(src: &str) -> Result<Expr, CelError> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return err("unexpected trailing input");
    }
    Ok(e)
}

impl Expr {
    /// Whether the expression reads `name` (rules reading `oldSelf` are transition rules).
    pub fn uses(&self, name: &str) -> bool {
        match self {
            Expr::Lit(_) => false,
            Expr::Ident(i) => i == name,
            Expr::List(items) => items.iter().any(|e| e.uses(name)),
            Expr::Member(e, _) | Expr::Not(e) | Expr::Neg(e) => e.uses(name),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => a.uses(name) || b.uses(name),
            Expr::Call(t, _, args) => {
                t.as_ref().is_some_and(|t| t.uses(name)) || args.iter().any(|e| e.uses(name))
            }
            Expr::Cond(c, a, b) => c.uses(name) || a.uses(name) || b.uses(name),
        }
    }
}

/// Variables in scope.
pub type Env = BTreeMap<String, Value>;

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn int_result(n: Option<i64>) -> Result<Value, CelError> {
    n.map(Value::from)
        .ok_or_else(|| CelError("overflow".into()))
}

/// Equality across numeric types (CEL's heterogeneous equality), deep for lists and maps.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

fn as_bool(v: &Value) -> Result<bool, CelError> {
    v.as_bool()
        .ok_or_else(|| CelError("no such overload".into()))
}

/// The elements a macro iterates: a list's items or a map's keys.
fn range(v: &Value) -> Result<Vec<Value>, CelError> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::Object(m) => Ok(m.keys().map(|k| Value::String(k.clone())).collect()),
        _ => err("no such overload"),
    }
}

fn compare(a: &Value, b: &Value) -> Result<std::cmp::Ordering, CelError> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)
            .zip(num(b))
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| CelError("no such overload".into())),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => err("no such overload"),
    }
}

fn arith(op: &str, a: &Value, b: &Value) -> Result<Value, CelError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return match op {
                    "+" => int_result(x.checked_add(y)),
                    "-" => int_result(x.checked_sub(y)),
                    "*" => int_result(x.checked_mul(y)),
                    "/" => int_result(x.checked_div(y)),
                    _ => int_result(x.checked_rem(y)),
                };
            }
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            let r = match op {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                _ => return err("no such overload"),
            };
            Number::from_f64(r)
                .map(Value::Number)
                .ok_or_else(|| CelError("not a number".into()))
        }
        (Value::String(x), Value::String(y)) if op == "+" => Ok(Value::String(format!("{x}{y}"))),
        (Value::Array(x), Value::Array(y)) if op == "+" => {
            Ok(Value::Array(x.iter().chain(y).cloned().collect()))
        }
        _ => err("no such overload"),
    }
}

/// Evaluates `e` with the variables of `env`.
pub fn eval(e: &Expr, env: &Env) -> Result<Value, CelError> {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Ident(name) => env
            .get(name)
            .cloned()
            .ok_or_else(|| CelError(format!("undeclared reference to '{name}'"))),
        Expr::Member(target, field) => match eval(target, env)? {
            Value::Object(m) => m
                .get(field)
                .cloned()
                .ok_or_else(|| CelError(format!("no such key: {field}"))),
            _ => err("no such overload"),
        },
        Expr::Index(target, index) => {
            let t = eval(target, env)?;
            let i = eval(index, env)?;
            match (&t, &i) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| a.get(usize::try_from(n).ok()?))
                    .cloned()
                    .ok_or_else(|| CelError("index out of range".into())),
                (Value::Object(m), Value::String(k)) => m
                    .get(k)
                    .cloned()
                    .ok_or_else(|| CelError(format!("no such key: {k}"))),
                _ => err("no such overload"),
            }
        }
        Expr::Not(x) => Ok(Value::Bool(!as_bool(&eval(x, env)?)?)),
        Expr::Neg(x) => match eval(x, env)? {
            Value::Number(n) => match n.as_i64() {
                Some(i) => int_result(i.checked_neg()),
                None => arith("-", &Value::from(0.0), &Value::Number(n)),
            },
            _ => err("no such overload"),
        },
        Expr::Cond(c, a, b) => {
            if as_bool(&eval(c, env)?)? {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
        Expr::Binary(op, a, b) => binary(op, a, b, env),
        Expr::Call(target, f, args) => call(target.as_deref(), f, args, env),
    }
}

fn binary(op: &str, a: &Expr, b: &Expr, env: &Env) -> Result<Value, CelError> {
    // `&&` and `||` are commutative on errors: a definite answer from either side wins.
    if op == "&&" || op == "||" {
        let short = op == "||";
        let l = eval(a, env).and_then(|v| as_bool(&v));
        if l == Ok(short) {
            return Ok(Value::Bool(short));
        }
        let r = eval(b, env).and_then(|v| as_bool(&v));
        if r == Ok(short) {
            return Ok(Value::Bool(short));
        }
        l?;
        r?;
        return Ok(Value::Bool(!short));
    }
    let l = eval(a, env)?;
    let r = eval(b, env)?;
    Ok(match op {
        "==" => Value::Bool(equal(&l, &r)),
        "!=" => Value::Bool(!equal(&l, &r)),
        "<" => Value::Bool(compare(&l, &r)?.is_lt()),
        "<=" => Value::Bool(compare(&l, &r)?.is_le()),
        ">" => Value::Bool(compare(&l, &r)?.is_gt()),
        ">=" => Value::Bool(compare(&l, &r)?.is_ge()),
        "in" => match &r {
            Value::Array(items) => Value::Bool(items.iter().any(|x| equal(x, &l))),
            Value::Object(m) => Value::Bool(l.as_str().is_some_and(|k| m.contains_key(k))),
            _ => return err("no such overload"),
        },
        _ => arith(op, &l, &r)?,
    })
}

fn string_arg(args: &[Expr], env: &Env) -> Result<String, CelError> {
    match args {
        [a] => match eval(a, env)? {
            Value::String(s) => Ok(s),
            _ => err("no such overload"),
        },
        _ => err("wrong number of arguments"),
    }
}

fn call(target: Option<&Expr>, f: &str, args: &[Expr], env: &Env) -> Result<Value, CelError> {
    match (target, f) {
        (None, "has") => {
            let [Expr::Member(t, field)] = args else {
                return err("invalid argument to has() macro");
            };
            match eval(t, env)? {
                Value::Object(m) => Ok(Value::Bool(m.contains_key(field))),
                _ => err("no such overload"),
            }
        }
        (None, "size") => match args {
            [a] => size(&eval(a, env)?),
            _ => err("wrong number of arguments"),
        },
        (Some(t), "size") if args.is_empty() => size(&eval(t, env)?),
        (Some(t), "startsWith" | "endsWith" | "contains" | "matches") => {
            let Value::String(s) = eval(t, env)? else {
                return err("no such overload");
            };
            let a = string_arg(args, env)?;
            Ok(Value::Bool(match f {
                "startsWith" => s.starts_with(&a),
                "endsWith" => s.ends_with(&a),
                "contains" => s.contains(&a),
                _ => regex::Regex::new(&a)
                    .map_err(|e| CelError(e.to_string()))?
                    .is_match(&s),
            }))
        }
        (Some(t), "all" | "exists" | "exists_one" | "map" | "filter") => {
            let [Expr::Ident(var), body] = args else {
                return err("unsupported macro form");
            };
            let items = range(&eval(t, env)?)?;
            let mut scope = env.clone();
            let mut results = Vec::new();
            for it in items {
                scope.insert(var.clone(), it.clone());
                results.push((it, eval(body, &scope)));
            }
            macro_result(f, results)
        }
        _ => err(format!("unsupported function {f}")),
    }
}

fn macro_result(
    f: &str,
    results: Vec<(Value, Result<Value, CelError>)>,
) -> Result<Value, CelError> {
    match f {
        "map" => Ok(Value::Array(
            results
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Result<_, _>>()?,
        )),
        "filter" => {
            let mut out = Vec::new();
            for (it, r) in results {
                if as_bool(&r?)? {
                    out.push(it);
                }
            }
            Ok(Value::Array(out))
        }
        "exists_one" => {
            let mut n = 0;
            for (_, r) in results {
                if as_bool(&r?)? {
                    n += 1;
                }
            }
            Ok(Value::Bool(n == 1))
        }
        _ => {
            // `all`: false wins over errors; `exists`: true wins over errors.
            let decisive = f == "exists";
            let mut first_err = None;
            for (_, r) in results {
                match r.and_then(|v| as_bool(&v)) {
                    Ok(b) if b == decisive => return Ok(Value::Bool(decisive)),
                    Ok(_) => {}
                    Err(e) => first_err = first_err.or(Some(e)),
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(Value::Bool(!decisive)),
            }
        }
    }
}

fn size(v: &Value) -> Result<Value, CelError> {
    let n = match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.len(),
        Value::Object(m) => m.len(),
        _ => return err("no such overload"),
    };
    Ok(Value::from(n))
}

/// Evaluates a validation rule on `self_value` (and `old_self` for transition rules): `Ok(true)`
/// when it holds.
pub fn check(rule: &Expr, self_value: &Value, old_self: Option<&Value>) -> Result<bool, CelError> {
    let mut env = Env::new();
    env.insert("self".into(), self_value.clone());
    if let Some(old) = old_self {
        env.insert("oldSelf".into(), old.clone());
    }
    as_bool(&eval(rule, &env)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(rule: &str, v: Value, old: Option<Value>) -> Result<bool, CelError> {
        check(&parse(rule)?, &v, old.as_ref())
    }

    #[test]
    fn immutability_compares_the_whole_value() {
        let a = json!({"name": "kc", "key": "k"});
        assert_eq!(
            holds("self == oldSelf", a.clone(), Some(a.clone())),
            Ok(true)
        );
        assert_eq!(
            holds(
                "self == oldSelf",
                json!({"name": "other", "key": "k"}),
                Some(a)
            ),
            Ok(false)
        );
        assert!(parse("self == oldSelf").is_ok_and(|e| e.uses("oldSelf")));
    }

    #[test]
    fn presence_logic_and_comparisons() {
        let rule =
            "!(has(self.autoDonate) && self.autoDonate && has(self.autoAdopt) && self.autoAdopt)";
        assert_eq!(holds(rule, json!({"autoDonate": true}), None), Ok(true));
        assert_eq!(
            holds(rule, json!({"autoDonate": true, "autoAdopt": true}), None),
            Ok(false)
        );
        assert_eq!(
            holds(
                "self.a + 1 > 2 && size(self.s) == 3",
                json!({"a": 2, "s": "abc"}),
                None
            ),
            Ok(true)
        );
        assert_eq!(
            holds(
                "self.s.startsWith('ab') ? true : false",
                json!({"s": "abc"}),
                None
            ),
            Ok(true)
        );
        assert_eq!(
            holds(
                "'x' in self.l && self.l.size() == 2",
                json!({"l": ["x", "y"]}),
                None
            ),
            Ok(true)
        );
    }

    #[test]
    fn macros_iterate_lists_and_map_keys() {
        let v = json!({"items": [{"n": 1}, {"n": 2}], "m": {"a": 1}});
        assert_eq!(
            holds("self.items.all(i, i.n > 0)", v.clone(), None),
            Ok(true)
        );
        assert_eq!(
            holds("self.items.exists_one(i, i.n == 2)", v.clone(), None),
            Ok(true)
        );
        assert_eq!(
            holds("self.m.exists(k, k == 'a')", v.clone(), None),
            Ok(true)
        );
        assert_eq!(holds("self.items.map(i, i.n) == [1, 2]", v, None), Ok(true));
    }

    #[test]
    fn missing_keys_and_unknown_functions_are_errors() {
        assert!(holds("self.missing == 1", json!({}), None).is_err());
        assert!(holds("self.x.lowerAscii() == 'a'", json!({"x": "A"}), None).is_err());
        // A definite answer wins over an error on the other side of `||`.
        assert_eq!(
            holds("self.missing == 1 || true", json!({}), None),
            Ok(true)
        );
    }
}
