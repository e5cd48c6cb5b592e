//! The MLLP source's log: every message the listener acknowledges, made durable before its
//! acknowledgement, in the order it was stored.
//!
//! A log is a folder of segment files named after the offset of their first record
//! (`00000000000000000042.log`), each a sequence of records:
//!
//! ```text
//! length u32 | crc32 u32 | offset u64 | arrival ms i64 | kind u8 | digest [16] | size u64 |
//! peer length u8 | peer | reason length u16 | reason | message bytes
//! ```
//!
//! (little-endian; `length` and the CRC cover everything after the CRC). Offsets are dense: the
//! first record of a segment follows the last of the one before. A record is appended with one
//! write and made durable with an `fdatasync` of its segment (and of the folder when a segment
//! was created); the writer syncs a batch of records at once. A crash during a write can leave
//! the records after the last sync cut short or damaged at the end of the last segment:
//! [`Log::open`] drops the first damaged record of the last segment and whatever follows it
//! (they were never made durable, so never acknowledged), and syncs what it keeps. A damaged
//! record in an earlier segment stops the open with an error: records past it may have been
//! acknowledged. The folder is owner-only and its files too (messages hold PHI).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The size a segment grows to before the next record starts a new one.
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// The largest record a log reads (a length past it is damage).
const MAX_RECORD: u32 = 1 << 30;

/// An error of the log. Messages name the file and the offset, never the data.
#[derive(Debug, Error)]
pub enum LogError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A record is damaged where a crash cannot have left it.
    #[error(
        "{}: the record after offset {after} is damaged ({what}); the records past it cannot \
         be read (move the folder away to start a new log; it may hold acknowledged messages)",
        path.display()
    )]
    Damaged {
        /// The segment.
        path: PathBuf,
        /// The offset before the damaged record.
        after: u64,
        /// What is wrong.
        what: &'static str,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A message acknowledged with `AA`: it flows into the dataflow.
    Message,
    /// A message rejected with `AR`: it goes to the source's dead letters.
    Rejected,
}

/// A record to append.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// What it holds.
    pub kind: Kind,
    /// The message's digest (duplicate detection); zero for rejected messages.
    pub digest: [u8; 16],
    /// The message's length as received (more than `bytes` for an oversize message).
    pub size: u64,
    /// Who sent it (`address:port`).
    pub peer: &'a str,
    /// Why it was rejected (no values of the message).
    pub reason: &'a str,
    /// The message (for an oversize one, its first bytes).
    pub bytes: &'a [u8],
}

/// A record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// When it was stored, in milliseconds since the Unix epoch (never less than the record's
    /// before it).
    pub arrival_ms: i64,
    /// What it holds.
    pub kind: Kind,
    /// The message's digest.
    pub digest: [u8; 16],
    /// The message's length as received.
    pub size: u64,
    /// Who sent it.
    pub peer: String,
    /// Why it was rejected.
    pub reason: String,
    /// The message.
    pub bytes: Vec<u8>,
}

/// CRC-32 (IEEE 802.3), bitwise over a table built at compile time.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for b in data {
        c = TABLE[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Appends a record's bytes to `out`.
fn encode(offset: u64, arrival_ms: i64, e: &Entry<'_>, out: &mut Vec<u8>) {
    let peer = &e.peer.as_bytes()[..e.peer.len().min(255)];
    let reason = &e.reason.as_bytes()[..e.reason.len().min(usize::from(u16::MAX))];
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&arrival_ms.to_le_bytes());
    out.push(match e.kind {
        Kind::Message => 0,
        Kind::Rejected => 1,
    });
    out.extend_from_slice(&e.digest);
    out.extend_from_slice(&e.size.to_le_bytes());
    out.push(u8::try_from(peer.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(peer);
    out.extend_from_slice(
        &u16::try_from(reason.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(reason);
    out.extend_from_slice(e.bytes);
    let body = &out[start + 8..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a record's body.
fn decode(body: &[u8]) -> Option<Record> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, rest) = self.0.split_at_checked(n)?;
            self.0 = rest;
            Some(head)
        }
        fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
            self.take(N)?.try_into().ok()
        }
    }
    let mut c = Cursor(body);
    let offset = u64::from_le_bytes(c.array()?);
    let arrival_ms = i64::from_le_bytes(c.array()?);
    let kind = match c.array::<1>()?[0] {
        0 => Kind::Message,
        1 => Kind::Rejected,
        _ => return None,
    };
    let digest = c.array()?;
    let size = u64::from_le_bytes(c.array()?);
    let peer_len = usize::from(c.array::<1>()?[0]);
    let peer = String::from_utf8_lossy(c.take(peer_len)?).into_owned();
    let reason_len = usize::from(u16::from_le_bytes(c.array()?));
    let reason = String::from_utf8_lossy(c.take(reason_len)?).into_owned();
    Some(Record {
        offset,
        arrival_ms,
        kind,
        digest,
        size,
        peer,
        reason,
        bytes: c.0.to_vec(),
    })
}

/// What reading the next record of a segment gave.
enum Next {
    /// A record, and the bytes it took.
    Record(Record, u64),
    /// The segment's end, cleanly.
    End,
    /// A record cut short or damaged.
    Bad(&'static str),
}

/// Reads the next record of a segment.
fn read_record(r: &mut impl Read) -> io::Result<Next> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(Next::End);
    }
    if got < head.len() {
        return Ok(Next::Bad("cut short"));
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD {
        return Ok(Next::Bad("impossible length"));
    }
    let mut body = vec![0u8; len as usize];
    match r.read_exact(&mut body) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Next::Bad("cut short")),
        Err(e) => return Err(e),
    }
    if crc32(&body) != crc {
        return Ok(Next::Bad("checksum mismatch"));
    }
    Ok(decode(&body).map_or(Next::Bad("unreadable"), |record| {
        Next::Record(record, 8 + u64::from(len))
    }))
}

/// A segment of the log.
#[derive(Clone, Debug)]
struct Segment {
    path: PathBuf,
    /// The offset after its last record.
    end: u64,
    /// Its size in bytes.
    size: u64,
}

/// The segment files of a folder, by first offset.
fn segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, LogError> {
    let mut found = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let path = entry.map_err(io_err("read", dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.insert(first, path);
        }
    }
    Ok(found)
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// Creates the log's folder, owner-only.
fn create_dir(dir: &Path) -> Result<(), LogError> {
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("set permissions of", dir))?;
    }
    Ok(())
}

/// Makes a folder's entries durable (a new or removed segment).
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// A log opened for appending.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Every segment, by first offset.
    segments: BTreeMap<u64, Segment>,
    /// The segment records are appended to, by first offset, and its file.
    active: Option<(u64, File)>,
    /// Encoded records not yet written.
    pending: Vec<u8>,
    /// The offset of the next record.
    next: u64,
    /// The arrival time of the last record.
    last_ms: i64,
    /// Whether the folder has an entry not yet made durable.
    dir_dirty: bool,
    segment_size: u64,
}

/// A log as [`Log::open`] found it.
#[derive(Debug)]
pub struct Opened {
    /// The log, ready for appending.
    pub log: Log,
    /// The digests of its messages ([`Kind::Message`]) with their offsets, oldest first.
    pub digests: Vec<([u8; 16], u64)>,
    /// Bytes dropped at the end of the last segment (a crash's leftovers).
    pub dropped: u64,
}

impl Log {
    /// Opens the log in `dir` (creating it, owner-only), checks every record, and drops the
    /// first damaged record of its last segment and what follows it (see the module's notes). The next record's offset is at least
    /// `at_least` (where a checkpoint says reading resumes, should the log have lost records).
    /// Segments grow to about `segment_size` bytes.
    ///
    /// # Errors
    /// The folder or a segment cannot be read, or a record is damaged where a crash cannot have
    /// left it (see [`LogError::Damaged`]).
    pub fn open(dir: &Path, at_least: u64, segment_size: u64) -> Result<Opened, LogError> {
        create_dir(dir)?;
        let found = segments(dir)?;
        let last_first = found.keys().next_back().copied();
        let mut digests = Vec::new();
        let mut segments = BTreeMap::new();
        let mut last_ms = i64::MIN;
        let mut dropped = 0;
        let mut expected: Option<u64> = None;
        for (first, path) in found {
            let last = Some(first) == last_first;
            if expected.is_some_and(|e| e != first) {
                return Err(LogError::Damaged {
                    path,
                    after: expected.unwrap_or_default(),
                    what: "a segment is missing before it",
                });
            }
            let file = File::open(&path).map_err(io_err("open", &path))?;
            let total = file.metadata().map_err(io_err("read", &path))?.len();
            let mut r = BufReader::new(file);
            let (mut at, mut size) = (first, 0u64);
            loop {
                let bad = match read_record(&mut r).map_err(io_err("read", &path))? {
                    Next::End => break,
                    Next::Record(rec, _) if rec.offset != at => "out of sequence",
                    Next::Record(rec, bytes) => {
                        if rec.kind == Kind::Message {
                            digests.push((rec.digest, rec.offset));
                        }
                        last_ms = last_ms.max(rec.arrival_ms);
                        at += 1;
                        size += bytes;
                        continue;
                    }
                    Next::Bad(what) => what,
                };
                if !last {
                    return Err(LogError::Damaged {
                        path,
                        after: at,
                        what: bad,
                    });
                }
                // A record cut short by a crash: never made durable, never acknowledged.
                dropped = total - size;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                f.set_len(size).map_err(io_err("truncate", &path))?;
                f.sync_all().map_err(io_err("fsync", &path))?;
                break;
            }
            if last {
                // Records written before a crash but not yet synced: durable before anyone reads
                // them.
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &path))?;
            }
            expected = Some(at);
            segments.insert(
                first,
                Segment {
                    path,
                    end: at,
                    size,
                },
            );
        }
        let end = expected.unwrap_or(0);
        if end < at_least && !segments.is_empty() {
            // Records were lost after these (the folder was tampered with): everything in them is
            // before where reading resumes, and appending starts a new segment there.
            for s in std::mem::take(&mut segments).into_values() {
                fs::remove_file(&s.path).map_err(io_err("remove", &s.path))?;
            }
            digests.clear();
            sync_dir(dir)?;
        }
        let next = end.max(at_least);
        let mut log = Self {
            dir: dir.to_owned(),
            segments,
            active: None,
            pending: Vec::new(),
            next,
            last_ms: if last_ms == i64::MIN { 0 } else { last_ms },
            dir_dirty: false,
            segment_size,
        };
        // Appending goes on in the last segment, unless it is full or records were lost after it.
        if let Some((first, seg)) = log.segments.iter().next_back()
            && seg.end == next
            && seg.size < segment_size
        {
            let file = OpenOptions::new()
                .append(true)
                .open(&seg.path)
                .map_err(io_err("open", &seg.path))?;
            log.active = Some((*first, file));
        }
        Ok(Opened {
            log,
            digests,
            dropped,
        })
    }

    /// The offset the next record gets.
    #[must_use]
    pub const fn next(&self) -> u64 {
        self.next
    }

    /// The offset of the first record kept (the next one's when there is none).
    #[must_use]
    pub fn first(&self) -> u64 {
        self.segments
            .iter()
            .find(|(_, s)| s.size > 0)
            .map_or(self.next, |(first, _)| *first)
    }

    /// The arrival time of the last record (0 for an empty log).
    #[must_use]
    pub const fn last_ms(&self) -> i64 {
        self.last_ms
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a record stored at `arrival_ms`; durable once [`Self::sync`] returns. Returns its
    /// offset.
    ///
    /// # Errors
    /// A segment could not be finished or created.
    pub fn append(&mut self, entry: &Entry<'_>, arrival_ms: i64) -> Result<u64, LogError> {
        let full = self
            .active
            .as_ref()
            .and_then(|(first, _)| self.segments.get(first))
            .is_none_or(|s| s.size >= self.segment_size);
        if full {
            self.roll()?;
        }
        let offset = self.next;
        let before = self.pending.len();
        encode(offset, arrival_ms, entry, &mut self.pending);
        let added = (self.pending.len() - before) as u64;
        if let Some(seg) = self
            .active
            .as_ref()
            .and_then(|(first, _)| self.segments.get_mut(first))
        {
            seg.size += added;
            seg.end = offset + 1;
        }
        self.next += 1;
        self.last_ms = self.last_ms.max(arrival_ms);
        Ok(offset)
    }

    /// Writes what was appended and makes it durable.
    ///
    /// # Errors
    /// The write or the sync failed: the records appended since the last sync are not durable,
    /// and the log must not be appended to again.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if let Some((first, file)) = self.active.as_mut() {
            let path = segment_path(&self.dir, *first);
            if !self.pending.is_empty() {
                file.write_all(&self.pending)
                    .map_err(io_err("write", &path))?;
                self.pending.clear();
            }
            file.sync_data().map_err(io_err("fsync", &path))?;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Finishes the active segment (written and synced) and starts one at the next offset.
    fn roll(&mut self) -> Result<(), LogError> {
        if self.active.is_some() {
            self.sync()?;
        }
        let path = segment_path(&self.dir, self.next);
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(io_err("create", &path))?;
        self.segments.insert(
            self.next,
            Segment {
                path,
                end: self.next,
                size: 0,
            },
        );
        self.active = Some((self.next, file));
        self.dir_dirty = true;
        Ok(())
    }

    /// Removes the segments whose every record is before `offset` (never the one appended to).
    /// Returns how many.
    ///
    /// # Errors
    /// A segment could not be removed.
    pub fn remove_before(&mut self, offset: u64) -> Result<usize, LogError> {
        let active = self.active.as_ref().map(|(first, _)| *first);
        let gone: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, s)| s.end <= offset && Some(**first) != active)
            .map(|(first, _)| *first)
            .collect();
        for first in &gone {
            if let Some(s) = self.segments.remove(first) {
                fs::remove_file(&s.path).map_err(io_err("remove", &s.path))?;
            }
        }
        if !gone.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(gone.len())
    }
}

/// Reads a log's records in order, from an offset; the writer says up to where they are
/// durable (only those are read).
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// The segment being read, and its path.
    file: Option<(BufReader<File>, PathBuf)>,
    /// The offset of the next record to return.
    next: u64,
}

impl Reader {
    /// A reader of the log in `dir` from `from` (or the log's first record, if later).
    #[must_use]
    pub fn new(dir: &Path, from: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            file: None,
            next: from,
        }
    }

    /// The offset of the next record it returns.
    #[must_use]
    pub const fn next_offset(&self) -> u64 {
        self.next
    }

    /// The next record. The caller knows it is durable: a record missing or cut short is damage.
    ///
    /// # Errors
    /// A segment cannot be read, or the record is damaged or missing.
    pub fn read(&mut self) -> Result<Record, LogError> {
        loop {
            let (file, path) = match self.file.as_mut() {
                Some((f, p)) => (f, p.clone()),
                None => self.open()?,
            };
            match read_record(file).map_err(io_err("read", &path))? {
                Next::Record(rec, _) if rec.offset < self.next => {}
                Next::Record(rec, _) if rec.offset == self.next => {
                    self.next += 1;
                    return Ok(rec);
                }
                Next::Record(..) => {
                    return Err(LogError::Damaged {
                        path,
                        after: self.next,
                        what: "out of sequence",
                    });
                }
                // The segment is read: the next record starts the next one.
                Next::End => {
                    let next = segment_path(&self.dir, self.next);
                    if !next.exists() {
                        return Err(LogError::Damaged {
                            path: next,
                            after: self.next,
                            what: "the record is missing",
                        });
                    }
                    self.file = None;
                    let f = File::open(&next).map_err(io_err("open", &next))?;
                    self.file = Some((BufReader::new(f), next));
                }
                Next::Bad(what) => {
                    return Err(LogError::Damaged {
                        path,
                        after: self.next,
                        what,
                    });
                }
            }
        }
    }

    /// Opens the segment holding the next record (the last one starting at or before it), or
    /// the first segment when every earlier record is gone; reading skips to the record.
    fn open(&mut self) -> Result<(&mut BufReader<File>, PathBuf), LogError> {
        let found = segments(&self.dir)?;
        let (first, path) = found
            .range(..=self.next)
            .next_back()
            .or_else(|| found.iter().next())
            .map(|(f, p)| (*f, p.clone()))
            .ok_or_else(|| LogError::Damaged {
                path: self.dir.clone(),
                after: self.next,
                what: "the log has no segment",
            })?;
        self.next = self.next.max(first);
        let f = File::open(&path).map_err(io_err("open", &path))?;
        let (file, _) = self.file.insert((BufReader::new(f), path.clone()));
        Ok((file, path))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(bytes: &[u8]) -> Entry<'_> {
        Entry {
            kind: Kind::Message,
            digest: [bytes.len() as u8; 16],
            size: bytes.len() as u64,
            peer: "127.0.0.1:5000",
            reason: "",
            bytes,
        }
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_come_back_across_segments_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = Log::open(&path, 0, 200).unwrap().log;
        for i in 0..20u8 {
            let body = vec![b'a' + i; 40];
            assert_eq!(
                log.append(&entry(&body), 1_000 + i64::from(i)).unwrap(),
                u64::from(i)
            );
            if i % 3 == 0 {
                log.sync().unwrap();
            }
        }
        log.sync().unwrap();
        assert!(segments(&path).unwrap().len() > 3);
        let mut r = Reader::new(&path, 7);
        for i in 7..20u8 {
            let rec = r.read().unwrap();
            assert_eq!(rec.offset, u64::from(i));
            assert_eq!(rec.bytes, vec![b'a' + i; 40]);
            assert_eq!(rec.arrival_ms, 1_000 + i64::from(i));
            assert_eq!(rec.peer, "127.0.0.1:5000");
        }
        drop(log);
        let opened = Log::open(&path, 0, 200).unwrap();
        assert_eq!(opened.log.next(), 20);
        assert_eq!(opened.log.last_ms(), 1_019);
        assert_eq!(opened.digests.len(), 20);
        assert_eq!(opened.dropped, 0);
        // Removing what a checkpoint made durable keeps the segment of offset 12.
        let mut log = opened.log;
        assert!(log.remove_before(12).unwrap() > 0);
        assert!(log.first() <= 12 && log.first() > 0, "{}", log.first());
        let mut r = Reader::new(&path, 12);
        assert_eq!(r.read().unwrap().offset, 12);
        // A reader from before the first kept record starts at it.
        let mut r = Reader::new(&path, 0);
        assert_eq!(r.read().unwrap().offset, log.first());
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = Log::open(&path, 0, 1 << 20).unwrap().log;
        for i in 0..5u8 {
            log.append(&entry(&[i; 30]), 1).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let seg = segment_path(&path, 0);
        let full = fs::read(&seg).unwrap();
        fs::write(&seg, &full[..full.len() - 7]).unwrap();
        let opened = Log::open(&path, 0, 1 << 20).unwrap();
        assert_eq!(opened.log.next(), 4);
        assert!(opened.dropped > 0);
        let mut log = opened.log;
        assert_eq!(log.append(&entry(b"again"), 2).unwrap(), 4);
        log.sync().unwrap();
        drop(log);
        // A flipped byte in the middle.
        let mut bytes = fs::read(&seg).unwrap();
        bytes[20] ^= 0xFF;
        fs::write(&seg, &bytes).unwrap();
        // In the last segment it reads as a crash's leftover: everything after it is dropped.
        let opened = Log::open(&path, 0, 1 << 20).unwrap();
        assert_eq!(opened.log.next(), 0);
        // In an earlier segment it is an error.
        fs::write(&seg, &bytes).unwrap();
        fs::write(segment_path(&path, 5), b"").unwrap();
        let e = Log::open(&path, 0, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
    }

    #[test]
    fn a_log_behind_its_checkpoint_goes_on_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = Log::open(&path, 40, 1 << 20).unwrap().log;
        assert_eq!(log.next(), 40);
        assert_eq!(log.append(&entry(b"x"), 5).unwrap(), 40);
        log.sync().unwrap();
        let mut r = Reader::new(&path, 40);
        assert_eq!(r.read().unwrap().offset, 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o700);
            assert_eq!(mode(&segment_path(&path, 40)), 0o600);
        }
    }
}
