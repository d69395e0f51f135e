//! The expression language of `map.set` and `filter.where`: field names, literals,
//! function calls, infix arithmetic, comparisons and `and`/`or`/`not`.
//!
//! `upper(url)`, `concat("/page/", mod(id, 50))`, `value + 1`, `price * 0.908`,
//! `mod(id, 10) != 3 and value > 100`. Parsed here so that validation can name the
//! exact problem; evaluated by the worker (column by column: `ops/vector/`).

use super::CmpOp;
use serde::{Deserialize, Serialize};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// The value of a record field.
    Field(String),
    /// A string literal.
    Str(String),
    /// An integer literal (exact: `9007199254740993` stays itself).
    Int(i64),
    /// A numeric literal with a fraction or an exponent, or too large for `i64`.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`: no value (a missing field reads as it).
    Null,
    /// A function applied to arguments (infix `+ - * / %` are [`Func::Add`] ...).
    Call(Func, Vec<Expr>),
    /// `a == b`, `a != b`, `a < b` ...: true or false, never null. Numbers compare as
    /// numbers (a text holding a number against a number too), anything else as text;
    /// a null or missing side equals nothing, so only `!=` holds for it.
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    /// `a and b`: true when both are true (a null or non-boolean side is false).
    And(Box<Expr>, Box<Expr>),
    /// `a or b`: true when either is true.
    Or(Box<Expr>, Box<Expr>),
    /// `not a`: true when `a` is not true.
    Not(Box<Expr>),
}

impl Expr {
    /// Whether the expression always gives a boolean (what a filter's `where` must
    /// be): a comparison, or comparisons combined with `and`, `or`, `not`.
    pub fn is_predicate(&self) -> bool {
        matches!(
            self,
            Expr::Cmp(..) | Expr::And(..) | Expr::Or(..) | Expr::Not(..)
        )
    }

    /// The field names the expression reads, each once, in order of appearance.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Field(n) => {
                    if !out.contains(&n.as_str()) {
                        out.push(n);
                    }
                }
                Expr::Str(_) | Expr::Int(_) | Expr::Num(_) | Expr::Bool(_) | Expr::Null => {}
                Expr::Call(_, args) => stack.extend(args.iter().rev()),
                Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Expr::Not(a) => stack.push(a),
            }
        }
        out
    }
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

/// Words that are operators, not field names.
const KEYWORDS: &[&str] = &["and", "or", "not"];

/// Words that are values, not field names.
const LITERALS: &[(&str, Expr)] = &[
    ("true", Expr::Bool(true)),
    ("false", Expr::Bool(false)),
    ("null", Expr::Null),
];

/// Deepest nesting accepted (calls, parentheses and operators together); deeper input
/// is refused rather than risking the stack of whoever walks the tree.
pub const MAX_DEPTH: usize = 32;

/// Parses `src`, or says what is wrong with it.
///
/// Grammar, loosest first: `or`, `and`, `not`, comparisons (`== != < <= > >=`, `=` for
/// `==`; not chained), `+ -`, `* / %`, unary `-`, then literals, field names,
/// parentheses and calls `name(args)`.
pub fn parse_expr(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
    };
    let (e, _) = p.or(0)?;
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

/// An expression and the height of its tree.
type Parsed = (Expr, usize);

/// Infix arithmetic: token, function, binding (higher binds tighter).
const ARITH: &[(&str, Func, u8)] = &[
    ("+", Func::Add, 1),
    ("-", Func::Sub, 1),
    ("*", Func::Mul, 2),
    ("/", Func::Div, 2),
    ("%", Func::Mod, 2),
];

/// Comparison tokens, longest first so `<=` is not read as `<`.
const CMPS: &[(&str, CmpOp)] = &[
    ("==", CmpOp::Eq),
    ("!=", CmpOp::Ne),
    ("<=", CmpOp::Le),
    (">=", CmpOp::Ge),
    ("<", CmpOp::Lt),
    (">", CmpOp::Gt),
    ("=", CmpOp::Eq),
];

fn node(height: usize) -> Result<usize, String> {
    if height > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(height)
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

    /// Whether the input continues with `tok` (after blanks); consumes it if so.
    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            return true;
        }
        false
    }

    /// Whether the input continues with the word `w` (not a prefix of a longer name).
    fn eat_word(&mut self, w: &str) -> bool {
        self.ws();
        let end = self.i + w.len();
        let word = self.s[self.i..].starts_with(w.as_bytes())
            && !self
                .s
                .get(end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.'));
        if word {
            self.i = end;
        }
        word
    }

    fn or(&mut self, depth: usize) -> Result<Parsed, String> {
        let (mut e, mut h) = self.and(depth)?;
        while self.eat_word("or") || self.eat("||") {
            let (r, rh) = self.and(depth)?;
            h = node(h.max(rh) + 1)?;
            e = Expr::Or(Box::new(e), Box::new(r));
        }
        Ok((e, h))
    }

    fn and(&mut self, depth: usize) -> Result<Parsed, String> {
        let (mut e, mut h) = self.not(depth)?;
        while self.eat_word("and") || self.eat("&&") {
            let (r, rh) = self.not(depth)?;
            h = node(h.max(rh) + 1)?;
            e = Expr::And(Box::new(e), Box::new(r));
        }
        Ok((e, h))
    }

    fn not(&mut self, depth: usize) -> Result<Parsed, String> {
        if self.eat_word("not") {
            if depth > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            let (e, h) = self.not(depth + 1)?;
            return Ok((Expr::Not(Box::new(e)), node(h + 1)?));
        }
        self.cmp(depth)
    }

    fn cmp(&mut self, depth: usize) -> Result<Parsed, String> {
        let (e, h) = self.arith(depth, 1)?;
        for &(tok, op) in CMPS {
            if self.eat(tok) {
                let (r, rh) = self.arith(depth, 1)?;
                return Ok((
                    Expr::Cmp(op, Box::new(e), Box::new(r)),
                    node(h.max(rh) + 1)?,
                ));
            }
        }
        Ok((e, h))
    }

    /// Infix arithmetic binding at least as tight as `level`, left to right.
    fn arith(&mut self, depth: usize, level: u8) -> Result<Parsed, String> {
        let (mut e, mut h) = if level > 2 {
            self.unary(depth)?
        } else {
            self.arith(depth, level + 1)?
        };
        if level > 2 {
            return Ok((e, h));
        }
        'more: loop {
            self.ws();
            for &(tok, f, l) in ARITH {
                if l == level && self.s[self.i..].starts_with(tok.as_bytes()) {
                    self.i += tok.len();
                    let (r, rh) = self.arith(depth, level + 1)?;
                    h = node(h.max(rh) + 1)?;
                    e = Expr::Call(f, vec![e, r]);
                    continue 'more;
                }
            }
            return Ok((e, h));
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Parsed, String> {
        self.ws();
        let minus = self.s.get(self.i) == Some(&b'-')
            && !self.s.get(self.i + 1).is_some_and(u8::is_ascii_digit);
        if minus {
            self.i += 1;
            if depth > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            let (e, h) = self.unary(depth + 1)?;
            return Ok((Expr::Call(Func::Sub, vec![Expr::Num(0.0), e]), node(h + 1)?));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Parsed, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.ws();
        let Some(&c) = self.s.get(self.i) else {
            return Err("expression ends too early".into());
        };
        if c == b'"' {
            return Ok((self.string()?, 1));
        }
        if c.is_ascii_digit() || c == b'-' {
            return Ok((self.number()?, 1));
        }
        if c == b'(' {
            self.i += 1;
            let (e, h) = self.or(depth + 1)?;
            if !self.eat(")") {
                return Err(format!("expected ')' at column {}", self.i + 1));
            }
            return Ok((e, h));
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.i;
            while self.i < self.s.len()
                && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'.'))
            {
                self.i += 1;
            }
            let name = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            if let Some((_, lit)) = LITERALS.iter().find(|(w, _)| *w == name) {
                return Ok((lit.clone(), 1));
            }
            if KEYWORDS.contains(&name.as_str()) {
                return Err(format!(
                    "{name:?} at column {} needs an operand before it",
                    start + 1
                ));
            }
            self.ws();
            if self.s.get(self.i) != Some(&b'(') {
                return Ok((Expr::Field(name), 1));
            }
            self.i += 1;
            let (args, h) = self.args(depth)?;
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
            return Ok((Expr::Call(f, args), node(h + 1)?));
        }
        Err(format!(
            "unexpected {:?} at column {}",
            self.rest(),
            self.i + 1
        ))
    }

    /// Arguments up to the closing parenthesis, and the tallest one's height.
    fn args(&mut self, depth: usize) -> Result<(Vec<Expr>, usize), String> {
        let mut args = Vec::new();
        let mut height = 0;
        self.ws();
        if self.s.get(self.i) == Some(&b')') {
            self.i += 1;
            return Ok((args, height));
        }
        loop {
            let (e, h) = self.or(depth + 1)?;
            args.push(e);
            height = height.max(h);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b')') => {
                    self.i += 1;
                    return Ok((args, height));
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
        while self.i < self.s.len() {
            let c = self.s[self.i];
            // An exponent's sign belongs to the number (`1e-3`); any other `-` is an
            // operator (`2-1`).
            let exponent_sign =
                matches!(c, b'-' | b'+') && matches!(self.s[self.i - 1], b'e' | b'E');
            if !(c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E') || exponent_sign) {
                break;
            }
            self.i += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]);
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Expr::Int(i));
        }
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
                    Expr::Call(Func::Mod, vec![Expr::Field("id".into()), Expr::Int(50)])
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

    #[test]
    fn infix_operators_bind_as_usual() {
        let f = |n: &str| Box::new(Expr::Field(n.into()));
        let call = |func, a: Expr, b: Expr| Expr::Call(func, vec![a, b]);
        // `*` before `+`, left to right; comparisons below arithmetic; `and` below
        // `not`, `or` below `and`.
        assert_eq!(
            parse_expr("a + b * 2 - 1").unwrap(),
            call(
                Func::Sub,
                call(Func::Add, *f("a"), call(Func::Mul, *f("b"), Expr::Int(2))),
                Expr::Int(1)
            )
        );
        assert_eq!(
            parse_expr("mod(id, 10) != 3").unwrap(),
            Expr::Cmp(
                CmpOp::Ne,
                Box::new(call(Func::Mod, *f("id"), Expr::Int(10))),
                Box::new(Expr::Int(3))
            )
        );
        assert_eq!(
            parse_expr("not a < 1 and b >= 2 or c = \"x\"").unwrap(),
            Expr::Or(
                Box::new(Expr::And(
                    Box::new(Expr::Not(Box::new(Expr::Cmp(
                        CmpOp::Lt,
                        f("a"),
                        Box::new(Expr::Int(1))
                    )))),
                    Box::new(Expr::Cmp(CmpOp::Ge, f("b"), Box::new(Expr::Int(2))))
                )),
                Box::new(Expr::Cmp(
                    CmpOp::Eq,
                    f("c"),
                    Box::new(Expr::Str("x".into()))
                ))
            )
        );
        // A minus after an operand subtracts; before a digit elsewhere it is a sign.
        assert_eq!(
            parse_expr("a-1").unwrap(),
            call(Func::Sub, *f("a"), Expr::Int(1))
        );
        assert_eq!(parse_expr("-1").unwrap(), Expr::Int(-1));
        assert_eq!(parse_expr("1e-3").unwrap(), Expr::Num(0.001));
        assert_eq!(
            parse_expr("(a + 1) * 2").unwrap(),
            call(
                Func::Mul,
                call(Func::Add, *f("a"), Expr::Int(1)),
                Expr::Int(2)
            )
        );
        assert!(parse_expr("a > 1 and b").unwrap().is_predicate());
        // Literals: exact integers, booleans, null; `true` is not a field name.
        assert_eq!(
            parse_expr("9007199254740993").unwrap(),
            Expr::Int(9_007_199_254_740_993)
        );
        assert_eq!(
            parse_expr("active == true").unwrap(),
            Expr::Cmp(CmpOp::Eq, f("active"), Box::new(Expr::Bool(true)))
        );
        assert_eq!(parse_expr("null").unwrap(), Expr::Null);
        assert_eq!(parse_expr("truely").unwrap(), Expr::Field("truely".into()));
        // `!` is only part of `!=`: negation is the word `not`.
        assert!(parse_expr("!a").is_err());
        assert!(!parse_expr("a + 1").unwrap().is_predicate());
        assert_eq!(
            parse_expr("a * b + a > c").unwrap().fields(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn infix_mistakes_are_named() {
        assert!(parse_expr("a +").unwrap_err().contains("too early"));
        assert!(parse_expr("(a + 1").unwrap_err().contains("expected ')'"));
        assert!(parse_expr("a and").unwrap_err().contains("too early"));
        assert!(parse_expr("and a")
            .unwrap_err()
            .contains("needs an operand before it"));
        assert!(parse_expr("a < b < c").unwrap_err().contains("unexpected"));
        // A long chain is a tall tree: refused like deep nesting.
        let chain = vec!["a"; 100].join(" + ");
        assert!(parse_expr(&chain).unwrap_err().contains("nested deeper"));
        let nots = "not ".repeat(100) + "a";
        assert!(parse_expr(&nots).unwrap_err().contains("nested deeper"));
        let parens = "(".repeat(100) + "a" + &")".repeat(100);
        assert!(parse_expr(&parens).unwrap_err().contains("nested deeper"));
        assert!(parse_expr(&vec!["a"; 30].join(" + ")).is_ok());
    }
}
