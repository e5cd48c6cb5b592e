//! Reads input files into [`RawRecord`]s.
//!
//! Sources only split files into records; parsing (and dead-lettering what does not parse) is
//! ingestion's job. So a line that is not valid UTF-8, or a CSV row with the wrong number of
//! fields, is still emitted: only I/O errors, and a file that changes between counting and
//! reading its records (see [`FileSource::chunks`]), are errors.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
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
    /// A file held other records when read than when its records were counted.
    #[error(
        "{}: the file changed while it was read ({counted} records counted from byte {start}, {read} read)",
        path.display()
    )]
    Changed {
        /// The file.
        path: PathBuf,
        /// Where the part read starts.
        start: u64,
        /// The records counted in the part.
        counted: u64,
        /// The records read from it.
        read: u64,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which records of a file source one of several readers makes, when every reader goes through
/// every file (several readers can instead split the files: see [`FileSource::chunks`]):
/// reader `reader` of `readers` makes the records whose sequence `i` has
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
        let mut out = self.emitter(0, Some(share), emit);
        for (index, path) in (0u64..).zip(files) {
            let before = out.sequence;
            self.read_file(path, &mut out)?;
            if share.counts_file(index) {
                file_read(path, out.sequence - before);
            }
            if out.stopped {
                break;
            }
        }
        Ok(out.taken)
    }

    /// An emitter numbering from `sequence`, making the records `share` takes (none: it
    /// counts them only).
    fn emitter<F>(&self, sequence: u64, share: Option<Share>, emit: F) -> Emitter<'_, F> {
        Emitter {
            source: &self.name,
            format: self.format.raw_format(),
            sequence,
            share,
            taken: 0,
            stopped: false,
            emit,
        }
    }

    /// Reads one whole file with the format's splitter.
    fn read_file<F: FnMut(RawRecord) -> ControlFlow<()>>(
        &self,
        path: &Path,
        out: &mut Emitter<'_, F>,
    ) -> Result<(), FileError> {
        match &self.format {
            FileFormat::Envelope | FileFormat::Fhir | FileFormat::Json if is_json(path) => {
                read_json(path, out)
            }
            FileFormat::Envelope | FileFormat::Fhir | FileFormat::Json => read_lines(path, out),
            FileFormat::VitalsCsv { patient_id } => read_csv(path, true, Some(patient_id), out),
            FileFormat::Csv { header } => read_csv(path, *header, None, out),
            FileFormat::Hl7v2 => read_hl7(path, out),
        }
    }

    /// Whether the source reads `path` a record a line (JSON lines: no record spans lines), so
    /// that the file can be cut into byte ranges read apart. CSV (a quoted field may span
    /// lines), HL7 v2 and `.json` files are read whole.
    #[must_use]
    pub fn by_lines(&self, path: &Path) -> bool {
        matches!(
            self.format,
            FileFormat::Envelope | FileFormat::Fhir | FileFormat::Json
        ) && !is_json(path)
    }

    /// Cuts `files` (in reading order) into the [`Chunk`]s several readers share: a file read
    /// [`by_lines`](Self::by_lines) larger than `chunk_bytes` (0 is taken as 1) is cut into
    /// ranges of `chunk_bytes` (the last range runs to the end of the file, however long it has
    /// grown); every other file is one chunk. The chunks depend on the files' sizes only, so
    /// every reader that sees the same files cuts them alike.
    ///
    /// # Errors
    /// [`FileError`] when a file's size cannot be read.
    pub fn chunks(&self, files: &[PathBuf], chunk_bytes: u64) -> Result<Vec<Chunk>, FileError> {
        let chunk_bytes = max1(chunk_bytes);
        let mut chunks = Vec::with_capacity(files.len());
        for (file, path) in files.iter().enumerate() {
            let size = if self.by_lines(path) {
                fs::metadata(path).map_err(io_err("read", path))?.len()
            } else {
                0
            };
            if size <= chunk_bytes {
                chunks.push(Chunk { file, range: None });
                continue;
            }
            let mut start = 0;
            while start < size {
                let end = start + chunk_bytes;
                chunks.push(Chunk {
                    file,
                    range: Some((start, if end >= size { u64::MAX } else { end })),
                });
                start = end;
            }
        }
        Ok(chunks)
    }

    /// Counts the records (and, for a byte range, the lines) of `chunk` of `files`, splitting
    /// it exactly as [`read_chunk`](Self::read_chunk) does, without making the records.
    ///
    /// # Errors
    /// [`FileError`] on I/O errors only.
    pub fn count_chunk(&self, files: &[PathBuf], chunk: Chunk) -> Result<ChunkCount, FileError> {
        let path = chunk_path(files, chunk)?;
        let mut out = self.emitter(0, None, |_| ControlFlow::Continue(()));
        let lines = match chunk.range {
            Some(range) => read_range(path, range, 1, &mut out)?,
            None => {
                self.read_file(path, &mut out)?;
                0
            }
        };
        Ok(ChunkCount {
            records: out.sequence,
            lines,
        })
    }

    /// Reads `chunk` of `files`, numbering its records from `start` (see
    /// [`ChunkStart::of`]): `emit` is called with each record, numbered and located exactly as
    /// a [`read`](Self::read) of every file gives it, and answers `Break` to stop reading (that
    /// record is not taken).
    ///
    /// # Errors
    /// [`FileError`] on I/O errors only.
    pub fn read_chunk(
        &self,
        files: &[PathBuf],
        chunk: Chunk,
        start: ChunkStart,
        emit: impl FnMut(RawRecord) -> ControlFlow<()>,
    ) -> Result<ChunkRead, FileError> {
        let path = chunk_path(files, chunk)?;
        let mut out = self.emitter(start.sequence, Some(Share::WHOLE), emit);
        match chunk.range {
            Some(range) => {
                read_range(path, range, start.line, &mut out)?;
            }
            None => self.read_file(path, &mut out)?,
        }
        Ok(ChunkRead {
            taken: out.taken,
            stopped: out.stopped,
        })
    }
}

/// Bytes of a file read a line at a time that one reader reads as one chunk, when several share
/// a file source (see [`FileSource::chunks`]).
pub const CHUNK_BYTES: u64 = 8 << 20;

/// A part of a file source that one reader reads: a whole file, or the lines of a file read a
/// record a line that start in a byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The file: its place in the reading order.
    pub file: usize,
    /// `None`: the whole file. Else the bytes `start..end` of the file: the chunk holds the lines
    /// that start there (a line that starts before `end` is read to its end).
    pub range: Option<(u64, u64)>,
}

impl Chunk {
    /// Whether the chunk starts its file (its reader counts the file).
    #[must_use]
    pub const fn starts_file(&self) -> bool {
        match self.range {
            None => true,
            Some((start, _)) => start == 0,
        }
    }
}

/// What a [`Chunk`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkCount {
    /// Its records.
    pub records: u64,
    /// Its lines, blank ones too (0 for a whole file).
    pub lines: u64,
}

/// Where the numbering of a [`Chunk`]'s records starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkStart {
    /// The sequence of its first record.
    pub sequence: u64,
    /// The 1-based line of its first line in its file.
    pub line: u64,
}

impl ChunkStart {
    /// Where each of `chunks` (a [`FileSource::chunks`] cut, in order) starts, given every
    /// chunk's count: the records of the chunks before it, and the lines of the ranges of its
    /// file before it.
    #[must_use]
    pub fn of(chunks: &[Chunk], counts: &[ChunkCount]) -> Vec<Self> {
        let (mut sequence, mut line) = (0u64, 1u64);
        chunks
            .iter()
            .zip(counts)
            .map(|(chunk, count)| {
                if chunk.starts_file() {
                    line = 1;
                }
                let start = Self { sequence, line };
                sequence += count.records;
                line += count.lines;
                start
            })
            .collect()
    }
}

/// What a [`FileSource::read_chunk`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    /// The records taken.
    pub taken: u64,
    /// Whether `emit` answered `Break`.
    pub stopped: bool,
}

impl ChunkRead {
    /// Checks that a chunk read whole held the records counted in it.
    ///
    /// # Errors
    /// [`FileError::Changed`] when it did not.
    pub fn check(
        self,
        files: &[PathBuf],
        chunk: Chunk,
        counted: ChunkCount,
    ) -> Result<(), FileError> {
        if self.stopped || self.taken == counted.records {
            return Ok(());
        }
        Err(FileError::Changed {
            path: files.get(chunk.file).cloned().unwrap_or_default(),
            start: chunk.range.map_or(0, |(start, _)| start),
            counted: counted.records,
            read: self.taken,
        })
    }
}

/// The file of `chunk`.
fn chunk_path(files: &[PathBuf], chunk: Chunk) -> Result<&Path, FileError> {
    files
        .get(chunk.file)
        .map(PathBuf::as_path)
        .ok_or_else(|| FileError::Io {
            op: "find",
            path: PathBuf::from(format!("file {} of {}", chunk.file, files.len())),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
}

/// Whether a file is read as a JSON document (or its lines).
fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Numbers records, and makes and emits those of its share.
struct Emitter<'a, F> {
    source: &'a str,
    format: RawFormat,
    /// The next record's number, over every reader's records.
    sequence: u64,
    /// The records this reader makes (`None`: it only counts them).
    share: Option<Share>,
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
        if !self.share.is_some_and(|share| share.takes(self.sequence)) {
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
    read_range(path, (0, u64::MAX), 1, out).map(|_| ())
}

/// One record per non-blank line that starts at a byte in `start..end` of the file (a line
/// starts at 0 and after every `\n`); the first of them is line `first_line`. A line is read to
/// its end, past `end` if need be. Returns the lines read, blank ones too (those before a stop
/// are exact, no more).
fn read_range<F: FnMut(RawRecord) -> ControlFlow<()>>(
    path: &Path,
    (start, end): (u64, u64),
    first_line: u64,
    out: &mut Emitter<'_, F>,
) -> Result<u64, FileError> {
    let mut reader = open(path)?;
    // The offset of the next line.
    let mut at = start;
    if start > 0 {
        // The line that holds byte `start - 1` belongs to the range before, unless that byte
        // ends it.
        reader
            .seek(SeekFrom::Start(start - 1))
            .map_err(io_err("read", path))?;
        let skipped = reader.skip_until(b'\n').map_err(io_err("read", path))?;
        at = start - 1 + skipped as u64;
    }
    let mut buf = Vec::new();
    let mut lines = 0u64;
    while at < end {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        let line_no = first_line + lines;
        lines += 1;
        at += n as u64;
        let line = strip_line(&buf, start == 0 && lines == 1);
        if !line.trim_ascii().is_empty()
            && out
                .push(path, line_no, || line.to_vec(), None, None)
                .is_break()
        {
            break;
        }
    }
    Ok(lines)
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
