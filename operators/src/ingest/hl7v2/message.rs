//! HL7 v2.x message syntax: framing, delimiters from MSH, segments, fields, repetitions,
//! components, subcomponents and escape sequences.
//!
//! Nothing here panics on any input: every access is bounds-checked and a missing part reads as
//! empty, as HL7 itself treats it.

use std::borrow::Cow;

use thiserror::Error;

/// Why bytes are not an HL7 v2 message. Messages name positions, never values.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SyntaxError {
    /// Nothing but framing and whitespace.
    #[error("empty message")]
    Empty,
    /// The first segment is not MSH.
    #[error("MSH: the message does not start with an MSH segment")]
    NoMsh,
    /// MSH-1 / MSH-2 do not declare usable delimiters.
    #[error("MSH-2: encoding characters missing or invalid")]
    Delimiters,
}

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: char,
    /// Component separator, usually `^`.
    pub component: char,
    /// Repetition separator, usually `~`.
    pub repetition: char,
    /// Escape character, usually `\`.
    pub escape: Option<char>,
    /// Subcomponent separator, usually `&`.
    pub subcomponent: Option<char>,
}

/// One segment: its id and its fields, still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The segment id (`MSH`, `PID`, `ZPI`, ...).
    pub id: &'a str,
    /// `fields[n]` is SEG-n (for MSH, MSH-1 is the field separator and `fields[2]` is MSH-2).
    fields: Vec<&'a str>,
    /// Its position in the message (1-based), for reasons.
    pub index: usize,
}

/// A parsed message borrowing the decoded text.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The delimiters.
    pub delimiters: Delimiters,
    /// The segments, in order.
    pub segments: Vec<Segment<'a>>,
}

/// The text of a message: UTF-8 when the bytes are, else ISO 8859-1 (every byte one character),
/// with a UTF-8 byte order mark, MLLP framing (`0x0B` … `0x1C 0x0D`) and surrounding whitespace
/// removed.
#[must_use]
pub fn text(bytes: &[u8]) -> Cow<'_, str> {
    let mut b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    while let [first, rest @ ..] = b
        && (*first == 0x0B || first.is_ascii_whitespace())
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && (*last == 0x1C || last.is_ascii_whitespace())
    {
        b = rest;
    }
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(b.iter().map(|&c| char::from(c)).collect()),
    }
}

impl<'a> Message<'a> {
    /// Parses the text of one message (see [`text`]). Segments end at `\r`, `\n` or `\r\n`;
    /// empty lines are skipped.
    ///
    /// # Errors
    /// [`SyntaxError`] when the text is empty, does not start with MSH, or MSH-2 is unusable.
    pub fn parse(text: &'a str) -> Result<Self, SyntaxError> {
        let text = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{b}');
        if text.trim().is_empty() {
            return Err(SyntaxError::Empty);
        }
        if !text.starts_with("MSH") {
            return Err(SyntaxError::NoMsh);
        }
        let mut chars = text[3..].chars();
        let field = chars.next().ok_or(SyntaxError::Delimiters)?;
        let encoding: Vec<char> = chars.take_while(|c| *c != field).collect();
        if field.is_alphanumeric() || field.is_whitespace() || encoding.len() < 2 {
            return Err(SyntaxError::Delimiters);
        }
        let pick = |i: usize| {
            encoding
                .get(i)
                .copied()
                .filter(|c| !c.is_alphanumeric() && !c.is_whitespace() && *c != field)
        };
        let delimiters = Delimiters {
            field,
            component: pick(0).ok_or(SyntaxError::Delimiters)?,
            repetition: pick(1).ok_or(SyntaxError::Delimiters)?,
            escape: pick(2),
            subcomponent: pick(3),
        };
        let distinct = [
            Some(delimiters.component),
            Some(delimiters.repetition),
            delimiters.escape,
            delimiters.subcomponent,
        ];
        for (i, a) in distinct.iter().enumerate() {
            if a.is_some() && distinct[i + 1..].contains(a) {
                return Err(SyntaxError::Delimiters);
            }
        }

        let mut segments = Vec::new();
        for line in text.split(['\r', '\n']) {
            let line = line.trim_end_matches('\u{1c}');
            if line.trim().is_empty() {
                continue;
            }
            let mut fields: Vec<&str> = line.split(field).collect();
            let id = fields.first().copied().unwrap_or_default().trim();
            if id == "MSH" {
                // MSH-1 is the separator itself: shift so that fields[n] is MSH-n.
                fields.insert(1, "");
            }
            let index = segments.len() + 1;
            segments.push(Segment { id, fields, index });
        }
        Ok(Self {
            delimiters,
            segments,
        })
    }

    /// The first segment with `id`.
    #[must_use]
    pub fn segment(&self, id: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// A field's first repetition's component (1-based), decoded; `""` when absent.
    #[must_use]
    pub fn get(&self, seg: &Segment<'a>, field: usize, component: usize) -> Cow<'a, str> {
        let rep = self
            .repetitions(seg, field)
            .into_iter()
            .next()
            .unwrap_or("");
        self.decode(self.part(rep, component, 0))
    }

    /// The repetitions of a field, still encoded.
    #[must_use]
    pub fn repetitions(&self, seg: &Segment<'a>, field: usize) -> Vec<&'a str> {
        let raw = seg.field(field);
        if raw.is_empty() {
            return Vec::new();
        }
        if seg.id == "MSH" && field == 2 {
            return vec![raw];
        }
        raw.split(self.delimiters.repetition).collect()
    }

    /// Component `component` (1-based) of an encoded repetition, and within it subcomponent
    /// `sub` (1-based; 0: the whole component), still encoded.
    #[must_use]
    pub fn part(&self, repetition: &'a str, component: usize, sub: usize) -> &'a str {
        let c = repetition
            .split(self.delimiters.component)
            .nth(component.saturating_sub(1))
            .unwrap_or("");
        match (sub, self.delimiters.subcomponent) {
            (0, _) | (1, None) => c,
            (_, None) => "",
            (n, Some(s)) => c.split(s).nth(n - 1).unwrap_or(""),
        }
    }

    /// Decodes escape sequences: `\F\ \S\ \T\ \R\ \E\ \P\` (the delimiters), `\Xhh…\` (hex
    /// bytes), `\.br\` (line break); formatting (`\H\ \N\ \.sp\ …`) and character-set (`\C…\
    /// \M…\`) sequences are removed. A lone or unterminated escape character stays as it is.
    #[must_use]
    pub fn decode(&self, s: &'a str) -> Cow<'a, str> {
        let Some(esc) = self.delimiters.escape else {
            return Cow::Borrowed(s.trim());
        };
        if !s.contains(esc) {
            return Cow::Borrowed(s.trim());
        }
        let d = self.delimiters;
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find(esc) {
            out.push_str(&rest[..at]);
            let after = &rest[at + esc.len_utf8()..];
            let Some(end) = after.find(esc) else {
                out.push(esc);
                rest = after;
                continue;
            };
            let seq = &after[..end];
            match seq {
                "F" => out.push(d.field),
                "S" => out.push(d.component),
                "T" => out.extend(d.subcomponent),
                "R" => out.push(d.repetition),
                "E" => out.push(esc),
                "P" => out.push('#'),
                ".br" => out.push('\n'),
                _ if seq.starts_with('X') || seq.starts_with('x') => push_hex(&mut out, &seq[1..]),
                _ if seq.starts_with(['H', 'N', 'C', 'M', 'Z', '.']) => {}
                _ => {
                    // Not an escape sequence: keep the text and look again after the escape.
                    out.push(esc);
                    rest = after;
                    continue;
                }
            }
            rest = &after[end + esc.len_utf8()..];
        }
        out.push_str(rest);
        Cow::Owned(out.trim().to_owned())
    }
}

/// Appends the bytes of a `\X…\` sequence (pairs of hex digits), as UTF-8 when they are, else
/// one character per byte.
fn push_hex(out: &mut String, hex: &str) {
    let bytes: Vec<u8> = hex
        .as_bytes()
        .chunks(2)
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    match std::str::from_utf8(&bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.extend(bytes.iter().map(|&b| char::from(b))),
    }
}

impl<'a> Segment<'a> {
    /// Field `n` (SEG-n), still encoded; `""` when absent.
    #[must_use]
    pub fn field(&self, n: usize) -> &'a str {
        self.fields.get(n).copied().unwrap_or("")
    }

    /// The number of fields (the highest n with SEG-n present).
    #[must_use]
    pub fn len(&self) -> usize {
        self.fields.len().saturating_sub(1)
    }

    /// Whether the segment has no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
