//! A precedence-climbing parser from tokens to the syntax tree.

use std::ops::Range;

use vitalflow_model::row::{Type, Value};

use super::ExprError;
use super::lexer::{Tok, lex};

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `||`
    Concat,
    /// `=`, `==`
    Eq,
    /// `!=`, `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `and`
    And,
    /// `or`
    Or,
}

impl BinOp {
    /// The operator as written.
    #[must_use]
    pub const fn symbol(self) -> &'static str {
        match self {
            Self::Add => "+",
            Self::Sub => "-",
            Self::Mul => "*",
            Self::Div => "/",
            Self::Rem => "%",
            Self::Concat => "||",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::And => "and",
            Self::Or => "or",
        }
    }
}

/// A node of the syntax tree, with its span in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct Ast {
    /// What it is.
    pub kind: AstKind,
    /// Where it is.
    pub span: Range<usize>,
}

/// The kinds of syntax-tree nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum AstKind {
    /// A literal.
    Lit(Value),
    /// A field, by name.
    Field(String),
    /// `-x`
    Neg(Box<Ast>),
    /// `not x`
    Not(Box<Ast>),
    /// `a op b`
    Binary(BinOp, Box<Ast>, Box<Ast>),
    /// `x is [not] null` (`true`: `is not null`).
    IsNull(Box<Ast>, bool),
    /// `x [not] in (a, b, ...)` (`true`: `not in`).
    In(Box<Ast>, Vec<Ast>, bool),
    /// `x [not] between lo and hi`.
    Between(Box<Ast>, Box<Ast>, Box<Ast>, bool),
    /// `if c then a else b`, `case when c then a ... [else b] end`.
    Case(Vec<(Ast, Ast)>, Option<Box<Ast>>),
    /// `name(args)`; the name is lower-cased.
    Call(String, Vec<Ast>),
    /// `cast(x as T)`, `x::T` (`false`), `try_cast(x as T)` (`true`).
    Cast(Box<Ast>, Type, bool),
}

/// Parses an expression.
///
/// # Errors
/// The first syntax error, at the unexpected token.
pub fn parse(src: &str) -> Result<Ast, ExprError> {
    let tokens = lex(src)?;
    let mut p = Parser { tokens, at: 0 };
    let ast = p.expr()?;
    match p.peek() {
        Tok::End => Ok(ast),
        _ => Err(p.unexpected("an operator or the end of the expression")),
    }
}

struct Parser {
    tokens: Vec<(Tok, Range<usize>)>,
    at: usize,
}

const KEYWORDS: [&str; 17] = [
    "and", "or", "not", "if", "then", "else", "case", "when", "end", "is", "null", "true", "false",
    "in", "as", "between", "cast",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at.min(self.tokens.len() - 1)].0
    }

    fn span(&self) -> Range<usize> {
        self.tokens[self.at.min(self.tokens.len() - 1)].1.clone()
    }

    fn prev_end(&self) -> usize {
        self.at.checked_sub(1).map_or(0, |i| self.tokens[i].1.end)
    }

    fn bump(&mut self) -> (Tok, Range<usize>) {
        let t = self.tokens[self.at.min(self.tokens.len() - 1)].clone();
        if self.at < self.tokens.len() - 1 {
            self.at += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, offset: usize, kw: &str) -> bool {
        matches!(self.tokens.get(self.at + offset), Some((Tok::Ident(s), _)) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let yes = matches!(self.peek(), Tok::Sym(s) if *s == sym);
        if yes {
            self.bump();
        }
        yes
    }

    fn unexpected(&self, expected: &str) -> ExprError {
        let found = match self.peek() {
            Tok::End => "the end of the expression".to_owned(),
            Tok::Int(_) | Tok::Float(_) => "a number".to_owned(),
            Tok::Str(_) => "a string".to_owned(),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Quoted(s) => format!("`{s}`"),
            Tok::Sym(s) => format!("`{s}`"),
        };
        let span = match self.peek() {
            Tok::End => self.prev_end()..self.prev_end() + 1,
            _ => self.span(),
        };
        ExprError::new(span, format!("expected {expected}, found {found}"))
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), ExprError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{kw}`")))
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), ExprError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{sym}`")))
        }
    }

    fn node(kind: AstKind, start: usize, end: usize) -> Ast {
        Ast {
            kind,
            span: start..end.max(start),
        }
    }

    fn expr(&mut self) -> Result<Ast, ExprError> {
        self.or()
    }

    fn binary_level(
        &mut self,
        next: fn(&mut Self) -> Result<Ast, ExprError>,
        ops: &[(&str, BinOp, bool)],
    ) -> Result<Ast, ExprError> {
        let mut left = next(self)?;
        'outer: loop {
            for &(text, op, keyword) in ops {
                let matched = if keyword {
                    self.eat_kw(text)
                } else {
                    self.eat_sym(text)
                };
                if matched {
                    let right = next(self)?;
                    let span = left.span.start..right.span.end;
                    left = Self::node(
                        AstKind::Binary(op, Box::new(left), Box::new(right)),
                        span.start,
                        span.end,
                    );
                    continue 'outer;
                }
            }
            return Ok(left);
        }
    }

    fn or(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(Self::and, &[("or", BinOp::Or, true)])
    }

    fn and(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(Self::not, &[("and", BinOp::And, true)])
    }

    fn not(&mut self) -> Result<Ast, ExprError> {
        if self.is_kw("not") {
            let start = self.bump().1.start;
            let inner = self.not()?;
            let end = inner.span.end;
            return Ok(Self::node(AstKind::Not(Box::new(inner)), start, end));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Ast, ExprError> {
        let left = self.concat()?;
        let start = left.span.start;
        const OPS: [(&str, BinOp); 8] = [
            ("==", BinOp::Eq),
            ("=", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<>", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ];
        for (text, op) in OPS {
            if self.eat_sym(text) {
                let right = self.concat()?;
                let end = right.span.end;
                return Ok(Self::node(
                    AstKind::Binary(op, Box::new(left), Box::new(right)),
                    start,
                    end,
                ));
            }
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            self.expect_kw("null")?;
            let end = self.prev_end();
            return Ok(Self::node(
                AstKind::IsNull(Box::new(left), negated),
                start,
                end,
            ));
        }
        let negated = (self.is_kw("not")
            && (self.is_kw_at(1, "in") || self.is_kw_at(1, "between")))
        .then(|| self.bump())
        .is_some();
        if self.eat_kw("in") {
            self.expect_sym("(")?;
            let mut list = vec![self.expr()?];
            while self.eat_sym(",") {
                list.push(self.expr()?);
            }
            self.expect_sym(")")?;
            let end = self.prev_end();
            return Ok(Self::node(
                AstKind::In(Box::new(left), list, negated),
                start,
                end,
            ));
        }
        if self.eat_kw("between") {
            let lo = self.concat()?;
            self.expect_kw("and")?;
            let hi = self.concat()?;
            let end = hi.span.end;
            return Ok(Self::node(
                AstKind::Between(Box::new(left), Box::new(lo), Box::new(hi), negated),
                start,
                end,
            ));
        }
        if negated {
            return Err(self.unexpected("`in` or `between`"));
        }
        Ok(left)
    }

    fn concat(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(Self::additive, &[("||", BinOp::Concat, false)])
    }

    fn additive(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(
            Self::multiplicative,
            &[("+", BinOp::Add, false), ("-", BinOp::Sub, false)],
        )
    }

    fn multiplicative(&mut self) -> Result<Ast, ExprError> {
        self.binary_level(
            Self::unary,
            &[
                ("*", BinOp::Mul, false),
                ("/", BinOp::Div, false),
                ("%", BinOp::Rem, false),
            ],
        )
    }

    fn unary(&mut self) -> Result<Ast, ExprError> {
        if matches!(self.peek(), Tok::Sym("-")) {
            let start = self.bump().1.start;
            let inner = self.unary()?;
            let end = inner.span.end;
            // Fold negative literals, so `-9223372036854775808` parses.
            return Ok(match inner.kind {
                AstKind::Lit(Value::Int(i)) => Self::node(AstKind::Lit(Value::Int(-i)), start, end),
                AstKind::Lit(Value::Float(f)) => {
                    Self::node(AstKind::Lit(Value::Float(-f)), start, end)
                }
                _ => Self::node(AstKind::Neg(Box::new(inner)), start, end),
            });
        }
        let mut e = self.primary()?;
        while self.eat_sym("::") {
            let ty = self.type_name()?;
            let span = e.span.start..self.prev_end();
            e = Self::node(AstKind::Cast(Box::new(e), ty, false), span.start, span.end);
        }
        Ok(e)
    }

    fn type_name(&mut self) -> Result<Type, ExprError> {
        match self.peek().clone() {
            Tok::Ident(name) => match Type::parse(&name.to_ascii_lowercase()) {
                Some(t) => {
                    self.bump();
                    Ok(t)
                }
                None => Err(ExprError::new(
                    self.span(),
                    format!(
                        "unknown type `{name}` (expected boolean, integer, float, string or timestamp)"
                    ),
                )),
            },
            _ => Err(self.unexpected("a type")),
        }
    }

    fn primary(&mut self) -> Result<Ast, ExprError> {
        let (tok, span) = self.bump();
        let lit = |v| Ok(Self::node(AstKind::Lit(v), span.start, span.end));
        match tok {
            Tok::Int(i) => lit(Value::Int(i)),
            Tok::Float(f) => lit(Value::Float(f)),
            Tok::Str(s) => lit(Value::str(&s)),
            Tok::Quoted(name) => Ok(Self::node(AstKind::Field(name), span.start, span.end)),
            Tok::Sym("(") => {
                let inner = self.expr()?;
                self.expect_sym(")")?;
                Ok(inner)
            }
            Tok::Ident(word) => self.word(word, span),
            Tok::End => Err(self.unexpected("a value")),
            _ => {
                self.at -= 1;
                Err(self.unexpected("a value"))
            }
        }
    }

    fn word(&mut self, word: String, span: Range<usize>) -> Result<Ast, ExprError> {
        let lower = word.to_ascii_lowercase();
        let lit = |v| Ok(Self::node(AstKind::Lit(v), span.start, span.end));
        match lower.as_str() {
            "true" => return lit(Value::Bool(true)),
            "false" => return lit(Value::Bool(false)),
            "null" => return lit(Value::Null),
            "if" => {
                let cond = self.expr()?;
                self.expect_kw("then")?;
                let then = self.expr()?;
                self.expect_kw("else")?;
                let other = self.expr()?;
                let end = other.span.end;
                return Ok(Self::node(
                    AstKind::Case(vec![(cond, then)], Some(Box::new(other))),
                    span.start,
                    end,
                ));
            }
            "case" => {
                let mut arms = Vec::new();
                while self.eat_kw("when") {
                    let cond = self.expr()?;
                    self.expect_kw("then")?;
                    arms.push((cond, self.expr()?));
                }
                if arms.is_empty() {
                    return Err(self.unexpected("`when`"));
                }
                let other = if self.eat_kw("else") {
                    Some(Box::new(self.expr()?))
                } else {
                    None
                };
                self.expect_kw("end")?;
                let end = self.prev_end();
                return Ok(Self::node(AstKind::Case(arms, other), span.start, end));
            }
            "cast" | "try_cast" => {
                self.expect_sym("(")?;
                let inner = self.expr()?;
                self.expect_kw("as")?;
                let ty = self.type_name()?;
                self.expect_sym(")")?;
                let end = self.prev_end();
                return Ok(Self::node(
                    AstKind::Cast(Box::new(inner), ty, lower == "try_cast"),
                    span.start,
                    end,
                ));
            }
            _ => {}
        }
        if matches!(self.peek(), Tok::Sym("(")) {
            self.bump();
            let mut args = Vec::new();
            if !self.eat_sym(")") {
                args.push(self.expr()?);
                while self.eat_sym(",") {
                    args.push(self.expr()?);
                }
                self.expect_sym(")")?;
            }
            let end = self.prev_end();
            return Ok(Self::node(AstKind::Call(lower, args), span.start, end));
        }
        if KEYWORDS.contains(&lower.as_str()) {
            self.at -= 1;
            return Err(self.unexpected("a value"));
        }
        Ok(Self::node(AstKind::Field(word), span.start, span.end))
    }
}
