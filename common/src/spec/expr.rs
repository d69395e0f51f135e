//! The expression language of `map.set`: field names, literals and function calls.
//!
//! `upper(url)`, `concat("/page/", mod(id, 50))`, `add(value, 1)`. Parsed here so that
//! validation can name the exact problem; evaluated by the worker's `map` operator.

use serde::{Deserialize, Serialize};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The value of a record field.
    Field(String),
    /// A string literal.
    Str(String),
    /// A numeric literal.
    Num(f64),
    /// A function applied to arguments.
    Call(Func, Vec<Expr>),
}

/// Functions of the expression language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    /// Uppercase a string.
    Upper,
    /// Lowercase a string.
    Lower,
    /// Length of a string.
    Len,
    /// Concatenate the string forms of all arguments.
    Concat,
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a * b.
    Mul,
    /// a / b (null on division by zero).
    Div,
    /// a mod b (null when b is zero).
    Mod,
    /// 64-bit FNV-1a hash of the string form.
    Hash,
    /// substr(s, start, len) by characters.
    Substr,
}

/// Name, function and arity (`None`: one or more).
const FUNCS: &[(&str, Func, Option<usize>)] = &[
    ("upper", Func::Upper, Some(1)),
    ("lower", Func::Lower, Some(1)),
    ("len", Func::Len, Some(1)),
    ("concat", Func::Concat, None),
    ("add", Func::Add, Some(2)),
    ("sub", Func::Sub, Some(2)),
    ("mul", Func::Mul, Some(2)),
    ("div", Func::Div, Some(2)),
    ("mod", Func::Mod, Some(2)),
    ("hash", Func::Hash, Some(1)),
    ("substr", Func::Substr, Some(3)),
];

/// Deepest nesting accepted; deeper input is refused rather than risking the stack.
const MAX_DEPTH: usize = 32;

/// Parses `src`, or says what is wrong with it.
pub fn parse_expr(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
    };
    let e = p.expr(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected {:?} at column {}", p.rest(), p.i + 1));
    }
    Ok(e)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn rest(&self) -> String {
        String::from_utf8_lossy(&self.s[self.i..])
            .chars()
            .take(10)
            .collect()
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} calls"));
        }
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err("expression ends too early".into());
        };
        if c == b'"' {
            return self.string();
        }
        if c.is_ascii_digit() || c == b'-' {
            return self.number();
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.i;
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'.'))
            {
                self.i += 1;
            }
            let name = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.ws();
            if self.s.get(self.i) != Some(&b'(') {
                return Ok(Expr::Field(name));
            }
            self.i += 1;
            let args = self.args(depth)?;
            let Some(&(_, f, arity)) = FUNCS.iter().find(|(n, _, _)| *n == name) else {
                let names: Vec<&str> = FUNCS.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "unknown function {name:?}; known: {}",
                    names.join(", ")
                ));
            };
            match arity {
                Some(n) if args.len() != n => {
                    return Err(format!(
                        "{name}() takes {n} argument(s), got {}",
                        args.len()
                    ))
                }
                None if args.is_empty() => {
                    return Err(format!("{name}() takes at least one argument"))
                }
                _ => {}
            }
            return Ok(Expr::Call(f, args));
        }
        Err(format!(
            "unexpected {:?} at column {}",
            self.rest(),
            self.i + 1
        ))
    }

    fn args(&mut self, depth: usize) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b')') {
            self.i += 1;
            return Ok(args);
        }
        loop {
            args.push(self.expr(depth + 1)?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    return Ok(args);
                }
                _ => return Err(format!("expected ',' or ')' at column {}", self.i + 1)),
            }
        }
    }

    fn string(&mut self) -> Result<Expr, String> {
        let start = self.i;
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.s.get(self.i) {
            self.i += 1;
            match c {
                b'"' => return Ok(Expr::Str(String::from_utf8_lossy(&out).into_owned())),
                b'\\' => {
                    let Some(&n) = self.s.get(self.i) else { break };
                    self.i += 1;
                    out.push(n);
                }
                _ => out.push(c),
            }
        }
        Err(format!(
            "string starting at column {} is not closed",
            start + 1
        ))
    }

    fn number(&mut self) -> Result<Expr, String> {
        let start = self.i;
        self.i += 1;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_digit() || matches!(self.s[self.i], b'.' | b'e' | b'E'))
        {
            self.i += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]);
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Expr::Num)
            .ok_or_else(|| format!("{text:?} is not a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_calls() {
        let e = parse_expr(r#"concat("/page/", mod(id, 50))"#).unwrap();
        assert_eq!(
            e,
            Expr::Call(
                Func::Concat,
                vec![
                    Expr::Str("/page/".into()),
                    Expr::Call(Func::Mod, vec![Expr::Field("id".into()), Expr::Num(50.0)])
                ]
            )
        );
    }

    #[test]
    fn names_the_problem() {
        assert!(parse_expr("uper(x)")
            .unwrap_err()
            .contains("unknown function \"uper\""));
        assert!(parse_expr("add(x)")
            .unwrap_err()
            .contains("takes 2 argument(s), got 1"));
        assert!(parse_expr("add(x, 1").unwrap_err().contains("expected ','"));
        assert!(parse_expr("\"open").unwrap_err().contains("not closed"));
        assert!(parse_expr("").unwrap_err().contains("too early"));
        let deep = "upper(".repeat(100) + "x" + &")".repeat(100);
        assert!(parse_expr(&deep).unwrap_err().contains("nested deeper"));
    }
}
