//! Built-in functions and casts.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use vitalflow_model::row::{Type, Value, format_timestamp};

use super::EvalError;
use super::compile::{Ctx, Eval, Typed, coerce, compare, describe, unify};
use super::news2;
use super::parser::{Ast, AstKind};
use crate::decode::parse_iso8601;

/// Text of a value, as `concat` and casts to string render it.
pub(super) fn render(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => s.to_string(),
        Value::Timestamp(t) => format_timestamp(*t),
    }
}

/// What a function accepts for one argument.
#[derive(Clone, Copy)]
enum Arg {
    Any,
    Str,
    Num,
    Int,
    Ts,
    Bool,
}

impl Arg {
    const fn accepts(self, t: Option<Type>) -> bool {
        match (self, t) {
            (_, None) | (Self::Any, _) => true,
            (Self::Str, Some(t)) => matches!(t, Type::String),
            (Self::Num, Some(t)) => t.is_numeric(),
            (Self::Int, Some(t)) => matches!(t, Type::Int),
            (Self::Ts, Some(t)) => matches!(t, Type::Timestamp),
            (Self::Bool, Some(t)) => matches!(t, Type::Bool),
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Any => "any value",
            Self::Str => "a string",
            Self::Num => "a number",
            Self::Int => "an integer",
            Self::Ts => "a timestamp",
            Self::Bool => "a boolean",
        }
    }
}

/// Signatures: name, argument kinds (the last repeats when `variadic`), minimum arity.
const SIGNATURES: &[(&str, &[Arg], usize, bool)] = &[
    ("coalesce", &[Arg::Any], 1, true),
    ("nullif", &[Arg::Any, Arg::Any], 2, false),
    ("lower", &[Arg::Str], 1, false),
    ("upper", &[Arg::Str], 1, false),
    ("trim", &[Arg::Str], 1, false),
    ("length", &[Arg::Str], 1, false),
    ("concat", &[Arg::Any], 1, true),
    ("substring", &[Arg::Str, Arg::Int, Arg::Int], 2, false),
    ("starts_with", &[Arg::Str, Arg::Str], 2, false),
    ("ends_with", &[Arg::Str, Arg::Str], 2, false),
    ("contains", &[Arg::Str, Arg::Str], 2, false),
    ("replace", &[Arg::Str, Arg::Str, Arg::Str], 3, false),
    ("matches", &[Arg::Str, Arg::Str], 2, false),
    ("abs", &[Arg::Num], 1, false),
    ("round", &[Arg::Num, Arg::Int], 1, false),
    ("floor", &[Arg::Num], 1, false),
    ("ceil", &[Arg::Num], 1, false),
    ("least", &[Arg::Any], 1, true),
    ("greatest", &[Arg::Any], 1, true),
    ("trunc", &[Arg::Ts, Arg::Str], 2, false),
    ("year", &[Arg::Ts], 1, false),
    ("month", &[Arg::Ts], 1, false),
    ("day", &[Arg::Ts], 1, false),
    ("hour", &[Arg::Ts], 1, false),
    ("minute", &[Arg::Ts], 1, false),
    ("second", &[Arg::Ts], 1, false),
    ("dow", &[Arg::Ts], 1, false),
    ("epoch_ms", &[Arg::Ts], 1, false),
    ("timestamp_ms", &[Arg::Int], 1, false),
    ("diff", &[Arg::Str, Arg::Ts, Arg::Ts], 3, false),
    ("news2", NEWS2_ARGS, 8, false),
    ("news2_level", NEWS2_ARGS, 8, false),
    ("news2_missing", NEWS2_ARGS, 8, false),
    ("news2_respiration_rate", &[Arg::Num], 1, false),
    ("news2_spo2", &[Arg::Num, Arg::Bool, Arg::Bool], 1, false),
    ("news2_air_or_oxygen", &[Arg::Bool], 1, false),
    ("news2_systolic", &[Arg::Num], 1, false),
    ("news2_pulse", &[Arg::Num], 1, false),
    ("news2_consciousness", &[Arg::Str], 1, false),
    ("news2_temperature", &[Arg::Num], 1, false),
];

/// The arguments of `news2`, `news2_level` and `news2_missing`, in the order of the alert
/// node's `[news2]` table: respiration rate, SpO2, oxygen, scale 2, systolic, pulse,
/// consciousness, temperature.
const NEWS2_ARGS: &[Arg] = &[
    Arg::Num,
    Arg::Num,
    Arg::Bool,
    Arg::Bool,
    Arg::Num,
    Arg::Num,
    Arg::Str,
    Arg::Num,
];

/// Time units of `trunc` and `diff`, in milliseconds (`0`: calendar months and years).
fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit {
        "millisecond" | "ms" => 1,
        "second" | "s" => 1_000,
        "minute" | "m" | "min" => 60_000,
        "hour" | "h" => 3_600_000,
        "day" | "d" => 86_400_000,
        "week" => 604_800_000,
        "month" | "year" => 0,
        _ => return None,
    })
}

/// A literal string argument (units, patterns), or an error at the argument.
fn literal_str(ctx: &mut Ctx<'_>, ast: &Ast, what: &str) -> Option<String> {
    if let AstKind::Lit(Value::Str(s)) = &ast.kind {
        return Some(s.to_string());
    }
    ctx.error(&ast.span, format!("{what} must be a string literal"));
    None
}

/// Compiles a call of a built-in function.
#[allow(clippy::too_many_lines)]
pub(super) fn call(ctx: &mut Ctx<'_>, name: &str, args: &[Ast], ast: &Ast) -> Typed {
    let Some(&(_, kinds, min, variadic)) = SIGNATURES.iter().find(|s| s.0 == name) else {
        let known: Vec<&str> = SIGNATURES.iter().map(|s| s.0).collect();
        return ctx.error(
            &ast.span,
            format!(
                "unknown function `{name}` (functions: {}, cast, try_cast)",
                known.join(", ")
            ),
        );
    };
    let max = if variadic { usize::MAX } else { kinds.len() };
    if args.len() < min || args.len() > max {
        let expected = if variadic {
            format!("at least {min}")
        } else if min == kinds.len() {
            format!("{min}")
        } else {
            format!("{min} to {}", kinds.len())
        };
        return ctx.error(
            &ast.span,
            format!("`{name}` takes {expected} argument(s), not {}", args.len()),
        );
    }
    // Units and patterns are literals, compiled here once.
    let unit = match name {
        "trunc" => literal_str(ctx, &args[1], "the unit of `trunc`"),
        "diff" => literal_str(ctx, &args[0], "the unit of `diff`"),
        _ => None,
    };
    if let Some(u) = &unit
        && unit_ms(u).is_none()
    {
        let at = if name == "trunc" { &args[1] } else { &args[0] };
        return ctx.error(
            &at.span,
            format!("unknown time unit `{u}` (second, minute, hour, day, week, month, year)"),
        );
    }
    let regex = if name == "matches" {
        match literal_str(ctx, &args[1], "the pattern of `matches`") {
            Some(p) => match regex::Regex::new(&p) {
                Ok(r) => Some(r),
                Err(e) => {
                    let message = format!("invalid regular expression: {e}");
                    return ctx.error(
                        &args[1].span,
                        message.lines().last().unwrap_or("").to_owned(),
                    );
                }
            },
            None => return Typed::constant(Value::Null),
        }
    } else {
        None
    };
    let mut typed = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let t = ctx.compile(a);
        let kind = kinds[i.min(kinds.len() - 1)];
        if !kind.accepts(t.ty) {
            let message = format!(
                "argument {} of `{name}` must be {}, not {}",
                i + 1,
                kind.name(),
                describe(t.ty)
            );
            ctx.error(&a.span, message);
        }
        typed.push(t);
    }
    let any_nullable = typed.iter().any(|t| t.nullable);
    if name.starts_with("news2") {
        return news2::call(name, typed);
    }
    // Variadic value functions: one common type.
    if matches!(name, "coalesce" | "least" | "greatest" | "nullif") {
        let mut ty = None;
        for (t, a) in typed.iter().zip(args) {
            match unify(ty, t.ty) {
                Some(u) => ty = u,
                None => {
                    let message = format!(
                        "the arguments of `{name}` have different types: {} and {}",
                        describe(ty),
                        describe(t.ty)
                    );
                    return ctx.error(&a.span, message);
                }
            }
        }
        let all_nullable = typed.iter().all(|t| t.nullable);
        let evals: Vec<Eval> = typed.into_iter().map(|t| coerce(t, ty)).collect();
        let (nullable, eval): (bool, Eval) = match name {
            "coalesce" => (
                all_nullable,
                Box::new(move |row| {
                    for e in &evals {
                        let v = e(row)?;
                        if !v.is_null() {
                            return Ok(v);
                        }
                    }
                    Ok(Value::Null)
                }),
            ),
            "nullif" => (
                true,
                Box::new(move |row| {
                    let a = evals[0](row)?;
                    let b = evals[1](row)?;
                    Ok(if compare(&a, &b) == Some(std::cmp::Ordering::Equal) {
                        Value::Null
                    } else {
                        a
                    })
                }),
            ),
            _ => {
                let want = if name == "least" {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
                (
                    any_nullable,
                    Box::new(move |row| {
                        let mut best = Value::Null;
                        for e in &evals {
                            let v = e(row)?;
                            if v.is_null() {
                                return Ok(Value::Null);
                            }
                            if best.is_null() || compare(&v, &best) == Some(want) {
                                best = v;
                            }
                        }
                        Ok(best)
                    }),
                )
            }
        };
        return Typed {
            ty,
            nullable,
            eval,
            literal: None,
            field: None,
        };
    }
    if name == "concat" {
        let evals: Vec<Eval> = typed.into_iter().map(|t| t.eval).collect();
        return Typed {
            ty: Some(Type::String),
            nullable: false,
            eval: Box::new(move |row| {
                let mut s = String::new();
                for e in &evals {
                    s.push_str(&render(&e(row)?));
                }
                Ok(Value::str(&s))
            }),
            literal: None,
            field: None,
        };
    }
    let first_ty = typed.first().and_then(|t| t.ty);
    let ty = match name {
        "lower" | "upper" | "trim" | "substring" | "replace" => Type::String,
        "starts_with" | "ends_with" | "contains" | "matches" => Type::Bool,
        "length" | "year" | "month" | "day" | "hour" | "minute" | "second" | "dow" | "epoch_ms"
        | "diff" => Type::Int,
        "abs" | "round" | "floor" | "ceil" => first_ty.unwrap_or(Type::Float),
        _ => Type::Timestamp, // trunc, timestamp_ms
    };
    let evals: Vec<Eval> = typed.into_iter().map(|t| t.eval).collect();
    let name = name.to_owned();
    let unit_ms = unit.as_deref().and_then(unit_ms);
    let unit = unit.unwrap_or_default();
    Typed {
        ty: Some(ty),
        nullable: any_nullable,
        eval: Box::new(move |row| {
            let mut vals = Vec::with_capacity(evals.len());
            for e in &evals {
                let v = e(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                vals.push(v);
            }
            scalar(&name, &vals, unit_ms, &unit, regex.as_ref())
        }),
        literal: None,
        field: None,
    }
}

/// Evaluates a null-free call.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn scalar(
    name: &str,
    v: &[Value],
    unit_ms: Option<i64>,
    unit: &str,
    regex: Option<&regex::Regex>,
) -> Result<Value, EvalError> {
    let s = |i: usize| match v.get(i) {
        Some(Value::Str(s)) => s.as_ref(),
        _ => "",
    };
    let int = |i: usize| match v.get(i) {
        Some(Value::Int(x)) => *x,
        _ => 0,
    };
    let ts = |i: usize| match v.get(i) {
        Some(Value::Timestamp(t)) => *t,
        _ => 0,
    };
    let time = |ms: i64| {
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| EvalError::new("timestamp out of range".to_owned()))
    };
    Ok(match name {
        "lower" => Value::str(&s(0).to_lowercase()),
        "upper" => Value::str(&s(0).to_uppercase()),
        "trim" => Value::str(s(0).trim()),
        "length" => Value::Int(s(0).chars().count() as i64),
        "substring" => {
            // SQL: 1-based start; positions before 1 count towards the length.
            let start = int(1);
            let len = if v.len() > 2 { Some(int(2)) } else { None };
            if len.is_some_and(|l| l < 0) {
                return Err(EvalError::new("negative length in `substring`".to_owned()));
            }
            let from = start.max(1);
            let to = len.map(|l| start.saturating_add(l));
            let out: String = s(0)
                .chars()
                .enumerate()
                .filter(|(i, _)| {
                    let pos = *i as i64 + 1;
                    pos >= from && to.is_none_or(|t| pos < t)
                })
                .map(|(_, c)| c)
                .collect();
            Value::str(&out)
        }
        "starts_with" => Value::Bool(s(0).starts_with(s(1))),
        "ends_with" => Value::Bool(s(0).ends_with(s(1))),
        "contains" => Value::Bool(s(0).contains(s(1))),
        "replace" => Value::str(&s(0).replace(s(1), s(2))),
        "matches" => Value::Bool(regex.is_some_and(|r| r.is_match(s(0)))),
        "abs" | "floor" | "ceil" | "round" => match &v[0] {
            Value::Int(x) => match name {
                "abs" => x
                    .checked_abs()
                    .map(Value::Int)
                    .ok_or_else(|| EvalError::new("integer overflow in `abs`".to_owned()))?,
                _ => Value::Int(*x),
            },
            Value::Float(x) => Value::Float(match name {
                "abs" => x.abs(),
                "floor" => x.floor(),
                "ceil" => x.ceil(),
                _ => {
                    let digits = if v.len() > 1 {
                        int(1).clamp(-15, 15)
                    } else {
                        0
                    } as i32;
                    let f = 10f64.powi(digits);
                    (x * f).round() / f
                }
            }),
            other => other.clone(),
        },
        "year" => Value::Int(i64::from(time(ts(0))?.year())),
        "month" => Value::Int(i64::from(time(ts(0))?.month())),
        "day" => Value::Int(i64::from(time(ts(0))?.day())),
        "hour" => Value::Int(i64::from(time(ts(0))?.hour())),
        "minute" => Value::Int(i64::from(time(ts(0))?.minute())),
        "second" => Value::Int(i64::from(time(ts(0))?.second())),
        "dow" => Value::Int(i64::from(time(ts(0))?.weekday().number_from_monday())),
        "epoch_ms" => Value::Int(ts(0)),
        "timestamp_ms" => Value::Timestamp(int(0)),
        "trunc" => Value::Timestamp(truncate(ts(0), unit, unit_ms.unwrap_or(1))?),
        "diff" => {
            let (a, b) = (ts(1), ts(2));
            match unit_ms {
                Some(0) => {
                    let (x, y) = (time(a)?, time(b)?);
                    let months = i64::from(y.year() - x.year()) * 12 + i64::from(y.month())
                        - i64::from(x.month());
                    Value::Int(if unit == "year" { months / 12 } else { months })
                }
                Some(u) => Value::Int(b.saturating_sub(a) / u),
                None => Value::Null,
            }
        }
        _ => Value::Null,
    })
}

/// Truncates an instant to a unit (weeks start on Monday).
fn truncate(ms: i64, unit: &str, unit_ms: i64) -> Result<i64, EvalError> {
    let out_of_range = || EvalError::new("timestamp out of range".to_owned());
    let t = DateTime::from_timestamp_millis(ms).ok_or_else(out_of_range)?;
    let start = match unit {
        "month" => Utc
            .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
            .single(),
        "year" => Utc.with_ymd_and_hms(t.year(), 1, 1, 0, 0, 0).single(),
        "week" => {
            let day = ms.div_euclid(86_400_000) * 86_400_000;
            let back = i64::from(t.weekday().num_days_from_monday()) * 86_400_000;
            return Ok(day - back);
        }
        _ => return Ok(ms.div_euclid(unit_ms) * unit_ms),
    };
    start.map(|s| s.timestamp_millis()).ok_or_else(out_of_range)
}

/// Compiles a cast to `ty`; `try_cast` gives null where a cast would fail.
pub(super) fn cast(t: Typed, ty: Type, try_cast: bool) -> Typed {
    let f = t.eval;
    Typed {
        ty: Some(ty),
        nullable: t.nullable || try_cast,
        eval: Box::new(move |row| {
            let v = f(row)?;
            match convert(v, ty) {
                Ok(v) => Ok(v),
                Err(_) if try_cast => Ok(Value::Null),
                Err(e) => Err(e),
            }
        }),
        literal: None,
        field: None,
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn convert(v: Value, ty: Type) -> Result<Value, EvalError> {
    let fail =
        |from: Option<Type>| EvalError::new(format!("cannot cast {} to {ty}", describe(from)));
    let from = v.ty();
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (v, Type::String) => Value::str(&render(&v)),
        (Value::Int(i), Type::Int) | (Value::Timestamp(i), Type::Int) => Value::Int(i),
        (Value::Float(f), Type::Int) if f.is_finite() && f.abs() < 9.2e18 => {
            Value::Int(f.trunc() as i64)
        }
        (Value::Bool(b), Type::Int) => Value::Int(i64::from(b)),
        (Value::Str(s), Type::Int) => Value::Int(s.trim().parse().map_err(|_| fail(from))?),
        (Value::Float(f), Type::Float) => Value::Float(f),
        (Value::Int(i), Type::Float) | (Value::Timestamp(i), Type::Float) => Value::Float(i as f64),
        (Value::Bool(b), Type::Float) => Value::Float(if b { 1.0 } else { 0.0 }),
        (Value::Str(s), Type::Float) => Value::Float(s.trim().parse().map_err(|_| fail(from))?),
        (Value::Bool(b), Type::Bool) => Value::Bool(b),
        (Value::Int(i), Type::Bool) => Value::Bool(i != 0),
        (Value::Str(s), Type::Bool) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "0" => Value::Bool(false),
            _ => return Err(fail(from)),
        },
        (Value::Timestamp(t), Type::Timestamp) | (Value::Int(t), Type::Timestamp) => {
            Value::Timestamp(t)
        }
        (Value::Float(f), Type::Timestamp) if f.is_finite() && f.abs() < 9.2e18 => {
            Value::Timestamp(f.trunc() as i64)
        }
        (Value::Str(s), Type::Timestamp) => {
            Value::Timestamp(parse_iso8601(s.trim()).ok_or_else(|| fail(from))?)
        }
        _ => return Err(fail(from)),
    })
}
