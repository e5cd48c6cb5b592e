//! The free-text scrubber: replaces what looks like an identifier, and the record's own
//! identifying values, by a bracketed class name (`[EMAIL]`, `[PHONE]`, `[NAME]`, ...).
//!
//! Pattern detectors cannot find every identifier (a name that is not in the record and not
//! after a title, an unusual date spelling, a number written out in words): dropping free text,
//! the default, is the only complete treatment. See `docs/deidentification.md`.

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

/// The detectors, in the order they run: the most specific first.
static DETECTORS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]"),
        (r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>]+", "[URL]"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}\b", "[IP]"),
        (
            r"(?i)\b(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4})\b",
            "[IP]",
        ),
        (r"\b\d{3}-\d{2}-\d{4}\b", "[SSN]"),
        (
            r"(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b",
            "[PHONE]",
        ),
        (
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
            "[DATE]",
        ),
        (r"\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b", "[DATE]"),
        (
            r"(?i)\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b",
            "[DATE]",
        ),
        (
            r"(?i)\b\d{1,2}(?:st|nd|rd|th)?\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?,?\s+\d{4}\b",
            "[DATE]",
        ),
        (
            r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sr|Sra)\.?\s+[A-Z][A-Za-z'-]+(?:\s+[A-Z]\b\.?)?(?:\s+[A-Z][A-Za-z'-]+)?",
            "[NAME]",
        ),
    ]
    .into_iter()
    .filter_map(|(pattern, label)| Regex::new(pattern).ok().map(|r| (r, label)))
    .collect()
});

/// Words of 5 or more letters, digits and dashes: replaced when they hold 3 digits or more
/// (record numbers, serials, ZIP codes, long numbers).
static NUMBERS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\b[A-Za-z0-9][A-Za-z0-9-]{4,}\b").ok());

/// Scrubs `text`: the record's own identifying values (`known`, matched case-insensitively) first, then the detectors, then number-like words. Returns the text and how many
/// spans were replaced.
#[must_use]
pub fn scrub(text: &str, known: &[String]) -> (String, u64) {
    let mut out = text.to_owned();
    let mut replaced = 0u64;
    let mut values: Vec<&str> = known
        .iter()
        .map(|k| k.trim())
        .filter(|k| k.chars().count() >= 2)
        .collect();
    // Longest first, so that a whole value wins over a value it contains.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    if !values.is_empty() {
        let alternation = values
            .iter()
            .map(|v| regex::escape(v))
            .collect::<Vec<_>>()
            .join("|");
        if let Ok(re) = RegexBuilder::new(&alternation)
            .case_insensitive(true)
            .build()
        {
            replaced += count_replace(&mut out, &re, "[REDACTED]");
        }
    }
    for (re, label) in DETECTORS.iter() {
        replaced += count_replace(&mut out, re, label);
    }
    if let Some(re) = NUMBERS.as_ref() {
        let mut n = 0u64;
        let next = re.replace_all(&out, |c: &regex::Captures<'_>| {
            let word = &c[0];
            if word.bytes().filter(u8::is_ascii_digit).count() >= 3 && !word.starts_with('[') {
                n += 1;
                "[ID]".to_owned()
            } else {
                word.to_owned()
            }
        });
        out = next.into_owned();
        replaced += n;
    }
    (out, replaced)
}

fn count_replace(text: &mut String, re: &Regex, label: &str) -> u64 {
    let n = re.find_iter(text).count();
    if n > 0 {
        *text = re.replace_all(text, label).into_owned();
    }
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn detectors_and_known_values() {
        let (text, n) = scrub(
            "Seen by Dr. Ada Lovelace on 03/12/2026 and 2026-03-12T10:00Z; call (555) 555-0142 or \
             555.555.0143, write ada@example.org, see https://x.example/p?a=1 from 10.1.2.3 or \
             fe80::1:2:3; SSN 123-45-6789, MRN A1234567, ZIP 02139; March 4, 2026. Rob Roy came.",
            &["Rob Roy".to_owned(), "x".to_owned()],
        );
        assert_eq!(
            text,
            "Seen by [NAME] on [DATE] and [DATE]; call [PHONE] or [PHONE], write [EMAIL], see \
             [URL] from [IP] or [IP]; SSN [SSN], MRN [ID], ZIP [ID]; [DATE]. [REDACTED] came."
        );
        assert_eq!(n, 14);
        // Clinical text without identifiers is left alone.
        let (text, n) = scrub("BP 120/80 after 2 doses, pulse 72.", &[]);
        assert_eq!(
            (text.as_str(), n),
            ("BP 120/80 after 2 doses, pulse 72.", 0)
        );
    }
}
