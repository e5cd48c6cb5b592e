//! Tokens of the expression language, with their byte spans.

use std::ops::Range;

use super::ExprError;

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    /// A bare identifier or keyword (keywords are matched case-insensitively by the parser).
    Ident(String),
    /// A backquoted field name.
    Quoted(String),
    /// Punctuation and operators.
    Sym(&'static str),
    End,
}

/// Operators, longest first.
const SYMBOLS: [&str; 19] = [
    "::", "==", "!=", "<>", "<=", ">=", "||", "+", "-", "*", "/", "%", "(", ")", ",", "=", "<",
    ">", ".",
];

/// Splits `src` into tokens; the last one is [`Tok::End`].
pub(super) fn lex(src: &str) -> Result<Vec<(Tok, Range<usize>)>, ExprError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            let (tok, end) = number(src, start)?;
            out.push((tok, start..end));
            i = end;
        } else if c == b'\'' || c == b'"' {
            let (s, end) = quoted(src, start, c, "string")?;
            out.push((Tok::Str(s), start..end));
            i = end;
        } else if c == b'`' {
            let (s, end) = quoted(src, start, c, "field name")?;
            out.push((Tok::Quoted(s), start..end));
            i = end;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_owned()), start..i));
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            out.push((Tok::Sym(sym), start..i));
        } else {
            let len = src[i..].chars().next().map_or(1, char::len_utf8);
            return Err(ExprError::new(
                start..start + len,
                format!("unexpected character `{}`", &src[start..start + len]),
            ));
        }
    }
    out.push((Tok::End, src.len()..src.len()));
    Ok(out)
}

/// An integer, a float (`1.5`, `2e3`) or a duration (`500ms`, `30s`, `5m`, `2h`, `1d`: integer
/// milliseconds).
fn number(src: &str, start: usize) -> Result<(Tok, usize), ExprError> {
    let bytes = src.as_bytes();
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    let mut float = false;
    if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
        float = true;
        i += 1;
        digits(&mut i);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            float = true;
            i = j;
            digits(&mut i);
        }
    }
    let text = &src[start..i];
    if float {
        return text
            .parse::<f64>()
            .map(|f| (Tok::Float(f), i))
            .map_err(|_| ExprError::new(start..i, format!("`{text}` is not a number")));
    }
    let n: i64 = text
        .parse()
        .map_err(|_| ExprError::new(start..i, format!("`{text}` does not fit in an integer")))?;
    // A unit right after the digits makes a duration.
    let mut j = i;
    while j < bytes.len() && bytes[j].is_ascii_alphabetic() {
        j += 1;
    }
    if j == i {
        return Ok((Tok::Int(n), i));
    }
    let factor = match &src[i..j] {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        unit => {
            return Err(ExprError::new(
                start..j,
                format!("unknown duration unit `{unit}` (use ms, s, m, h or d)"),
            ));
        }
    };
    n.checked_mul(factor)
        .map(|ms| (Tok::Int(ms), j))
        .ok_or_else(|| ExprError::new(start..j, "duration too large".to_owned()))
}

/// A quoted string or field name; a doubled quote stands for one.
fn quoted(src: &str, start: usize, q: u8, what: &str) -> Result<(String, usize), ExprError> {
    let bytes = src.as_bytes();
    let mut s = String::new();
    let mut i = start + 1;
    let mut run = i;
    while i < bytes.len() {
        if bytes[i] == q {
            s.push_str(&src[run..i]);
            if i + 1 < bytes.len() && bytes[i + 1] == q {
                s.push(q as char);
                i += 2;
                run = i;
                continue;
            }
            return Ok((s, i + 1));
        }
        i += 1;
    }
    Err(ExprError::new(
        start..src.len(),
        format!("unterminated {what}: it needs a closing {}", q as char),
    ))
}
