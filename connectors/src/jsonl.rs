//! JSON-lines files committed atomically: written as `<name>.inprogress`, then flushed, fsynced
//! and renamed to `<name>` (dead letters, the audit trail, domain events), and
//! [`write_row_json`], which renders a [`Row`] as one line of JSON.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use vitalflow_model::DeadLetter;
use vitalflow_model::row::{Row, Schema, Value, format_timestamp};

use crate::{SinkError, check_name, create_dir_durable, sync_dir};

/// A JSON-lines file being written.
#[derive(Debug)]
pub struct JsonlFile {
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    lines: u64,
    bytes: u64,
    line: Vec<u8>,
}

impl JsonlFile {
    /// Creates `<dir>/<name>.inprogress` (creating `dir`, and truncating a leftover file of an
    /// earlier attempt). With `private = true` the directory is created or chmod-ed `0700` and
    /// the file `0600`: dead letters hold raw PHI.
    ///
    /// # Errors
    /// [`SinkError`] when `name` is not a plain file name, or on I/O errors.
    pub fn create(dir: &Path, name: &str, private: bool) -> Result<Self, SinkError> {
        check_name(name)?;
        create_dir_durable(dir)?;
        let tmp = dir.join(format!("{name}.inprogress"));
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::fs::Permissions;
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            fs::set_permissions(dir, Permissions::from_mode(0o700))
                .map_err(SinkError::io("chmod", dir))?;
            options.mode(0o600);
        }
        let file = options.open(&tmp).map_err(SinkError::io("create", &tmp))?;
        #[cfg(unix)]
        if private {
            // `mode` only applies to new files: tighten a leftover one too.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(SinkError::io("chmod", &tmp))?;
        }
        #[cfg(not(unix))]
        let _ = private;
        Ok(Self {
            dir: dir.to_path_buf(),
            path: dir.join(name),
            tmp,
            out: BufWriter::new(file),
            lines: 0,
            bytes: 0,
            line: Vec::new(),
        })
    }

    /// Appends `value` as one line of JSON. A value that fails to serialize writes nothing.
    ///
    /// # Errors
    /// [`SinkError`] when `value` cannot be serialized or on I/O errors.
    pub fn write_line<T: Serialize>(&mut self, value: &T) -> Result<(), SinkError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|source| SinkError::Json {
            path: self.tmp.clone(),
            source,
        })?;
        self.line.push(b'\n');
        self.out
            .write_all(&self.line)
            .map_err(SinkError::io("write", &self.tmp))?;
        self.lines += 1;
        self.bytes += self.line.len() as u64;
        Ok(())
    }

    /// Appends `line`, which must be one line of JSON without a line break (such as
    /// [`write_row_json`] renders), and a `\n`.
    ///
    /// # Errors
    /// [`SinkError`] on I/O errors.
    pub fn write_raw_line(&mut self, line: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(SinkError::io("write", &self.tmp))?;
        self.lines += 1;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Lines written so far.
    #[must_use]
    pub const fn lines(&self) -> u64 {
        self.lines
    }

    /// Bytes written so far, line breaks included: the size the file has once committed.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The final path the file gets on [`commit`](Self::commit).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes, fsyncs and renames the file to `<dir>/<name>`; returns the final path.
    ///
    /// # Errors
    /// [`SinkError`] on I/O errors (the `.inprogress` file is then left in place).
    pub fn commit(self) -> Result<PathBuf, SinkError> {
        let Self {
            dir,
            tmp,
            path,
            out,
            ..
        } = self;
        let file = out.into_inner().map_err(|e| SinkError::Io {
            op: "write",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(SinkError::io("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(SinkError::io("rename", &tmp))?;
        sync_dir(&dir)?;
        Ok(path)
    }
}

/// The JSON written for a dead letter: `{stage, source, location, format, reason, raw}`, where
/// `raw` is the bytes as a string when they are valid UTF-8; otherwise `rawBase64` holds them
/// in standard base64.
#[must_use]
pub fn dead_letter_json(d: &DeadLetter) -> serde_json::Value {
    let mut v = serde_json::json!({
        "stage": d.stage,
        "source": d.source,
        "location": d.location,
        "format": d.format.as_str(),
        "reason": d.reason,
    });
    if let serde_json::Value::Object(map) = &mut v {
        match std::str::from_utf8(&d.bytes) {
            Ok(s) => map.insert("raw".to_owned(), s.into()),
            Err(_) => map.insert("rawBase64".to_owned(), STANDARD.encode(&d.bytes).into()),
        };
    }
    v
}

/// Appends `row` as a JSON object to `out`: the schema's field names in schema order, with the
/// values as [`Value::to_json`] renders them (timestamps as RFC 3339 UTC text with milliseconds,
/// non-finite floats as `null`), written directly, without building a `serde_json::Value`.
///
/// The text is byte for byte what `serde_json` writes for [`Schema::to_json`] when its maps keep
/// insertion order (its `preserve_order` feature); without that feature `serde_json` sorts the
/// keys, and only the key order differs. Like [`Schema::to_json`], a row with fewer values than
/// fields gets only the fields it has values for. No line break is written: JSON text holds none
/// outside strings, where they are escaped.
pub fn write_row_json(schema: &Schema, row: &Row, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (field, value)) in schema.fields.iter().zip(&row.values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json(out, field.name.as_str());
        out.push(b':');
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => push_json(out, i),
            // serde_json writes a non-finite float as `null`, like `Value::to_json`.
            Value::Float(f) => push_json(out, f),
            Value::Str(s) => push_json(out, &**s),
            Value::Timestamp(ms) => push_timestamp(out, *ms),
        }
    }
    out.push(b'}');
}

/// Appends a string or number as serde_json writes it (escaping strings).
fn push_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string or a number into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The first and last millisecond [`push_timestamp`] formats itself (years 0000 to 9999).
const FAST_TIMESTAMPS: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// Appends a timestamp as a JSON string, exactly as [`format_timestamp`] renders it.
fn push_timestamp(out: &mut Vec<u8>, ms: i64) {
    if !FAST_TIMESTAMPS.contains(&ms) {
        push_json(out, format_timestamp(ms).as_str());
        return;
    }
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"\"0000-00-00T00:00:00.000Z\"";
    for (end, mut n) in [
        (5, year),
        (8, month),
        (11, day),
        (14, ms_of_day / 3_600_000),
        (17, ms_of_day / 60_000 % 60),
        (20, ms_of_day / 1000 % 60),
        (24, ms_of_day % 1000),
    ] {
        // Fill the digits of the field ending before `end`, from the right, up to its separator.
        for b in text.iter_mut().take(end).skip(1).rev() {
            if !b.is_ascii_digit() {
                break;
            }
            // `n % 10` is a digit: the cast is exact.
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    out.extend_from_slice(&text);
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}
