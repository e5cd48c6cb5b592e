//! Typed access to JSON fields, with reasons that name the field (never its value).
//!
//! A JSON `null` counts as absent everywhere.

use serde_json::{Map, Value};

/// A reason for a dead letter.
pub(crate) type Reason = String;

/// A JSON object.
pub(crate) type Obj = Map<String, Value>;

/// The value of `key`, `None` when absent or `null`.
pub(crate) fn get<'a>(obj: &'a Obj, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// `value` as an object.
pub(crate) fn as_obj<'a>(value: &'a Value, path: &str) -> Result<&'a Obj, Reason> {
    value
        .as_object()
        .ok_or_else(|| format!("{path}: expected a JSON object"))
}

/// An optional string field.
pub(crate) fn opt_str<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<Option<&'a str>, Reason> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{path}.{key}: expected a string")),
    }
}

/// A required, non-blank string field.
pub(crate) fn req_str<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<&'a str, Reason> {
    match opt_str(obj, path, key)? {
        None => Err(format!("{path}.{key}: missing")),
        Some(s) if s.trim().is_empty() => Err(format!("{path}.{key}: empty")),
        Some(s) => Ok(s),
    }
}

/// An optional, non-blank string field (blank strings count as absent).
pub(crate) fn opt_text<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<Option<&'a str>, Reason> {
    Ok(opt_str(obj, path, key)?.filter(|s| !s.trim().is_empty()))
}

/// An optional number field.
pub(crate) fn opt_f64(obj: &Obj, path: &str, key: &str) -> Result<Option<f64>, Reason> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(format!("{path}.{key}: not a finite number")),
        },
        Some(_) => Err(format!("{path}.{key}: expected a number")),
    }
}

/// A required number field.
pub(crate) fn req_f64(obj: &Obj, path: &str, key: &str) -> Result<f64, Reason> {
    opt_f64(obj, path, key)?.ok_or_else(|| format!("{path}.{key}: missing"))
}

/// An optional boolean field.
pub(crate) fn opt_bool(obj: &Obj, path: &str, key: &str) -> Result<Option<bool>, Reason> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("{path}.{key}: expected a boolean")),
    }
}

/// An optional object field.
pub(crate) fn opt_obj<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<Option<&'a Obj>, Reason> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => as_obj(v, &format!("{path}.{key}")).map(Some),
    }
}

/// An optional array field; absent is empty.
pub(crate) fn opt_arr<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<&'a [Value], Reason> {
    match get(obj, key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(_) => Err(format!("{path}.{key}: expected an array")),
    }
}

/// The objects of an optional array field, each with its path (`path.key[i]`).
pub(crate) fn obj_items<'a>(
    obj: &'a Obj,
    path: &str,
    key: &str,
) -> Result<Vec<(String, &'a Obj)>, Reason> {
    opt_arr(obj, path, key)?
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| {
            let p = format!("{path}.{key}[{i}]");
            as_obj(v, &p).map(|o| (p, o))
        })
        .collect()
}

/// The strings of an optional array-of-strings field.
pub(crate) fn str_items<'a>(obj: &'a Obj, path: &str, key: &str) -> Result<Vec<&'a str>, Reason> {
    opt_arr(obj, path, key)?
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| format!("{path}.{key}[{i}]: expected a string"))
        })
        .collect()
}

/// A reason for JSON that does not parse: the error's category and position, with any quoted
/// fragment of the input removed.
pub(crate) fn syntax_reason(e: &serde_json::Error) -> Reason {
    let msg = e.to_string();
    let what = msg.split(" at line ").next().unwrap_or_default();
    format!(
        "invalid JSON at line {}, column {}: {}",
        e.line(),
        e.column(),
        strip_quoted(what)
    )
}

/// Replaces every fragment between double quotes or backticks with `…`.
pub(crate) fn strip_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' || c == '`' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}
