//! Aggregate functions of windows: parsing `mean(hr)`, and their incremental accumulators.

use std::collections::BTreeSet;

use vitalflow_model::row::{KeyValue, Type, Value};

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFn {
    /// `count()` (rows) or `count(x)` (rows where `x` is not null).
    Count,
    /// `sum(x)`: integer for integers, float for floats.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
    /// `mean(x)` (also `avg`): a float.
    Mean,
    /// `stddev(x)`: the sample standard deviation (n − 1), null under two values.
    Stddev,
    /// `first(x)`: the value of the earliest record by event time (ties: the earlier in input).
    First,
    /// `last(x)`: the value of the latest record by event time (ties: the later in input).
    Last,
    /// `count_distinct(x)`: distinct non-null values.
    CountDistinct,
}

/// The aggregate functions, as written in job files.
pub const AGG_NAMES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "mean",
    "avg",
    "stddev",
    "first",
    "last",
    "count_distinct",
];

impl AggFn {
    /// Parses a function name.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "min" => Self::Min,
            "max" => Self::Max,
            "mean" | "avg" => Self::Mean,
            "stddev" | "stddev_samp" => Self::Stddev,
            "first" => Self::First,
            "last" => Self::Last,
            "count_distinct" => Self::CountDistinct,
            _ => return None,
        })
    }

    /// The result type for an argument of type `arg`, or why the argument does not fit.
    ///
    /// # Errors
    /// A message naming the function and the type it needs.
    pub fn result_type(self, arg: Option<Type>) -> Result<Type, String> {
        match (self, arg) {
            (Self::Count | Self::CountDistinct, _) => Ok(Type::Int),
            (_, None) => Err("takes one argument".to_owned()),
            (Self::Sum, Some(t @ (Type::Int | Type::Float))) => Ok(t),
            (Self::Mean | Self::Stddev, Some(Type::Int | Type::Float)) => Ok(Type::Float),
            (Self::Sum | Self::Mean | Self::Stddev, Some(t)) => {
                Err(format!("takes an integer or float argument, not {t}"))
            }
            (Self::Min | Self::Max, Some(Type::Bool)) => {
                Err("takes a number, timestamp or string argument, not boolean".to_owned())
            }
            (Self::Min | Self::Max | Self::First | Self::Last, Some(t)) => Ok(t),
        }
    }
}

/// A parsed aggregate call: the function, and its argument's text with its byte offset.
pub type Call<'a> = (AggFn, Option<(&'a str, usize)>);

/// Splits `func(argument)` into the function name, the argument's text (`None` for `count()`
/// and `count(*)`) and the argument's byte offset in `source`.
///
/// # Errors
/// A message when the text is not a call of a known aggregate function.
pub fn split_call(source: &str) -> Result<Call<'_>, String> {
    let trimmed_start = source.len() - source.trim_start().len();
    let s = source.trim();
    let open = s.find('(').ok_or_else(|| {
        format!(
            "expected an aggregate like `mean(hr)` (one of: {})",
            AGG_NAMES.join(", ")
        )
    })?;
    let name = s[..open].trim();
    let func = AggFn::parse(&name.to_ascii_lowercase()).ok_or_else(|| {
        format!(
            "unknown aggregate function `{name}` (expected one of: {})",
            AGG_NAMES.join(", ")
        )
    })?;
    let Some(inner) = s[open + 1..].strip_suffix(')') else {
        return Err(format!("`{name}(` has no closing `)` at the end"));
    };
    let offset = trimmed_start + open + 1;
    let arg = inner.trim();
    if arg.is_empty() || arg == "*" {
        return match func {
            AggFn::Count => Ok((func, None)),
            _ => Err(format!("`{name}` takes one argument")),
        };
    }
    let lead = inner.len() - inner.trim_start().len();
    Ok((func, Some((arg, offset + lead))))
}

/// The running state of one aggregate over one window.
#[derive(Clone, Debug)]
pub enum Acc {
    /// Rows (or non-null values) counted.
    Count(u64),
    /// Integer sum (exact) and whether any value was added.
    SumInt(i128, bool),
    /// Float sum, compensated (Neumaier), and whether any value was added.
    SumFloat(f64, f64, bool),
    /// Smallest value so far.
    Min(Option<Value>),
    /// Largest value so far.
    Max(Option<Value>),
    /// Count, exact integer sum or compensated float sum.
    Mean(u64, f64, f64),
    /// Welford: count, mean, sum of squared deviations.
    Stddev(u64, f64, f64),
    /// Earliest (event time, sequence, value).
    First(Option<(i64, u64, Value)>),
    /// Latest (event time, sequence, value).
    Last(Option<(i64, u64, Value)>),
    /// Distinct non-null values.
    Distinct(BTreeSet<KeyValue>),
}

fn neumaier(sum: &mut f64, comp: &mut f64, x: f64) {
    let t = *sum + x;
    if sum.abs() >= x.abs() {
        *comp += (*sum - t) + x;
    } else {
        *comp += (x - t) + *sum;
    }
    *sum = t;
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

impl Acc {
    /// An empty accumulator for a function whose argument has type `arg`.
    #[must_use]
    pub fn new(func: AggFn, arg: Option<Type>) -> Self {
        match func {
            AggFn::Count => Self::Count(0),
            AggFn::Sum if arg == Some(Type::Int) => Self::SumInt(0, false),
            AggFn::Sum => Self::SumFloat(0.0, 0.0, false),
            AggFn::Min => Self::Min(None),
            AggFn::Max => Self::Max(None),
            AggFn::Mean => Self::Mean(0, 0.0, 0.0),
            AggFn::Stddev => Self::Stddev(0, 0.0, 0.0),
            AggFn::First => Self::First(None),
            AggFn::Last => Self::Last(None),
            AggFn::CountDistinct => Self::Distinct(BTreeSet::new()),
        }
    }

    /// Adds one record's value (`None`: `count()` with no argument). Nulls are skipped, as in SQL.
    pub fn add(&mut self, value: Option<&Value>, time: i64, seq: u64) {
        let v = match value {
            None => {
                if let Self::Count(n) = self {
                    *n += 1;
                }
                return;
            }
            Some(Value::Null) => return,
            Some(v) => v,
        };
        match self {
            Self::Count(n) => *n += 1,
            Self::SumInt(s, any) => {
                if let Value::Int(i) = v {
                    *s += i128::from(*i);
                    *any = true;
                }
            }
            Self::SumFloat(s, c, any) => {
                if let Some(x) = as_f64(v) {
                    neumaier(s, c, x);
                    *any = true;
                }
            }
            Self::Min(m) => {
                if m.as_ref()
                    .is_none_or(|cur| v.compare(cur) == Some(std::cmp::Ordering::Less))
                {
                    *m = Some(v.clone());
                }
            }
            Self::Max(m) => {
                if m.as_ref()
                    .is_none_or(|cur| v.compare(cur) == Some(std::cmp::Ordering::Greater))
                {
                    *m = Some(v.clone());
                }
            }
            Self::Mean(n, s, c) => {
                if let Some(x) = as_f64(v) {
                    *n += 1;
                    neumaier(s, c, x);
                }
            }
            Self::Stddev(n, mean, m2) => {
                if let Some(x) = as_f64(v) {
                    *n += 1;
                    let delta = x - *mean;
                    *mean += delta / *n as f64;
                    *m2 += delta * (x - *mean);
                }
            }
            Self::First(f) => {
                if f.as_ref().is_none_or(|(t, s, _)| (time, seq) < (*t, *s)) {
                    *f = Some((time, seq, v.clone()));
                }
            }
            Self::Last(l) => {
                if l.as_ref().is_none_or(|(t, s, _)| (time, seq) > (*t, *s)) {
                    *l = Some((time, seq, v.clone()));
                }
            }
            Self::Distinct(set) => {
                set.insert(KeyValue(v.clone()));
            }
        }
    }

    /// Merges another accumulator of the same function into this one (session windows).
    pub fn merge(&mut self, other: Self) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::SumInt(a, x), Self::SumInt(b, y)) => {
                *a += b;
                *x |= y;
            }
            (Self::SumFloat(a, ca, x), Self::SumFloat(b, cb, y)) => {
                neumaier(a, ca, b);
                *ca += cb;
                *x |= y;
            }
            (this @ (Self::Min(_) | Self::Max(_)), Self::Min(Some(v)) | Self::Max(Some(v))) => {
                this.add(Some(&v), 0, 0);
            }
            (Self::Mean(n, s, c), Self::Mean(m, t, d)) => {
                *n += m;
                neumaier(s, c, t);
                *c += d;
            }
            (Self::Stddev(n, mean, m2), Self::Stddev(m, mean_b, m2_b)) => {
                if m == 0 {
                    return;
                }
                let total = *n + m;
                let delta = mean_b - *mean;
                let (na, nb) = (*n as f64, m as f64);
                *mean += delta * nb / total as f64;
                *m2 += m2_b + delta * delta * na * nb / total as f64;
                *n = total;
            }
            (this @ Self::First(_), Self::First(Some((t, s, v))))
            | (this @ Self::Last(_), Self::Last(Some((t, s, v)))) => this.add(Some(&v), t, s),
            (Self::Distinct(a), Self::Distinct(b)) => a.extend(b),
            _ => {}
        }
    }

    /// The aggregate's value now.
    #[must_use]
    pub fn value(&self) -> Value {
        match self {
            Self::Count(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            Self::SumInt(s, any) => {
                if *any {
                    i64::try_from(*s).map_or(Value::Null, Value::Int)
                } else {
                    Value::Null
                }
            }
            Self::SumFloat(s, c, any) => {
                if *any {
                    Value::Float(s + c)
                } else {
                    Value::Null
                }
            }
            Self::Min(v) | Self::Max(v) => v.clone().unwrap_or(Value::Null),
            Self::Mean(n, s, c) => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float((s + c) / *n as f64)
                }
            }
            Self::Stddev(n, _, m2) => {
                if *n < 2 {
                    Value::Null
                } else {
                    Value::Float((m2.max(0.0) / (*n - 1) as f64).sqrt())
                }
            }
            Self::First(f) | Self::Last(f) => f.as_ref().map_or(Value::Null, |(_, _, v)| v.clone()),
            Self::Distinct(set) => Value::Int(i64::try_from(set.len()).unwrap_or(i64::MAX)),
        }
    }
}
