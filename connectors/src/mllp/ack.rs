//! What the listener reads of a message (its MSH segment) and the acknowledgement it answers
//! with.
//!
//! The acknowledgement is an HL7 original-mode `ACK`: an MSH with the message's sending and
//! receiving application and facility swapped, its processing id and version, and `MSA` with the
//! acknowledgement code and the message's control id (MSH-10). `AE` and `AR` add an `ERR`
//! segment with an HL7 table 0357 code and a text naming the problem, never a value of the
//! message. The acknowledgement uses the message's own delimiters, so the fields it copies stay
//! as they were encoded.

use std::fmt;

/// HL7 table 0008: the acknowledgement codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// `AA`: accepted (and, here, durable).
    Accept,
    /// `AE`: an error on the receiver's side; the sender may send the message again.
    Error,
    /// `AR`: rejected; sending the same message again will not help.
    Reject,
}

impl Code {
    /// The code as written in MSA-1.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "AA",
            Self::Error => "AE",
            Self::Reject => "AR",
        }
    }
}

/// Why a message is not accepted. The texts name the problem and the field, never a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The message does not start with an MSH segment.
    NotHl7,
    /// MSH-1 or MSH-2 does not declare usable delimiters.
    Delimiters,
    /// MSH-10, the message control id, is empty.
    NoControlId,
    /// The message is longer than `max-message-size`.
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The message could not be made durable (the log failed, or the run is stopping).
    NotStored,
}

impl Problem {
    /// The acknowledgement code the problem gets: `AE` when sending again may work.
    #[must_use]
    pub const fn code(&self) -> Code {
        match self {
            Self::NotStored => Code::Error,
            _ => Code::Reject,
        }
    }

    /// The HL7 table 0357 error code and its name.
    #[must_use]
    pub const fn hl7_error(&self) -> (&'static str, &'static str) {
        match self {
            Self::NotHl7 => ("100", "Segment sequence error"),
            Self::Delimiters => ("102", "Data type error"),
            Self::NoControlId => ("101", "Required field missing"),
            Self::TooLarge { .. } | Self::NotStored => ("207", "Application internal error"),
        }
    }

    /// Where the problem is, as an ERR location (segment, sequence, field), if in a field.
    const fn location(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Delimiters => Some(("1", "2")),
            Self::NoControlId => Some(("1", "10")),
            _ => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHl7 => f.write_str("not an HL7 v2 message: it does not start with MSH"),
            Self::Delimiters => f.write_str("MSH-1/MSH-2: the delimiters are missing or invalid"),
            Self::NoControlId => f.write_str("MSH-10: the message control id is empty"),
            Self::TooLarge { len, max } => write!(
                f,
                "the message has {len} bytes, more than max-message-size ({max} bytes)"
            ),
            Self::NotStored => f.write_str("the message could not be stored: send it again later"),
        }
    }
}

/// The MSH segment of a message, its fields still encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// MSH-1, the field separator.
    field: u8,
    /// MSH-2, the encoding characters.
    encoding: Vec<u8>,
    /// `fields[n]` is MSH-n for n >= 3 (0 to 2 are empty).
    fields: Vec<Vec<u8>>,
}

/// The message's bytes without a UTF-8 byte order mark and leading whitespace.
fn trimmed(bytes: &[u8]) -> &[u8] {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

impl Header {
    /// Reads the MSH segment of a message: its delimiters and fields. A message without a
    /// control id is still read (its acknowledgement needs the rest), see [`Header::check`].
    ///
    /// # Errors
    /// [`Problem::NotHl7`] or [`Problem::Delimiters`].
    pub fn read(bytes: &[u8]) -> Result<Self, Problem> {
        let b = trimmed(bytes);
        let rest = b.strip_prefix(b"MSH").ok_or(Problem::NotHl7)?;
        let (&field, rest) = rest.split_first().ok_or(Problem::Delimiters)?;
        if !field.is_ascii_punctuation() {
            return Err(Problem::Delimiters);
        }
        let end = rest
            .iter()
            .position(|c| *c == b'\r' || *c == b'\n')
            .unwrap_or(rest.len());
        let segment = &rest[..end];
        let mut parts = segment.split(|c| *c == field);
        let encoding = parts.next().unwrap_or_default().to_vec();
        let distinct = encoding
            .iter()
            .enumerate()
            .all(|(i, c)| !encoding[..i].contains(c));
        if encoding.len() < 2
            || encoding.len() > 5
            || !distinct
            || encoding
                .iter()
                .any(|c| !c.is_ascii_punctuation() || *c == field)
        {
            return Err(Problem::Delimiters);
        }
        let mut fields = vec![Vec::new(); 3];
        fields.extend(parts.map(<[u8]>::to_vec));
        Ok(Self {
            field,
            encoding,
            fields,
        })
    }

    /// Reads a message's header and checks what the listener needs of it: a control id.
    ///
    /// # Errors
    /// What is wrong ([`Problem::NotHl7`], [`Problem::Delimiters`], [`Problem::NoControlId`]);
    /// the header, when it could be read, goes with it (for the acknowledgement).
    pub fn check(bytes: &[u8]) -> Result<Self, (Problem, Option<Self>)> {
        let header = Self::read(bytes).map_err(|p| (p, None))?;
        if header.get(10).iter().all(u8::is_ascii_whitespace) {
            return Err((Problem::NoControlId, Some(header)));
        }
        Ok(header)
    }

    /// MSH-n (n >= 3), still encoded; empty when absent.
    #[must_use]
    pub fn get(&self, n: usize) -> &[u8] {
        self.fields.get(n).map_or(&[], Vec::as_slice)
    }

    /// The first component of MSH-n.
    fn first_component(&self, n: usize) -> &[u8] {
        let component = self.encoding.first().copied().unwrap_or(b'^');
        self.get(n)
            .split(|c| *c == component)
            .next()
            .unwrap_or_default()
    }

    /// The version (MSH-12) as (major, minor), if it reads as one.
    fn version(&self) -> Option<(u32, u32)> {
        let v = std::str::from_utf8(self.first_component(12)).ok()?;
        let mut parts = v.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
        Some((major, minor))
    }

    /// The trigger event (MSH-9, second component), encoded.
    fn trigger(&self) -> &[u8] {
        let component = self.encoding.first().copied().unwrap_or(b'^');
        self.get(9)
            .split(|c| *c == component)
            .nth(1)
            .unwrap_or_default()
    }
}

/// What an acknowledgement says besides its code.
#[derive(Clone, Debug)]
pub struct Ack<'a> {
    /// The message's header, when it could be read.
    pub header: Option<&'a Header>,
    /// AA, AE or AR.
    pub code: Code,
    /// Why, for AE and AR.
    pub problem: Option<&'a Problem>,
    /// The acknowledgement's own control id.
    pub control_id: &'a str,
    /// Its time, `YYYYMMDDHHMMSS.sss+0000`.
    pub time: &'a str,
}

impl Ack<'_> {
    /// The acknowledgement, without MLLP framing; segments end with `\r`.
    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        let h = self.header;
        let field = h.map_or(b'|', |h| h.field);
        let encoding: &[u8] = h.map_or(b"^~\\&", |h| h.encoding.as_slice());
        let component = encoding.first().copied().unwrap_or(b'^');
        let sub = encoding.get(3).copied();
        let get = |n: usize| h.map_or(&[][..], |h| h.get(n));
        let version = h.and_then(Header::version);
        let mut out = Vec::with_capacity(256);
        let mut put = |fields: &[&[u8]]| {
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(field);
                }
                out.extend_from_slice(f);
            }
            out.push(b'\r');
        };
        // MSH-9: `ACK^<trigger>^ACK` from 2.4 on (the message structure), `ACK^<trigger>` before.
        let mut kind = b"ACK".to_vec();
        let trigger = h.map_or(&[][..], Header::trigger);
        if !trigger.is_empty() {
            kind.push(component);
            kind.extend_from_slice(trigger);
            if version.is_none_or(|v| v >= (2, 4)) {
                kind.push(component);
                kind.extend_from_slice(b"ACK");
            }
        }
        let processing = if get(11).is_empty() { b"P" } else { get(11) };
        let version_field = if get(12).is_empty() {
            b"2.5.1"
        } else {
            get(12)
        };
        put(&[
            b"MSH",
            encoding,
            get(5),
            get(6),
            get(3),
            get(4),
            self.time.as_bytes(),
            b"",
            &kind,
            self.control_id.as_bytes(),
            processing,
            version_field,
        ]);
        let text = self.problem.map(ToString::to_string).unwrap_or_default();
        let text = text.as_bytes();
        if text.is_empty() {
            put(&[b"MSA", self.code.as_str().as_bytes(), get(10)]);
        } else {
            put(&[b"MSA", self.code.as_str().as_bytes(), get(10), text]);
        }
        if let Some(p) = self.problem {
            let (code, name) = p.hl7_error();
            // The location, segment^sequence^field.
            let mut location = Vec::new();
            if let Some((seq, field_n)) = p.location() {
                for (i, part) in [&b"MSH"[..], seq.as_bytes(), field_n.as_bytes()]
                    .iter()
                    .enumerate()
                {
                    if i > 0 {
                        location.push(component);
                    }
                    location.extend_from_slice(part);
                }
            }
            if version.is_some_and(|v| v < (2, 5)) {
                // ERR-1 (ELD): segment^sequence^field^code&name&HL70357.
                let mut eld = location.clone();
                if eld.is_empty() {
                    eld.extend([component, component]);
                }
                eld.push(component);
                eld.extend_from_slice(code.as_bytes());
                if let Some(s) = sub {
                    eld.push(s);
                    eld.extend_from_slice(name.as_bytes());
                    eld.push(s);
                    eld.extend_from_slice(b"HL70357");
                }
                put(&[b"ERR", &eld]);
            } else {
                // ERR-2 location, ERR-3 code (CWE), ERR-4 severity, ERR-8 user message.
                let mut cwe = code.as_bytes().to_vec();
                for part in [name.as_bytes(), b"HL70357"] {
                    cwe.push(component);
                    cwe.extend_from_slice(part);
                }
                put(&[b"ERR", b"", &location, &cwe, b"E", b"", b"", b"", text]);
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ack(message: &[u8], code: Code, problem: Option<&Problem>) -> String {
        let header = Header::read(message).ok();
        let rendered = Ack {
            header: header.as_ref(),
            code,
            problem,
            control_id: "A1",
            time: "20260101120000.000+0000",
        }
        .render();
        String::from_utf8(rendered).unwrap()
    }

    const ADT: &[u8] = b"\xEF\xBB\xBFMSH|^~\\&|SEND|SFAC|RECV|RFAC|20260101||ADT^A01^ADT_A01|MSG-7|P|2.5.1\rPID|1||123\r";

    #[test]
    fn an_accept_swaps_sender_and_receiver_and_names_the_control_id() {
        assert_eq!(
            ack(ADT, Code::Accept, None),
            "MSH|^~\\&|RECV|RFAC|SEND|SFAC|20260101120000.000+0000||ACK^A01^ACK|A1|P|2.5.1\r\
             MSA|AA|MSG-7\r"
        );
        let h = Header::check(ADT).unwrap();
        assert_eq!(h.get(10), b"MSG-7");
    }

    #[test]
    fn a_reject_has_an_err_segment_in_the_version_s_form() {
        let no_id = b"MSH|^~\\&|S|SF|R|RF|2026||ORU^R01|| P|2.3\r";
        let (problem, header) = Header::check(no_id).unwrap_err();
        assert_eq!(problem, Problem::NoControlId);
        assert!(header.is_some());
        let text = ack(no_id, problem.code(), Some(&problem));
        assert_eq!(
            text,
            "MSH|^~\\&|R|RF|S|SF|20260101120000.000+0000||ACK^R01|A1| P|2.3\r\
             MSA|AR||MSH-10: the message control id is empty\r\
             ERR|MSH^1^10^101&Required field missing&HL70357\r"
        );
        let too_large = Problem::TooLarge { len: 10, max: 5 };
        let text = ack(ADT, too_large.code(), Some(&too_large));
        assert!(
            text.contains("\rMSA|AR|MSG-7|the message has 10 bytes"),
            "{text}"
        );
        assert!(
            text.ends_with("ERR|||207^Application internal error^HL70357|E||||the message has 10 bytes, more than max-message-size (5 bytes)\r"),
            "{text}"
        );
    }

    #[test]
    fn what_is_not_hl7_gets_a_default_header_and_no_control_id() {
        for (bytes, want) in [
            (&b"hello"[..], Problem::NotHl7),
            (b"", Problem::NotHl7),
            (b"MSH", Problem::Delimiters),
            (b"MSHA^~\\&|", Problem::Delimiters),
            (b"MSH|^|", Problem::Delimiters),
            (b"MSH|^^\\&|", Problem::Delimiters),
        ] {
            assert_eq!(Header::check(bytes).unwrap_err().0, want, "{bytes:?}");
        }
        let text = ack(b"hello", Code::Reject, Some(&Problem::NotHl7));
        assert!(
            text.starts_with("MSH|^~\\&|||||20260101120000.000+0000||ACK|A1|P|2.5.1\rMSA|AR||"),
            "{text}"
        );
        assert!(
            text.ends_with("ERR|||100^Segment sequence error^HL70357|E||||not an HL7 v2 message: it does not start with MSH\r"),
            "{text}"
        );
    }

    #[test]
    fn other_delimiters_are_kept_in_the_acknowledgement() {
        let m = b"MSH#*~\\%#S#F#R#G#2026##ORU*R01#X1#P#2.6\r";
        let text = ack(m, Code::Accept, None);
        assert_eq!(
            text,
            "MSH#*~\\%#R#G#S#F#20260101120000.000+0000##ACK*R01*ACK#A1#P#2.6\rMSA#AA#X1\r"
        );
    }
}
