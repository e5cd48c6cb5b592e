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
    with_cells(bytes, |cells| values(decoder, header, cells))
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

/// Splits one CSV row into cells and hands them to `f`.
fn with_cells<R>(
    bytes: &[u8],
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
