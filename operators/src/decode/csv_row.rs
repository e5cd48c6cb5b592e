//! One CSV row to row values.
//!
//! A row without quotes or line breaks is split on commas directly; any other row is split by
//! the `csv` crate (RFC 4180 quoting, a quoted field may hold commas, quotes and line breaks).

use vitalflow_model::row::Value;

use super::scalar::from_text;
use super::{DecodeError, Decoder};

/// Decodes one CSV row into one value per declared field.
pub(super) fn decode(
    decoder: &Decoder,
    header: Option<&[String]>,
    bytes: &[u8],
) -> Result<Vec<Value>, DecodeError> {
    with_cells(bytes, header, |cells| values(decoder, header, cells))
}

/// The values of the declared fields from the row's cells.
fn values(
    decoder: &Decoder,
    header: Option<&[String]>,
    cells: &[&[u8]],
) -> Result<Vec<Value>, DecodeError> {
    let width = header.map_or(decoder.fields.len(), <[String]>::len);
    if cells.len() > width {
        let what = if header.is_some() {
            "columns in the header"
        } else {
            "declared fields"
        };
        return Err(DecodeError::record(format!(
            "the CSV row has {} cells, more than the {width} {what}",
            cells.len()
        )));
    }
    let mut values = Vec::with_capacity(decoder.fields.len());
    for (i, spec) in decoder.fields.iter().enumerate() {
        let column = match header {
            None => i,
            Some(h) => {
                let name = spec.column_name();
                h.iter().position(|c| c == name).ok_or_else(|| {
                    DecodeError::field(spec, format!("no column `{name}` in the CSV header"))
                })?
            }
        };
        let Some(cell) = cells.get(column) else {
            return Err(DecodeError::field(
                spec,
                format!(
                    "is missing: the CSV row has {} cells, fewer than the {width} expected",
                    cells.len()
                ),
            ));
        };
        values.push(if cell.is_empty() {
            Value::Null
        } else {
            from_text(spec, cell)?
        });
    }
    if cells.len() < width {
        return Err(DecodeError::record(format!(
            "the CSV row has {} cells, fewer than the {width} expected",
            cells.len()
        )));
    }
    Ok(values)
}

/// Where the quoted field still open at the end of `row` opened, if one is: its column (0-based)
/// and the row's line (1-based). RFC 4180, leniently: a quote opens a quoted field only at the
/// start of a field, as sources split rows.
pub(crate) fn open_quote(row: &[u8]) -> Option<(usize, usize)> {
    let (mut column, mut line, mut quoted, mut at_start) = (0, 1, false, true);
    let mut opened_on = 1;
    let mut bytes = row.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b == b'\n' {
            line += 1;
        }
        if quoted {
            if b == b'"' && bytes.next_if_eq(&b'"').is_none() {
                quoted = false;
            }
            continue;
        }
        match b {
            b'"' if at_start => (quoted, opened_on) = (true, line),
            b',' => {
                column += 1;
                at_start = true;
                continue;
            }
            _ => {}
        }
        at_start = false;
    }
    quoted.then_some((column, opened_on))
}

/// The reason for a row whose quoted field never closes, naming its column (and the column's
/// header name, which is not patient data) and the line where it opened.
pub(crate) fn open_quote_reason(
    (column, line): (usize, usize),
    header: Option<&[String]>,
) -> String {
    let name = header
        .and_then(|h| h.get(column))
        .map(|n| format!(" (`{}`)", n.trim()))
        .unwrap_or_default();
    let line = if line == 1 {
        "the record's first line".to_owned()
    } else {
        format!("line {line} of the record")
    };
    format!(
        "unterminated quote: the quoted field of column {}{name}, opened on {line}, is never \
         closed",
        column + 1
    )
}

/// Splits one CSV row into cells and hands them to `f`.
fn with_cells<R>(
    bytes: &[u8],
    header: Option<&[String]>,
    f: impl FnOnce(&[&[u8]]) -> Result<R, DecodeError>,
) -> Result<R, DecodeError> {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(DecodeError::record("the CSV row is empty"));
    }
    if !line.iter().any(|&b| matches!(b, b'"' | b'\n' | b'\r')) {
        let cells: Vec<&[u8]> = line.split(|&b| b == b',').collect();
        return f(&cells);
    }
    if let Some(open) = open_quote(line) {
        return Err(DecodeError::record(open_quote_reason(open, header)));
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(bytes.len().saturating_add(1))
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(DecodeError::record("the CSV row is empty")),
        Err(e) => {
            return Err(DecodeError::record(match e.position() {
                Some(p) => format!("invalid CSV at line {}", p.line()),
                None => "invalid CSV".to_owned(),
            }));
        }
    }
    if !matches!(
        reader.read_byte_record(&mut csv::ByteRecord::new()),
        Ok(false)
    ) {
        return Err(DecodeError::record(
            "the record holds more than one CSV row",
        ));
    }
    let cells: Vec<&[u8]> = record.iter().collect();
    f(&cells)
}
