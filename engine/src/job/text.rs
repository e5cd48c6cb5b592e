//! Job file text: `${VAR}` substitution and mapping byte offsets back to line and column.

use std::path::{Path, PathBuf};

use super::Diagnostic;

/// One `${...}` replaced in the text.
#[derive(Debug, Clone, Copy)]
struct Substitution {
    /// Start of the replacement in the substituted text.
    at: usize,
    /// Length of the replacement.
    new_len: usize,
    /// Length of the `${...}` it replaced.
    old_len: usize,
}

/// The text of a job file, before and after environment substitution.
#[derive(Debug, Clone)]
pub struct JobText {
    /// The file's path, as given.
    pub path: PathBuf,
    original: String,
    /// The text with `${VAR}` and `${VAR:-default}` substituted.
    pub text: String,
    subs: Vec<Substitution>,
}

impl JobText {
    /// Substitutes `${VAR}` and `${VAR:-default}` from `env`. `$${` stands for a literal `${`.
    /// Comment lines are left alone. Unset variables without a default are reported.
    pub fn new(
        path: &Path,
        original: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Self, Vec<Diagnostic>) {
        let mut text = String::with_capacity(original.len());
        let mut subs = Vec::new();
        let mut errors = Vec::new();
        let bytes = original.as_bytes();
        let mut i = 0;
        let mut line_is_comment = false;
        let mut line_start = true;
        while i < bytes.len() {
            let c = bytes[i];
            if line_start {
                let rest = original[i..].trim_start_matches([' ', '\t']);
                line_is_comment = rest.starts_with('#');
                line_start = false;
            }
            if c == b'\n' {
                line_start = true;
            }
            if !line_is_comment && c == b'$' && original[i..].starts_with("$${") {
                text.push_str("${");
                subs.push(Substitution {
                    at: text.len() - 2,
                    new_len: 2,
                    old_len: 3,
                });
                i += 3;
                continue;
            }
            if !line_is_comment
                && c == b'$'
                && original[i..].starts_with("${")
                && let Some(end) = original[i..].find('}')
                && !original[i + 2..i + end].contains('\n')
            {
                match substitution(&original[i + 2..i + end], env) {
                    Ok(value) => {
                        subs.push(Substitution {
                            at: text.len(),
                            new_len: value.len(),
                            old_len: end + 1,
                        });
                        text.push_str(&value);
                        i += end + 1;
                        continue;
                    }
                    Err(message) => errors.push(self_diag(path, &original, i, message)),
                }
            }
            // Copy one UTF-8 character.
            let len = utf8_len(c);
            text.push_str(&original[i..(i + len).min(original.len())]);
            i += len;
        }
        (
            Self {
                path: path.to_owned(),
                original,
                text,
                subs,
            },
            errors,
        )
    }

    /// Maps a byte offset in the substituted text to an offset in the original file.
    fn original_offset(&self, offset: usize) -> usize {
        let mut delta: isize = 0;
        for s in &self.subs {
            if offset >= s.at + s.new_len {
                delta += s.old_len as isize - s.new_len as isize;
            } else if offset >= s.at {
                // Inside a replacement: point at the `${`.
                return (s.at as isize + delta).max(0) as usize;
            } else {
                break;
            }
        }
        (offset as isize + delta).max(0) as usize
    }

    /// A diagnostic at a byte offset of the substituted text.
    pub fn diag(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        self_diag(
            &self.path,
            &self.original,
            self.original_offset(offset),
            message.into(),
        )
    }

    /// A diagnostic at a byte range of the substituted text, underlining it (to the end of its
    /// first line).
    pub fn diag_range(
        &self,
        range: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = self.original_offset(range.start).min(self.original.len());
        let end = self
            .original_offset(range.end.max(range.start))
            .clamp(start, self.original.len());
        let mut d = self_diag(&self.path, &self.original, start, message.into());
        let line_start = self.original[..start].rfind('\n').map_or(0, |p| p + 1);
        let line_end = self.original[start..]
            .find('\n')
            .map_or(self.original.len(), |p| start + p);
        let line_text = self.original[line_start..line_end].trim_end_matches('\r');
        let len = self.original[start..end.min(line_end).max(start)]
            .chars()
            .count();
        d.underline = Some(super::Underline {
            line_text: line_text.to_owned(),
            len: len.max(1),
        });
        d
    }

    /// Where the value of the TOML string at `span` (quotes included) starts, and whether its
    /// bytes are the value's bytes one for one (no escapes), so offsets into the value map
    /// straight onto the file.
    pub fn string_content(&self, span: &std::ops::Range<usize>, value: &str) -> (usize, bool) {
        let raw = self.text.get(span.clone()).unwrap_or_default();
        let (open, close) = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            let after = &raw[3..];
            let newline = if after.starts_with("\r\n") {
                2
            } else {
                usize::from(after.starts_with('\n'))
            };
            (3 + newline, 3)
        } else {
            (1, 1)
        };
        let start = span.start + open.min(raw.len());
        let inner = raw
            .get(open..raw.len().saturating_sub(close))
            .unwrap_or_default();
        (start, inner == value)
    }

    /// A diagnostic at the start of a span of the substituted text.
    pub fn diag_span(
        &self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        self.diag(span.map_or(0, |s| s.start), message)
    }
}

/// The value of `${inner}` (`NAME` or `NAME:-default`), or what is wrong with it.
fn substitution(inner: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let valid_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_name {
        return Err(format!(
            "`${{{inner}}}` is not a valid substitution (use ${{NAME}} or ${{NAME:-default}})"
        ));
    }
    match env(name) {
        Some(v) if !v.is_empty() || default.is_none() => Ok(v),
        _ => default.map(str::to_owned).ok_or_else(|| {
            format!(
                "environment variable `{name}` is not set (give a default with ${{{name}:-value}})"
            )
        }),
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn self_diag(path: &Path, original: &str, offset: usize, message: String) -> Diagnostic {
    let offset = offset.min(original.len());
    let before = &original[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let col = original[line_start..offset].chars().count() + 1;
    Diagnostic {
        path: path.to_owned(),
        line,
        col,
        message,
        underline: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "WORKERS" => Some("4".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_maps_positions_back() {
        let src =
            "a = ${WORKERS}\nb = \"${MISSING:-x}\" c\n# ${NOT_SUBSTITUTED}\nd = $${LITERAL}\n";
        let (t, errors) = JobText::new(Path::new("j.toml"), src.into(), &env);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            t.text,
            "a = 4\nb = \"x\" c\n# ${NOT_SUBSTITUTED}\nd = ${LITERAL}\n"
        );
        let c = t.text.find(" c").unwrap() + 1;
        let d = t.diag(c, "here");
        assert_eq!((d.line, d.col), (2, 21));
    }

    #[test]
    fn unset_variable_is_reported_at_its_position() {
        let (_, errors) = JobText::new(Path::new("j.toml"), "x = 1\ny = ${NOPE}\n".into(), &env);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].col), (2, 5));
        assert!(errors[0].message.contains("NOPE"));
    }

    #[test]
    fn diagnostics_name_the_key_they_are_at() {
        let text = "[sources.g]\nkind = \"generator\"\ncount = \"many\"\ncolour = 1\n\n\
                    [sinks.none]\nkind = \"blackhole\"\ninputs = [\"g\"]\n";
        let d = crate::job::Job::parse(Path::new("j.toml"), text.into(), &env).unwrap_err();
        let keys: Vec<(usize, Option<String>)> = d.0.iter().map(|d| (d.line, d.key())).collect();
        assert!(keys.contains(&(3, Some("sources.g.count".into()))), "{d}");
        assert!(keys.contains(&(4, Some("sources.g.colour".into()))), "{d}");
        let (_, errors) = JobText::new(Path::new("j.toml"), "y = ${NOPE}\n".into(), &env);
        assert_eq!(errors[0].key(), None, "{}", errors[0]);
    }

    #[test]
    fn empty_value_uses_default() {
        let (t, _) = JobText::new(Path::new("j"), "x = \"${EMPTY:-d}\"".into(), &env);
        assert_eq!(t.text, "x = \"d\"");
    }
}
