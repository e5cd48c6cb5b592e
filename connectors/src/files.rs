//! Reads input files into [`RawRecord`]s.
//!
//! Sources only split files into records; parsing (and dead-lettering what does not parse) is
//! ingestion's job. So a line that is not valid UTF-8, or a CSV row with the wrong number of
//! fields, is still emitted: only I/O errors are errors.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use thiserror::Error;
use vitalflow_model::{RawFormat, RawRecord};

/// The UTF-8 byte order mark, dropped at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The format of the files of a [`FileSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Platform event envelopes, one JSON object a line (`.ndjson`, `.jsonl`, `.json`).
    Envelope,
    /// FHIR R4 JSON: a Bundle or a resource per `.json` file, or one resource a line in
    /// `.ndjson` / `.jsonl` files.
    Fhir,
    /// Vital-sign numerics as CSV (`.csv`) with a header row; every file holds the readings of
    /// one patient.
    VitalsCsv {
        /// The source patient id of the readings.
        patient_id: String,
    },
    /// HL7 v2 messages in `.hl7` files: one per file, several (batch files), or MLLP frames.
    Hl7v2,
    /// JSON records of a declared schema: one a line in `.ndjson` / `.jsonl` files, one document
    /// per `.json` file (or one a line, if the file is lines of documents).
    Json,
    /// CSV records of a declared schema (`.csv`).
    Csv {
        /// Whether the first row names the columns (otherwise columns are in declared order).
        header: bool,
    },
}

impl FileFormat {
    /// How ingestion must parse the records.
    #[must_use]
    pub const fn raw_format(&self) -> RawFormat {
        match self {
            Self::Envelope => RawFormat::Envelope,
            Self::Fhir => RawFormat::Fhir,
            Self::VitalsCsv { .. } => RawFormat::VitalsCsv,
            Self::Hl7v2 => RawFormat::Hl7v2,
            Self::Json => RawFormat::Json,
            Self::Csv { .. } => RawFormat::Csv,
        }
    }

    /// The file extensions (lower case, without the dot) a directory scan picks up.
    #[must_use]
    pub const fn extensions(&self) -> &'static [&'static str] {
        match self {
            Self::Envelope | Self::Fhir | Self::Json => &["ndjson", "jsonl", "json"],
            Self::VitalsCsv { .. } | Self::Csv { .. } => &["csv"],
            Self::Hl7v2 => &["hl7"],
        }
    }
}

/// An I/O error reading a source. Messages name the path (paths hold no PHI), never the data.
#[derive(Debug, Error)]
pub enum FileError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `list directory`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which records of a file source one of several readers makes, when a file source is read by
/// every worker: reader `reader` of `readers` makes the records whose sequence `i` has
/// `i % readers == reader`, and counts the files whose place `f` in the reading order has
/// `f % readers == reader`. Every reader goes through every file with the format's own
/// splitter, so each knows every record's sequence (and a CSV file's header) exactly; it only
/// skips making (copying, re-serializing, locating) the records of the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This reader, from 0.
    pub reader: u64,
    /// The readers (0 is taken as 1).
    pub readers: u64,
}

impl Share {
    /// One reader making every record.
    pub const WHOLE: Self = Self {
        reader: 0,
        readers: 1,
    };

    /// Whether this reader makes the record numbered `sequence`.
    #[must_use]
    pub const fn takes(self, sequence: u64) -> bool {
        sequence % max1(self.readers) == self.reader
    }

    /// Whether this reader counts the file at place `index` of the reading order.
    #[must_use]
    pub const fn counts_file(self, index: u64) -> bool {
        index % max1(self.readers) == self.reader
    }
}

const fn max1(n: u64) -> u64 {
    if n == 0 { 1 } else { n }
}

/// A file source: a file, or the files of a directory, in one format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSource {
    /// Name of the source node in the job file.
    pub name: String,
    /// A file, or a directory whose files are read (not recursively), sorted by name. Only
    /// regular files with an extension of the format are read; `LICENSE*`, `README*` and
    /// dotfiles are ignored.
    pub path: PathBuf,
    /// The format of the files.
    pub format: FileFormat,
}

impl FileSource {
    /// The files to read, in reading order.
    ///
    /// # Errors
    /// [`FileError`] when `path` or a directory entry cannot be read.
    pub fn files(&self) -> Result<Vec<PathBuf>, FileError> {
        let meta = fs::metadata(&self.path).map_err(io_err("read", &self.path))?;
        if !meta.is_dir() {
            return Ok(vec![self.path.clone()]);
        }
        let mut files = Vec::new();
        let entries = fs::read_dir(&self.path).map_err(io_err("list directory", &self.path))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list directory", &self.path))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.starts_with("LICENSE") || name.starts_with("README") {
                continue;
            }
            let ext = Path::new(&*name)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            if !ext.is_some_and(|e| self.format.extensions().contains(&e.as_str())) {
                continue;
            }
            let path = entry.path();
            // Follows symbolic links: a link to a regular file is read.
            if fs::metadata(&path)
                .map_err(io_err("read", &path))?
                .is_file()
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads every record, calling `emit` for each in a deterministic order with a dense
    /// `sequence` starting at 0, and returns the number of records.
    ///
    /// Locations are `path:line` (the 1-based line where the record starts). Blank lines are
    /// skipped. Envelope and FHIR `.ndjson`/`.jsonl` files give a record a line; a FHIR or
    /// envelope `.json` file is one record, unless it is not one JSON document but lines of
    /// them. A CSV data row gives a record with the header's column names and the patient id as
    /// context, its bytes the row re-serialized as one CSV line; a row whose quote never closes
    /// is the line of the quote as it stands. An HL7 v2 message is one record.
    ///
    /// # Errors
    /// [`FileError`] on I/O errors only.
    pub fn read(&self, mut emit: impl FnMut(RawRecord)) -> Result<u64, FileError> {
        self.read_counting(
            |_, _| {},
            |record| {
                emit(record);
                ControlFlow::Continue(())
            },
        )
    }

    /// [`read`](Self::read), calling `file_read` with each file's path and number of records
    /// once the file is read: every file is counted, empty ones (no record) too. `emit` answers
    /// `Break` to stop reading: that record is not taken and nothing more is read (the file
    /// being read is counted with the records taken from it); the records taken are returned.
    ///
    /// # Errors
    /// [`FileError`] on I/O errors only.
    pub fn read_counting(
        &self,
        file_read: impl FnMut(&Path, u64),
        emit: impl FnMut(RawRecord) -> ControlFlow<()>,
    ) -> Result<u64, FileError> {
        self.read_share(&self.files()?, Share::WHOLE, file_read, emit)
    }

    /// [`read_counting`](Self::read_counting) of `files` (the source's [`files`](Self::files),
    /// listed once for all readers) by one reader of several: `emit` is called with the records
    /// `share` takes only, numbered as if one reader read them all, and `file_read` for the
    /// files it counts only (with their number of records, or those before a stop). Returns
    /// the records taken.
    ///
    /// # Errors
    /// [`FileError`] on I/O errors only.
    pub fn read_share(
        &self,
        files: &[PathBuf],
        share: Share,
        mut file_read: impl FnMut(&Path, u64),
        emit: impl FnMut(RawRecord) -> ControlFlow<()>,
    ) -> Result<u64, FileError> {
        let mut out = Emitter {
            source: &self.name,
            format: self.format.raw_format(),
            sequence: 0,
            share,
            taken: 0,
            stopped: false,
            emit,
        };
        for (index, path) in (0u64..).zip(files) {
            let before = out.sequence;
            let is_json = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            match &self.format {
                FileFormat::Envelope | FileFormat::Fhir | FileFormat::Json if is_json => {
                    read_json(path, &mut out)?;
                }
                FileFormat::Envelope | FileFormat::Fhir | FileFormat::Json => {
                    read_lines(path, &mut out)?;
                }
                FileFormat::VitalsCsv { patient_id } => {
                    read_csv(path, true, Some(patient_id), &mut out)?;
                }
                FileFormat::Csv { header } => read_csv(path, *header, None, &mut out)?,
                FileFormat::Hl7v2 => read_hl7(path, &mut out)?,
            }
            if share.counts_file(index) {
                file_read(path, out.sequence - before);
            }
            if out.stopped {
                break;
            }
        }
        Ok(out.taken)
    }
}

/// Numbers records, and makes and emits those of its share.
struct Emitter<'a, F> {
    source: &'a str,
    format: RawFormat,
    /// The next record's number, over every reader's records.
    sequence: u64,
    /// The records this reader makes.
    share: Share,
    /// Records made and taken.
    taken: u64,
    /// `emit` answered `Break`: nothing more is read.
    stopped: bool,
    emit: F,
}

impl<F: FnMut(RawRecord) -> ControlFlow<()>> Emitter<'_, F> {
    /// Numbers the next record and, when it is this reader's, makes it (its bytes from
    /// `bytes`) and emits it; `Break` (and nothing is taken) once `emit` wants no more.
    fn push(
        &mut self,
        path: &Path,
        line: u64,
        bytes: impl FnOnce() -> Vec<u8>,
        header: Option<&[String]>,
        context: Option<&str>,
    ) -> ControlFlow<()> {
        if self.stopped {
            return ControlFlow::Break(());
        }
        if !self.share.takes(self.sequence) {
            self.sequence += 1;
            return ControlFlow::Continue(());
        }
        let flow = (self.emit)(RawRecord {
            source: self.source.to_owned(),
            location: format!("{}:{line}", path.display()),
            sequence: self.sequence,
            format: self.format,
            header: header.map(<[String]>::to_vec),
            context: context.map(str::to_owned),
            bytes: bytes(),
            arrival_us: 0,
        });
        if flow.is_break() {
            self.stopped = true;
        } else {
            self.sequence += 1;
            self.taken += 1;
        }
        flow
    }
}

fn open(path: &Path) -> Result<BufReader<File>, FileError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(io_err("open", path))
}

/// Strips a line terminator (`\n` or `\r\n`) and, on the first line, a byte order mark.
fn strip_line(mut line: &[u8], first: bool) -> &[u8] {
    if first {
        line = line.strip_prefix(BOM).unwrap_or(line);
    }
    line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// One record per non-blank line.
fn read_lines<F: FnMut(RawRecord) -> ControlFlow<()>>(
    path: &Path,
    out: &mut Emitter<'_, F>,
) -> Result<(), FileError> {
    let mut reader = open(path)?;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?
            == 0
        {
            return Ok(());
        }
        line_no += 1;
        let line = strip_line(&buf, line_no == 1);
        if !line.trim_ascii().is_empty()
            && out
                .push(path, line_no, || line.to_vec(), None, None)
                .is_break()
        {
            return Ok(());
        }
    }
}

fn read_all(path: &Path) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.starts_with(BOM) {
        bytes.drain(..BOM.len());
    }
    Ok(bytes)
}

/// The 1-based line of the first non-whitespace byte.
fn first_line(bytes: &[u8]) -> u64 {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    1 + bytes[..start].iter().filter(|&&b| b == b'\n').count() as u64
}

/// An HL7 v2 file: one record per message. Messages are MLLP frames (`0x0B` … `0x1C 0x0D`)
/// when the file has any, else each starts at an `MSH` segment (batch files: the `FHS`, `BHS`,
/// `BTS` and `FTS` segments are left out), at the start of a line or glued to the end of the
/// segment before (files joined end to end, one without its final terminator). Segments may end
/// with `\r`, `\n` or `\r\n`; a message keeps its last segment's terminator, and a frame
/// without its end block keeps its start block and ends where the next frame starts: ingestion
/// takes either absence as a sign of a message cut short.
fn read_hl7<F: FnMut(RawRecord) -> ControlFlow<()>>(
    path: &Path,
    out: &mut Emitter<'_, F>,
) -> Result<(), FileError> {
    let bytes = read_all(path)?;
    for (line, message) in hl7_messages(&bytes) {
        if out
            .push(path, line, || message.to_vec(), None, None)
            .is_break()
        {
            break;
        }
    }
    Ok(())
}

/// The messages of an HL7 v2 file, with the line each starts on (see [`read_hl7`]).
#[must_use]
pub fn hl7_messages(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    // Line numbers of increasing offsets, counted once over the file (batch files can be large).
    let (mut counted, mut line) = (0usize, 1u64);
    let mut line_of = |at: usize| {
        for i in counted..at {
            let b = bytes[i];
            if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                line += 1;
            }
        }
        counted = counted.max(at);
        line
    };
    let mut out = Vec::new();
    if bytes.contains(&0x0B) {
        let mut rest = 0;
        while let Some(start) = bytes[rest..].iter().position(|&b| b == 0x0B) {
            let from = rest + start + 1;
            let stop = bytes[from..]
                .iter()
                .position(|&b| b == 0x1C || b == 0x0B)
                .map_or(bytes.len(), |p| from + p);
            let frame = &bytes[from..stop];
            if !frame.trim_ascii().is_empty() {
                if bytes.get(stop) == Some(&0x1C) {
                    out.push((line_of(from), frame));
                } else {
                    // No end block: the frame was cut short. Its start block stays, for
                    // ingestion to tell.
                    out.push((line_of(from), &bytes[from - 1..stop]));
                }
            }
            rest = stop;
        }
        return out;
    }
    let segment_at = |at: usize| {
        let s = &bytes[at..];
        s.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(s)
    };
    let mut begin: Option<usize> = None;
    let mut end = 0;
    // The field separator of the open message (MSH-1).
    let mut separator: Option<u8> = None;
    // Segments start at offset 0, after every line break, and where a message is glued to the
    // last segment of the one before (files joined end to end, one without its final segment
    // terminator).
    let mut at = 0;
    while at <= bytes.len() {
        let line_end = bytes[at..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(bytes.len(), |p| at + p);
        let segment = segment_at(at);
        match segment.get(..3).unwrap_or_default() {
            b"MSH" => {
                if let Some(b) = begin {
                    out.push((line_of(b), &bytes[b..end.max(b)]));
                }
                begin = Some(at);
                end = at;
                separator = segment.get(3).copied();
            }
            b"FHS" | b"BHS" | b"BTS" | b"FTS" => {
                if let Some(b) = begin.take() {
                    out.push((line_of(b), &bytes[b..end.max(b)]));
                }
                separator = None;
            }
            _ => {}
        }
        let segment_end = separator
            .and_then(|sep| glued_msh(bytes.get(at + 1..line_end)?, sep))
            .map_or(line_end, |p| at + 1 + p);
        if begin.is_some() && !bytes[at..segment_end].trim_ascii().is_empty() {
            // With its terminator: ingestion tells a message cut short by its absence.
            end = match (segment_end < line_end, &bytes[segment_end..]) {
                (true, _) | (false, []) => segment_end,
                (false, [b'\r', b'\n', ..]) => segment_end + 2,
                (false, _) => segment_end + 1,
            };
        }
        at = if segment_end < line_end {
            segment_end
        } else {
            line_end + 1
        };
    }
    if let Some(b) = begin {
        out.push((line_of(b), &bytes[b..end.max(b)]));
    }
    if out.is_empty() && !bytes.trim_ascii().is_empty() {
        // Not a message: ingestion dead-letters it with the reason.
        out.push((1, bytes));
    }
    out
}

/// The offset in `segment` of an MSH segment glued to it: `MSH`, the field separator `sep`, two
/// to five encoding characters, and `sep` again. Inside a field, `sep` would have been escaped,
/// so this is a message that follows a segment without its terminator.
fn glued_msh(segment: &[u8], sep: u8) -> Option<usize> {
    let encoding = |b: &u8| *b != sep && !b.is_ascii_alphanumeric() && !b.is_ascii_whitespace();
    (0..segment.len()).find(|&i| {
        let s = &segment[i..];
        if !s.starts_with(b"MSH") || s.get(3) != Some(&sep) {
            return false;
        }
        let n = s[4..].iter().take_while(|b| encoding(b)).count();
        (2..=5).contains(&n) && s.get(4 + n) == Some(&sep)
    })
}

/// A `.json` file: one JSON document (a Bundle, a resource, an envelope), or, if the file is not
/// one document but every non-blank line is, one record a line.
fn read_json<F: FnMut(RawRecord) -> ControlFlow<()>>(
    path: &Path,
    out: &mut Emitter<'_, F>,
) -> Result<(), FileError> {
    let bytes = read_all(path)?;
    if bytes.trim_ascii().is_empty() {
        return Ok(());
    }
    let one_document = serde_json::from_slice::<IgnoredAny>(&bytes).is_ok();
    let lines: Vec<(u64, &[u8])> = (1u64..)
        .zip(bytes.split(|&b| b == b'\n'))
        .map(|(n, l)| (n, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .collect();
    let json_lines = !one_document
        && lines.len() > 1
        && lines
            .iter()
            .all(|(_, l)| serde_json::from_slice::<IgnoredAny>(l).is_ok());
    if json_lines {
        for (n, l) in lines {
            if out.push(path, n, || l.to_vec(), None, None).is_break() {
                break;
            }
        }
    } else {
        let line = first_line(&bytes);
        let _ = out.push(path, line, || bytes, None, None);
    }
    Ok(())
}

/// A quoted CSV field may span at most this many lines...
const QUOTED_LINES: usize = 100;
/// ...and this many bytes. Past either, its opening quote is taken as never closed.
const QUOTED_BYTES: usize = 1 << 20;

/// One record per CSV data row; with `has_header`, the first non-blank row is the header. A
/// quoted field may span lines (at most [`QUOTED_LINES`] and [`QUOTED_BYTES`]); the record's
/// location is the line where it starts. A quote that does not close within those bounds, or by
/// the end of the file, gives a record of the line where it opened, as it stands (ingestion
/// dead-letters it, naming the quote), and reading resumes at the next line.
fn read_csv<F: FnMut(RawRecord) -> ControlFlow<()>>(
    path: &Path,
    has_header: bool,
    context: Option<&str>,
    out: &mut Emitter<'_, F>,
) -> Result<(), FileError> {
    let mut reader = open(path)?;
    let mut header: Option<Vec<String>> = None;
    let mut header_read = !has_header;
    // Lines read ahead inside a quote that did not close, to be read again.
    let mut again: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    // The lines of the record being read (more than one while a quoted field is open).
    let mut lines: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut record = Vec::new();
    let mut line_no = 0u64;
    loop {
        let next = match again.pop_front() {
            Some(line) => Some(line),
            None => {
                let mut line = Vec::new();
                let n = reader
                    .read_until(b'\n', &mut line)
                    .map_err(io_err("read", path))?;
                (n > 0).then(|| {
                    line_no += 1;
                    if line_no == 1 && line.starts_with(BOM) {
                        line.drain(..BOM.len());
                    }
                    (line_no, line)
                })
            }
        };
        let eof = next.is_none();
        if let Some((no, line)) = next {
            record.extend_from_slice(&line);
            lines.push((no, line));
        }
        let Some(&(start, _)) = lines.first() else {
            return Ok(());
        };
        if quote_open(strip_line(&record, false)) {
            if !eof && lines.len() < QUOTED_LINES && record.len() < QUOTED_BYTES {
                continue; // a quoted field goes on on the next line
            }
            // The quote does not close: its line alone is the record, the rest is read again.
            let mut read_ahead: VecDeque<_> = lines.drain(1..).collect();
            read_ahead.append(&mut again);
            again = read_ahead;
            let line = strip_line(&lines[0].1, false);
            if header_read {
                if out
                    .push(path, start, || line.to_vec(), header.as_deref(), context)
                    .is_break()
                {
                    return Ok(());
                }
            } else {
                header = Some(names(&split_csv(line).0));
                header_read = true;
            }
            record.clear();
            lines.clear();
            continue;
        }
        let row = strip_line(&record, false);
        if !row.trim_ascii().is_empty() {
            if header_read {
                let line = || csv_line(&split_csv(row).0);
                if out
                    .push(path, start, line, header.as_deref(), context)
                    .is_break()
                {
                    return Ok(());
                }
            } else {
                header = Some(names(&split_csv(row).0));
                header_read = true;
            }
        }
        record.clear();
        lines.clear();
    }
}

/// The column names of a header row.
fn names(fields: &[Vec<u8>]) -> Vec<String> {
    fields
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_owned())
        .collect()
}

/// Splits one CSV record into fields (RFC 4180, leniently: a quote opens a quoted field only
/// at the start of a field). Also says whether the record ends inside a quoted field.
fn split_csv(record: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let (mut quoted, mut at_start) = (false, true);
    let mut bytes = record.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if quoted {
            if b != b'"' {
                field.push(b);
            } else if bytes.next_if_eq(&b'"').is_some() {
                field.push(b'"');
            } else {
                quoted = false;
            }
            continue;
        }
        match b {
            b'"' if at_start => quoted = true,
            b',' => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            _ => field.push(b),
        }
        at_start = false;
    }
    fields.push(field);
    (fields, quoted)
}

/// Whether a CSV record ends inside a quoted field: [`split_csv`]'s answer, without splitting.
fn quote_open(record: &[u8]) -> bool {
    let (mut quoted, mut at_start) = (false, true);
    let mut bytes = record.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if quoted {
            if b == b'"' && bytes.next_if_eq(&b'"').is_none() {
                quoted = false;
            }
            continue;
        }
        match b {
            b'"' if at_start => quoted = true,
            b',' => {
                at_start = true;
                continue;
            }
            _ => {}
        }
        at_start = false;
    }
    quoted
}

/// Fields as one CSV line: joined by commas, quoted when they hold a comma, a quote or a line
/// break.
fn csv_line(fields: &[Vec<u8>]) -> Vec<u8> {
    let mut line = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        if field
            .iter()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        {
            line.push(b'"');
            for &b in field {
                if b == b'"' {
                    line.push(b'"');
                }
                line.push(b);
            }
            line.push(b'"');
        } else {
            line.extend_from_slice(field);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{quote_open, split_csv};

    /// `quote_open` answers what `split_csv` does, for every record of up to 8 bytes of
    /// quotes, commas, line breaks and letters.
    #[test]
    fn quote_open_agrees_with_split_csv() {
        const BYTES: [u8; 5] = [b'"', b',', b'\n', b'\r', b'a'];
        let mut checked = 0u32;
        for len in 0..=8u32 {
            for n in 0..5u32.pow(len) {
                let (mut record, mut rest) = (Vec::new(), n);
                for _ in 0..len {
                    record.push(BYTES[(rest % 5) as usize]);
                    rest /= 5;
                }
                assert_eq!(
                    quote_open(&record),
                    split_csv(&record).1,
                    "{:?}",
                    String::from_utf8_lossy(&record)
                );
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=8).map(|l| 5u32.pow(l)).sum::<u32>());
    }
}
