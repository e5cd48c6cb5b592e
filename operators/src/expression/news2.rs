//! The NEWS2 functions of expressions: the alert node's scorer ([`crate::alert::news2`]) over
//! one row, so a per-reading score needs no copy of the chart in a job file.
//!
//! `news2`, `news2_level` and `news2_missing` take the parameters in the order of the alert
//! node's `[news2]` table; a null argument is a missing parameter, as in the alert node: the
//! score is then that of the parameters present (a lower bound). A null `scale2` scores SpO2 on
//! scale 1, the chart's default, and is listed by `news2_missing` as `spo2-scale`. The
//! `news2_<parameter>` functions give one sub-score each.

use vitalflow_model::row::{Type, Value};

use super::EvalError;
use super::compile::{Eval, Typed};
use crate::alert::monitor::{level_name, parameter_name};
use crate::alert::news2::{self as chart, Acvpu, News2, Observations, Spo2Scale};

/// A number argument (`None`: null).
#[allow(clippy::cast_precision_loss)]
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// An ACVPU argument; text that is not one is an error (the message holds no value).
fn acvpu(name: &str, v: &Value) -> Result<Option<Acvpu>, EvalError> {
    match v {
        Value::Str(s) => Acvpu::parse(s).map(Some).ok_or_else(|| {
            EvalError::new(format!(
                "`{name}`: consciousness is not one of A, C, V, P, U (or the words)"
            ))
        }),
        _ => Ok(None),
    }
}

fn scale(scale2: Option<bool>) -> Spo2Scale {
    if scale2 == Some(true) {
        Spo2Scale::Two
    } else {
        Spo2Scale::One
    }
}

/// The score of `news2(…)`'s eight arguments, whether the scale was missing, and whether any
/// parameter was present at all.
fn score(name: &str, v: &[Value]) -> Result<(News2, bool, bool), EvalError> {
    let arg = |i: usize| v.get(i).unwrap_or(&Value::Null);
    let obs = Observations {
        respiration_rate: number(arg(0)),
        spo2: number(arg(1)),
        on_oxygen: boolean(arg(2)),
        systolic_bp: number(arg(4)),
        pulse: number(arg(5)),
        consciousness: acvpu(name, arg(6))?,
        temperature: number(arg(7)),
    };
    let scale2 = boolean(arg(3));
    let news2 = chart::score(&obs, scale(scale2));
    let any = news2.sub.iter().any(Option::is_some);
    Ok((news2, scale2.is_none(), any))
}

/// Compiles a call of a `news2` function whose arguments are compiled and type-checked.
pub(super) fn call(name: &str, typed: Vec<Typed>) -> Typed {
    let first_nullable = typed.first().is_some_and(|t| t.nullable);
    let evals: Vec<Eval> = typed.into_iter().map(|t| t.eval).collect();
    let (ty, nullable) = match name {
        "news2_level" => (Type::String, true),
        "news2_missing" => (Type::String, false),
        "news2" => (Type::Int, true),
        _ => (Type::Int, first_nullable),
    };
    let name = name.to_owned();
    Typed {
        ty: Some(ty),
        nullable,
        eval: Box::new(move |row| {
            let mut vals = Vec::with_capacity(evals.len());
            for e in &evals {
                vals.push(e(row)?);
            }
            eval(&name, &vals)
        }),
        literal: None,
        field: None,
    }
}

fn eval(name: &str, v: &[Value]) -> Result<Value, EvalError> {
    let arg = |i: usize| v.get(i).unwrap_or(&Value::Null);
    let sub = |s: Option<u8>| s.map_or(Value::Null, |s| Value::Int(i64::from(s)));
    let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
    Ok(match name {
        "news2" => {
            let (news2, _, any) = score(name, v)?;
            if any {
                Value::Int(i64::from(news2.total))
            } else {
                Value::Null
            }
        }
        "news2_level" => {
            let (news2, _, any) = score(name, v)?;
            if any {
                Value::str(level_name(news2.level))
            } else {
                Value::Null
            }
        }
        "news2_missing" => {
            let (news2, scale_missing, _) = score(name, v)?;
            let mut names: Vec<&str> = news2.missing.iter().map(|p| parameter_name(*p)).collect();
            if scale_missing {
                names.push("spo2-scale");
            }
            Value::str(&names.join(","))
        }
        "news2_respiration_rate" => sub(finite(number(arg(0))).map(chart::respiration_rate)),
        "news2_spo2" => {
            let s = scale(boolean(arg(1)));
            let oxygen = boolean(arg(2)).unwrap_or(false);
            sub(finite(number(arg(0))).map(|x| chart::spo2(x, s, oxygen)))
        }
        "news2_air_or_oxygen" => sub(boolean(arg(0)).map(chart::air_or_oxygen)),
        "news2_systolic" => sub(finite(number(arg(0))).map(chart::systolic_bp)),
        "news2_pulse" => sub(finite(number(arg(0))).map(chart::pulse)),
        "news2_consciousness" => sub(acvpu(name, arg(0))?.map(chart::consciousness)),
        "news2_temperature" => sub(finite(number(arg(0))).map(chart::temperature)),
        _ => Value::Null,
    })
}
