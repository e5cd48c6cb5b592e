//! Type checking and compilation of the syntax tree into closures over a row's values.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use vitalflow_model::row::{Schema, Type, Value};

use super::parser::{Ast, AstKind, BinOp};
use super::{EvalError, ExprError, functions};

/// A compiled node: evaluates one value from a row's values.
pub(super) type Eval = Box<dyn Fn(&[Value]) -> Result<Value, EvalError> + Send + Sync>;

/// A compiled node with its static type (`None`: the `null` literal, or a node that failed to
/// check) and nullability.
pub(super) struct Typed {
    pub ty: Option<Type>,
    pub nullable: bool,
    pub eval: Eval,
    /// The value, when the node is a literal.
    pub literal: Option<Value>,
    /// The field index, when the node reads a field as it is.
    pub field: Option<usize>,
}

impl Typed {
    pub fn constant(v: Value) -> Self {
        let ty = v.ty();
        let nullable = v.is_null();
        let out = v.clone();
        Self {
            ty,
            nullable,
            eval: Box::new(move |_| Ok(out.clone())),
            literal: Some(v),
            field: None,
        }
    }

    fn poison() -> Self {
        Self {
            ty: None,
            nullable: true,
            eval: Box::new(|_| Ok(Value::Null)),
            literal: None,
            field: None,
        }
    }
}

/// Checking state: the schema, the errors so far, the fields read.
pub(super) struct Ctx<'a> {
    pub schema: &'a Schema,
    pub errors: Vec<ExprError>,
    pub fields: BTreeSet<usize>,
}

impl Ctx<'_> {
    pub fn error(&mut self, span: &std::ops::Range<usize>, message: String) -> Typed {
        self.errors.push(ExprError::new(span.clone(), message));
        Typed::poison()
    }

    pub fn compile(&mut self, ast: &Ast) -> Typed {
        match &ast.kind {
            AstKind::Lit(v) => Typed::constant(v.clone()),
            AstKind::Field(name) => self.field(name, ast),
            AstKind::Neg(inner) => {
                let t = self.compile(inner);
                match t.ty {
                    Some(Type::Int | Type::Float) | None => {
                        let f = t.eval;
                        Typed {
                            ty: t.ty,
                            nullable: t.nullable,
                            eval: Box::new(move |row| neg(f(row)?)),
                            literal: None,
                            field: None,
                        }
                    }
                    Some(other) => self.error(&ast.span, format!("cannot negate a {other}")),
                }
            }
            AstKind::Not(inner) => {
                let t = self.condition(inner, "`not`");
                let f = t.eval;
                Typed {
                    ty: Some(Type::Bool),
                    nullable: t.nullable,
                    eval: Box::new(move |row| {
                        Ok(match f(row)? {
                            Value::Bool(b) => Value::Bool(!b),
                            _ => Value::Null,
                        })
                    }),
                    literal: None,
                    field: None,
                }
            }
            AstKind::Binary(op, l, r) => self.binary(*op, l, r, ast),
            AstKind::IsNull(inner, negated) => {
                let t = self.compile(inner);
                let (f, negated) = (t.eval, *negated);
                Typed {
                    ty: Some(Type::Bool),
                    nullable: false,
                    eval: Box::new(move |row| Ok(Value::Bool(f(row)?.is_null() != negated))),
                    literal: None,
                    field: None,
                }
            }
            AstKind::In(inner, list, negated) => self.in_list(inner, list, *negated),
            AstKind::Between(x, lo, hi, negated) => self.between(x, lo, hi, *negated),
            AstKind::Case(arms, other) => self.case(arms, other.as_deref(), ast),
            AstKind::Call(name, args) => functions::call(self, name, args, ast),
            AstKind::Cast(inner, ty, try_cast) => {
                let t = self.compile(inner);
                functions::cast(t, *ty, *try_cast)
            }
        }
    }

    fn field(&mut self, name: &str, ast: &Ast) -> Typed {
        let Some((i, field)) = self.schema.field(name) else {
            let hint = closest(name, self.schema)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return self.error(
                &ast.span,
                format!(
                    "unknown field `{name}`{hint}; the fields are: {}",
                    self.schema.names()
                ),
            );
        };
        self.fields.insert(i);
        Typed {
            ty: Some(field.ty),
            nullable: field.nullable,
            eval: Box::new(move |row| Ok(row.get(i).cloned().unwrap_or(Value::Null))),
            literal: None,
            field: Some(i),
        }
    }

    /// A boolean operand.
    pub fn condition(&mut self, ast: &Ast, what: &str) -> Typed {
        let t = self.compile(ast);
        match t.ty {
            Some(Type::Bool) | None => t,
            Some(other) => self.error(
                &ast.span,
                format!("{what} needs a boolean condition, not a {other}"),
            ),
        }
    }

    fn binary(&mut self, op: BinOp, l: &Ast, r: &Ast, ast: &Ast) -> Typed {
        if matches!(op, BinOp::And | BinOp::Or) {
            let what = format!("`{}`", op.symbol());
            let (a, b) = (self.condition(l, &what), self.condition(r, &what));
            let nullable = a.nullable || b.nullable;
            let (fa, fb) = (a.eval, b.eval);
            let eval: Eval = if op == BinOp::And {
                Box::new(move |row| {
                    let x = fa(row)?;
                    if x == Value::Bool(false) {
                        return Ok(x);
                    }
                    let y = fb(row)?;
                    Ok(match (x, y) {
                        (_, Value::Bool(false)) => Value::Bool(false),
                        (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                        _ => Value::Null,
                    })
                })
            } else {
                Box::new(move |row| {
                    let x = fa(row)?;
                    if x == Value::Bool(true) {
                        return Ok(x);
                    }
                    let y = fb(row)?;
                    Ok(match (x, y) {
                        (_, Value::Bool(true)) => Value::Bool(true),
                        (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                        _ => Value::Null,
                    })
                })
            };
            return Typed {
                ty: Some(Type::Bool),
                nullable,
                eval,
                literal: None,
                field: None,
            };
        }
        let (a, b) = (self.compile(l), self.compile(r));
        let nullable = a.nullable || b.nullable;
        if op == BinOp::Concat {
            let (fa, fb) = (a.eval, b.eval);
            return Typed {
                ty: Some(Type::String),
                nullable,
                eval: Box::new(move |row| {
                    let (x, y) = (fa(row)?, fb(row)?);
                    if x.is_null() || y.is_null() {
                        return Ok(Value::Null);
                    }
                    Ok(Value::str(
                        &(functions::render(&x) + &functions::render(&y)),
                    ))
                }),
                literal: None,
                field: None,
            };
        }
        if let Some(cmp) = comparison(op) {
            if !comparable(a.ty, b.ty) {
                return self.error(
                    &ast.span,
                    format!(
                        "cannot compare {} with {} (`{}`)",
                        describe(a.ty),
                        describe(b.ty),
                        op.symbol()
                    ),
                );
            }
            return compare_node(a, b, cmp, nullable);
        }
        let Some(ty) = arith_type(op, a.ty, b.ty) else {
            return self.error(
                &ast.span,
                format!(
                    "cannot apply `{}` to {} and {}",
                    op.symbol(),
                    describe(a.ty),
                    describe(b.ty)
                ),
            );
        };
        arith_node(op, a, b, ty, nullable)
    }

    fn in_list(&mut self, inner: &Ast, list: &[Ast], negated: bool) -> Typed {
        let x = self.compile(inner);
        let mut items = Vec::new();
        let mut nullable = x.nullable;
        for item in list {
            let t = self.compile(item);
            if !comparable(x.ty, t.ty) {
                let message = format!(
                    "cannot compare {} with {} (`in`)",
                    describe(x.ty),
                    describe(t.ty)
                );
                self.error(&item.span, message);
            }
            nullable |= t.nullable;
            items.push(t.eval);
        }
        let fx = x.eval;
        Typed {
            ty: Some(Type::Bool),
            nullable,
            eval: Box::new(move |row| {
                let v = fx(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for item in &items {
                    let w = item(row)?;
                    match compare(&v, &w) {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
                        None if w.is_null() => saw_null = true,
                        _ => {}
                    }
                }
                Ok(if saw_null {
                    Value::Null
                } else {
                    Value::Bool(negated)
                })
            }),
            literal: None,
            field: None,
        }
    }

    fn between(&mut self, x: &Ast, lo: &Ast, hi: &Ast, negated: bool) -> Typed {
        let (tx, tlo, thi) = (self.compile(x), self.compile(lo), self.compile(hi));
        for (t, ast) in [(&tlo, lo), (&thi, hi)] {
            if !comparable(tx.ty, t.ty) {
                let message = format!(
                    "cannot compare {} with {} (`between`)",
                    describe(tx.ty),
                    describe(t.ty)
                );
                self.error(&ast.span, message);
            }
        }
        let nullable = tx.nullable || tlo.nullable || thi.nullable;
        let (fx, flo, fhi) = (tx.eval, tlo.eval, thi.eval);
        Typed {
            ty: Some(Type::Bool),
            nullable,
            eval: Box::new(move |row| {
                let v = fx(row)?;
                let (a, b) = (compare(&v, &flo(row)?), compare(&v, &fhi(row)?));
                Ok(match (a, b) {
                    (Some(a), Some(b)) => {
                        Value::Bool((a != Ordering::Less && b != Ordering::Greater) != negated)
                    }
                    _ => Value::Null,
                })
            }),
            literal: None,
            field: None,
        }
    }

    fn case(&mut self, arms: &[(Ast, Ast)], other: Option<&Ast>, ast: &Ast) -> Typed {
        let mut conds = Vec::new();
        let mut values = Vec::new();
        for (c, v) in arms {
            conds.push(self.condition(c, "`if` / `when`").eval);
            values.push((self.compile(v), v.span.clone()));
        }
        let other = other.map(|o| (self.compile(o), o.span.clone()));
        let mut ty = None;
        for (t, span) in values.iter().chain(other.iter()) {
            match unify(ty, t.ty) {
                Some(u) => ty = u,
                None => {
                    let message = format!(
                        "the branches have different types: {} and {}",
                        describe(ty),
                        describe(t.ty)
                    );
                    return self.error(span, message);
                }
            }
        }
        let nullable =
            other.is_none() || values.iter().chain(other.iter()).any(|(t, _)| t.nullable);
        let _ = ast;
        // `if c then K1 else K2` with constant branches: no calls for the branches.
        let literal = |t: &Typed| {
            t.literal.clone().map(|v| match (v, ty) {
                #[allow(clippy::cast_precision_loss)]
                (Value::Int(i), Some(Type::Float)) => Value::Float(i as f64),
                (v, _) => v,
            })
        };
        if conds.len() == 1
            && let (Some(a), Some((o, _))) = (literal(&values[0].0), other.as_ref())
            && let Some(b) = literal(o)
        {
            let c = conds.pop();
            if let Some(c) = c {
                return Typed {
                    ty,
                    nullable,
                    eval: Box::new(move |row| {
                        Ok(if c(row)? == Value::Bool(true) {
                            a.clone()
                        } else {
                            b.clone()
                        })
                    }),
                    literal: None,
                    field: None,
                };
            }
        }
        let values: Vec<Eval> = values.into_iter().map(|(t, _)| coerce(t, ty)).collect();
        let other = other.map(|(t, _)| coerce(t, ty));
        Typed {
            ty,
            nullable,
            eval: Box::new(move |row| {
                for (c, v) in conds.iter().zip(&values) {
                    if c(row)? == Value::Bool(true) {
                        return v(row);
                    }
                }
                match &other {
                    Some(o) => o(row),
                    None => Ok(Value::Null),
                }
            }),
            literal: None,
            field: None,
        }
    }
}

/// The closest field name within two edits, for "did you mean".
fn closest<'s>(name: &str, schema: &'s Schema) -> Option<&'s str> {
    schema
        .fields
        .iter()
        .map(|f| {
            (
                edit_distance(&name.to_lowercase(), &f.name.to_lowercase()),
                f.name.as_str(),
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance, in characters: how far a misspelt name is from a known one, for the
/// "did you mean" of error messages.
#[must_use]
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How a type is named in messages.
pub(super) fn describe(t: Option<Type>) -> String {
    t.map_or_else(|| "null".to_owned(), |t| format!("{t}"))
}

/// The common type of two branches: `Some(None)` when both are null, `None` when they clash.
pub(super) fn unify(a: Option<Type>, b: Option<Type>) -> Option<Option<Type>> {
    match (a, b) {
        (None, x) | (x, None) => Some(x),
        (Some(x), Some(y)) if x == y => Some(Some(x)),
        (Some(Type::Int | Type::Float), Some(Type::Int | Type::Float)) => Some(Some(Type::Float)),
        _ => None,
    }
}

/// A node's evaluator, converting integers to floats when the target type is float.
pub(super) fn coerce(t: Typed, target: Option<Type>) -> Eval {
    if target == Some(Type::Float) && t.ty == Some(Type::Int) {
        let f = t.eval;
        return Box::new(move |row| {
            Ok(match f(row)? {
                #[allow(clippy::cast_precision_loss)]
                Value::Int(i) => Value::Float(i as f64),
                v => v,
            })
        });
    }
    t.eval
}

fn comparable(a: Option<Type>, b: Option<Type>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x == y || (x.is_numeric() && y.is_numeric()),
    }
}

fn comparison(op: BinOp) -> Option<fn(Ordering) -> bool> {
    Some(match op {
        BinOp::Eq => Ordering::is_eq,
        BinOp::Ne => Ordering::is_ne,
        BinOp::Lt => Ordering::is_lt,
        BinOp::Le => Ordering::is_le,
        BinOp::Gt => Ordering::is_gt,
        BinOp::Ge => Ordering::is_ge,
        _ => return None,
    })
}

/// Orders two values of comparable types; `None` when either is null (or NaN is involved).
#[allow(clippy::cast_precision_loss)]
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) | (Value::Timestamp(x), Value::Timestamp(y)) => {
            Some(x.cmp(y))
        }
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn compare_node(a: Typed, b: Typed, test: fn(Ordering) -> bool, nullable: bool) -> Typed {
    // The common cases, a field against a constant, read the field in place.
    if let (Some(i), Some(Value::Int(c))) = (a.field, &b.literal) {
        let c = *c;
        return Typed {
            ty: Some(Type::Bool),
            nullable,
            eval: Box::new(move |row| {
                Ok(match row.get(i) {
                    Some(Value::Int(x)) => Value::Bool(test(x.cmp(&c))),
                    Some(v) => {
                        compare(v, &Value::Int(c)).map_or(Value::Null, |o| Value::Bool(test(o)))
                    }
                    None => Value::Null,
                })
            }),
            literal: None,
            field: None,
        };
    }
    if let (Some(i), Some(k)) = (a.field, b.literal.clone()) {
        return Typed {
            ty: Some(Type::Bool),
            nullable,
            eval: Box::new(move |row| {
                Ok(row
                    .get(i)
                    .and_then(|v| compare(v, &k))
                    .map_or(Value::Null, |o| Value::Bool(test(o))))
            }),
            literal: None,
            field: None,
        };
    }
    if let Some(Value::Int(c)) = b.literal {
        let fa = a.eval;
        return Typed {
            ty: Some(Type::Bool),
            nullable,
            eval: Box::new(move |row| match fa(row)? {
                Value::Int(x) => Ok(Value::Bool(test(x.cmp(&c)))),
                v => Ok(compare(&v, &Value::Int(c)).map_or(Value::Null, |o| Value::Bool(test(o)))),
            }),
            literal: None,
            field: None,
        };
    }
    let (fa, fb) = (a.eval, b.eval);
    Typed {
        ty: Some(Type::Bool),
        nullable,
        eval: Box::new(move |row| {
            let (x, y) = (fa(row)?, fb(row)?);
            Ok(compare(&x, &y).map_or(Value::Null, |o| Value::Bool(test(o))))
        }),
        literal: None,
        field: None,
    }
}

fn arith_type(op: BinOp, a: Option<Type>, b: Option<Type>) -> Option<Option<Type>> {
    use Type::{Float, Int, Timestamp};
    Some(match (op, a, b) {
        (_, None, None) => None,
        (_, Some(Int), Some(Int)) => Some(Int),
        (_, Some(Int | Float), Some(Int | Float)) => Some(Float),
        (_, Some(t @ (Int | Float)), None) | (_, None, Some(t @ (Int | Float))) => Some(t),
        (BinOp::Add, Some(Timestamp), Some(Int) | None)
        | (BinOp::Add, Some(Int) | None, Some(Timestamp))
        | (BinOp::Sub, Some(Timestamp), Some(Int)) => Some(Timestamp),
        (BinOp::Sub, Some(Timestamp), Some(Timestamp) | None) => Some(Int),
        _ => return None,
    })
}

fn arith_node(op: BinOp, a: Typed, b: Typed, ty: Option<Type>, nullable: bool) -> Typed {
    // Integer arithmetic with a constant, without the generic dispatch.
    if let (Some(Type::Int), Some(Value::Int(c))) = (ty, &b.literal) {
        let (fa, c) = (a.eval, *c);
        return Typed {
            ty,
            nullable,
            eval: Box::new(move |row| match fa(row)? {
                Value::Int(x) => int_op(op, x, c),
                v => arith(op, v, Value::Int(c)),
            }),
            literal: None,
            field: None,
        };
    }
    let (fa, fb) = (a.eval, b.eval);
    Typed {
        ty,
        nullable,
        eval: Box::new(move |row| arith(op, fa(row)?, fb(row)?)),
        literal: None,
        field: None,
    }
}

fn int_op(op: BinOp, x: i64, y: i64) -> Result<Value, EvalError> {
    let r = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Div | BinOp::Rem if y == 0 => {
            return Err(EvalError::new(format!(
                "division by zero in `{}`",
                op.symbol()
            )));
        }
        BinOp::Div => x.checked_div(y),
        BinOp::Rem => x.checked_rem(y),
        _ => None,
    };
    r.map(Value::Int)
        .ok_or_else(|| EvalError::new(format!("integer overflow in `{}`", op.symbol())))
}

#[allow(clippy::cast_precision_loss)]
fn arith(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError> {
    let float = |x: f64, y: f64| -> Result<Value, EvalError> {
        Ok(Value::Float(match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div | BinOp::Rem if y == 0.0 => {
                return Err(EvalError::new(format!(
                    "division by zero in `{}`",
                    op.symbol()
                )));
            }
            BinOp::Div => x / y,
            _ => x % y,
        }))
    };
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
        (Value::Int(x), Value::Int(y)) => int_op(op, x, y),
        (Value::Float(x), Value::Float(y)) => float(x, y),
        (Value::Int(x), Value::Float(y)) => float(x as f64, y),
        (Value::Float(x), Value::Int(y)) => float(x, y as f64),
        (Value::Timestamp(t), Value::Int(d)) | (Value::Int(d), Value::Timestamp(t)) => {
            let r = if op == BinOp::Sub {
                t.checked_sub(d)
            } else {
                t.checked_add(d)
            };
            r.map(Value::Timestamp)
                .ok_or_else(|| EvalError::new("timestamp out of range".to_owned()))
        }
        (Value::Timestamp(x), Value::Timestamp(y)) => x
            .checked_sub(y)
            .map(Value::Int)
            .ok_or_else(|| EvalError::new("integer overflow in `-`".to_owned())),
        _ => Err(EvalError::new(format!(
            "`{}` on values of unexpected types",
            op.symbol()
        ))),
    }
}

fn neg(v: Value) -> Result<Value, EvalError> {
    match v {
        Value::Int(i) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| EvalError::new("integer overflow in `-`".to_owned())),
        Value::Float(f) => Ok(Value::Float(-f)),
        other => Ok(other),
    }
}
