//! The audit trail's hash chain, and its verifier.
//!
//! Each audit record's `hash` covers the previous record's `hash` and the record's canonical
//! form: the JSON object of its `chain`, `event`, `recordedAt` and `sequence`, written with every
//! object's keys sorted (by their bytes) and no spaces, which is how the JSON-lines sink writes the
//! whole record. A verifier therefore recomputes each hash from the line as written.
//!
//! * `chain = "sha256"`: `hash` = SHA-256(`prevHash` ‖ canonical form). Anyone can recompute it:
//!   it shows accidental damage (a changed byte, a lost or repeated record), not a deliberate
//!   rewrite of the log.
//! * `chain = "hmac-sha256"`: `hash` = HMAC-SHA256(audit key, `prevHash` ‖ canonical form). Only
//!   the holder of the audit key can compute a record's hash, so a log changed by someone without
//!   the key fails verification.
//!
//! [`verify`] checks a JSON-lines audit log: the chain, the sagas' completeness, the causation
//! links, and the files the closing events list (size and SHA-256).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, de};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;
use vitalflow_model::envelope::{BATCH_COMPENSATED, ChainScheme, DomainEventType, FileDigest};
use vitalflow_model::ids::hex;

use crate::runtime::saga::SagaRole;

type HmacSha256 = Hmac<Sha256>;

/// The `prevHash` of a trail's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where an audit key comes from: `env:NAME` or `file:PATH`. Never a random key: a verifier needs
/// the same key after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKeySource {
    /// An environment variable.
    Env(String),
    /// A file (in a job file: relative to the job file's folder).
    File(String),
}

impl std::str::FromStr for AuditKeySource {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(var) = text.strip_prefix("env:").filter(|v| !v.is_empty()) {
            Ok(Self::Env(var.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(Self::File(path.to_owned()))
        } else if text == "ephemeral" {
            Err(
                "must be `env:NAME` or `file:PATH`: an audit key is never `ephemeral` (the \
                 trail is verified with the same key after the run)",
            )
        } else {
            Err("must be `env:NAME` or `file:PATH`")
        }
    }
}

impl<'de> Deserialize<'de> for AuditKeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// An audit key that cannot be loaded. Messages never contain key material.
#[derive(Debug, Error)]
pub enum AuditKeyError {
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The key file cannot be read.
    #[error("cannot read key file {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Fewer than [`AuditKey::MIN_LEN`] bytes.
    #[error("audit key too short: {len} bytes, at least {min} required")]
    TooShort {
        /// The key's length.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// HMAC refused the key (cannot happen for HMAC-SHA256, which accepts any length).
    #[error("audit key rejected by HMAC-SHA256")]
    Rejected,
}

/// The secret key of the audit chain's HMAC-SHA256. `Debug` never shows it.
#[derive(Clone)]
pub struct AuditKey(HmacSha256);

impl AuditKey {
    /// The minimum key length in bytes.
    pub const MIN_LEN: usize = 16;

    /// The key from raw bytes (a trailing newline removed); they are overwritten once the key is
    /// set up.
    ///
    /// # Errors
    /// [`AuditKeyError::TooShort`] under [`Self::MIN_LEN`] bytes.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<Self, AuditKeyError> {
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        let key = if bytes.len() < Self::MIN_LEN {
            Err(AuditKeyError::TooShort {
                len: bytes.len(),
                min: Self::MIN_LEN,
            })
        } else {
            HmacSha256::new_from_slice(&bytes)
                .map(Self)
                .map_err(|_| AuditKeyError::Rejected)
        };
        bytes.fill(0);
        std::hint::black_box(&bytes);
        key
    }

    /// Loads the key from `source`; a file's path is relative to `base`.
    ///
    /// # Errors
    /// The variable is not set, the file cannot be read, or the key is too short.
    pub fn load(source: &AuditKeySource, base: &Path) -> Result<Self, AuditKeyError> {
        match source {
            AuditKeySource::Env(var) => {
                let value = std::env::var_os(var)
                    .ok_or_else(|| AuditKeyError::EnvMissing { var: var.clone() })?;
                Self::from_bytes(value.into_encoded_bytes())
            }
            AuditKeySource::File(path) => {
                let path = base.join(path);
                let bytes = std::fs::read(&path).map_err(|error| AuditKeyError::Io {
                    path: path.clone(),
                    error,
                })?;
                Self::from_bytes(bytes)
            }
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

/// The canonical JSON of `value`: every object's keys sorted by their bytes, no spaces, strings
/// and numbers as `serde_json` writes them.
#[must_use]
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k.as_str()).unwrap_or_default());
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical form a record's hash covers: the object of its `chain`, `event`, `recordedAt`
/// and `sequence`, as [`canonical_json`].
#[must_use]
pub fn canonical_record(
    chain: ChainScheme,
    event: &Value,
    recorded_at: &Value,
    sequence: u64,
) -> String {
    record_form(
        chain,
        &canonical_json(event),
        &canonical_json(recorded_at),
        sequence,
        None,
    )
}

/// The canonical JSON of a record from its parts' (the keys in sorted order): without the
/// hashes, what the hash covers; with (`prevHash`, `hash`), the whole line.
fn record_form(
    chain: ChainScheme,
    event: &str,
    recorded_at: &str,
    sequence: u64,
    hashes: Option<(&str, &str)>,
) -> String {
    let chain = chain.as_str();
    match hashes {
        None => format!(
            r#"{{"chain":"{chain}","event":{event},"recordedAt":{recorded_at},"sequence":{sequence}}}"#
        ),
        Some((prev, hash)) => {
            let prev = serde_json::to_string(prev).unwrap_or_default();
            let hash = serde_json::to_string(hash).unwrap_or_default();
            format!(
                r#"{{"chain":"{chain}","event":{event},"hash":{hash},"prevHash":{prev},"recordedAt":{recorded_at},"sequence":{sequence}}}"#
            )
        }
    }
}

/// The hex hash chaining a record to its predecessor: SHA-256 without a key, HMAC-SHA256 with
/// one, over `prev_hash` followed by the record's canonical form.
#[must_use]
pub fn record_hash(key: Option<&AuditKey>, prev_hash: &str, canonical: &str) -> String {
    match key {
        Some(key) => hex(&key.mac(&[prev_hash.as_bytes(), canonical.as_bytes()])),
        None => {
            let mut h = Sha256::new();
            h.update(prev_hash.as_bytes());
            h.update(canonical.as_bytes());
            hex(&h.finalize())
        }
    }
}

/// A file's size and hex SHA-256, read once.
///
/// # Errors
/// The file cannot be read.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&h.finalize())))
}

/// The digests of files a sink wrote (`files` relative to `out`).
///
/// # Errors
/// A message naming the file that cannot be read back.
pub fn digests(out: &Path, files: &[String]) -> Result<Vec<FileDigest>, String> {
    files
        .iter()
        .map(|f| {
            let (bytes, sha256) = file_digest(&out.join(f))
                .map_err(|e| format!("cannot read back {f} to digest it: {e}"))?;
            Ok(FileDigest {
                path: f.clone(),
                bytes,
                sha256,
            })
        })
        .collect()
}

/// Why an audit log does not verify, or cannot be verified.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// A Kafka topic was given: only files are verified.
    #[error("{0}: audit logs in Kafka are not verified; export the topic to JSON lines first")]
    Kafka(String),
    /// The log cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// No audit record in the files given.
    #[error("{}: no audit records", path.display())]
    Empty {
        /// The file or folder.
        path: PathBuf,
    },
    /// The records are keyed and no key was given.
    #[error(
        "record {record}: the chain is hmac-sha256: give the audit key (--key env:NAME or \
         --key file:PATH) to verify it"
    )]
    KeyNeeded {
        /// The first keyed record.
        record: u64,
    },
    /// The log does not verify: its first problem.
    #[error("record {record}: {problem} ({at})")]
    Invalid {
        /// The record's sequence number (where it cannot be read: the one expected there).
        record: u64,
        /// Where the record is: `FILE:LINE`.
        at: String,
        /// What is wrong.
        problem: Problem,
    },
}

impl VerifyError {
    /// The exit code: 1 when the log does not verify, 2 when it cannot be verified (usage, a
    /// missing key, a log that cannot be read).
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. } | Self::Empty { .. } => 1,
            Self::Kafka(_) | Self::Io { .. } | Self::KeyNeeded { .. } => 2,
        }
    }
}

/// What is wrong with a record. Messages name fields, event types, ids and file paths, never the
/// payload's values.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Problem {
    /// The line is not UTF-8.
    #[error("the line is not UTF-8")]
    NotUtf8,
    /// The line is not a JSON object.
    #[error("not a JSON audit record ({0})")]
    NotJson(String),
    /// The line is not as the audit stage wrote it (spaces, key order, escapes).
    #[error("the line is not in canonical form (it was edited)")]
    NotCanonical,
    /// A field is missing or of the wrong type.
    #[error("field `{0}` is missing or malformed")]
    Field(&'static str),
    /// A field the records do not have.
    #[error("unexpected field `{0}`")]
    Unexpected(String),
    /// An unknown `chain`.
    #[error("unknown chain `{0}`")]
    UnknownChain(String),
    /// Records missing before this one.
    #[error("sequence {found} follows {previous}: records are missing")]
    Gap {
        /// This record's sequence.
        found: u64,
        /// The previous record's.
        previous: u64,
    },
    /// A repeated or out-of-order record.
    #[error("sequence {found} follows {previous}: a record is repeated or out of order")]
    Repeated {
        /// This record's sequence.
        found: u64,
        /// The previous record's.
        previous: u64,
    },
    /// The first record of a trail (sequence 0) must follow the genesis hash.
    #[error("the first record's prevHash is not 64 zeros")]
    Genesis,
    /// `prevHash` is not the previous record's `hash`.
    #[error("prevHash is not the previous record's hash (a record was removed or changed)")]
    Link,
    /// The hash does not recompute.
    #[error("hash does not match (the record or an earlier one was changed)")]
    Hash,
    /// A key was given, yet the record is not keyed.
    #[error(
        "the chain is sha256 but an audit key was given: the record was not written with the key"
    )]
    Unkeyed,
    /// An event id seen before.
    #[error("event {id} ({kind}) repeats record {first}")]
    DuplicateEvent {
        /// The event id.
        id: String,
        /// Its type.
        kind: String,
        /// The record that has it first.
        first: u64,
    },
    /// A causation id that names no earlier record.
    #[error("{kind} {id}: causationId {cause} names no earlier record")]
    Cause {
        /// The event's type.
        kind: String,
        /// The event's id.
        id: String,
        /// Its causation id.
        cause: String,
    },
    /// A stage's batch lacks events.
    #[error("stage `{stage}` batch {batch}: {missing} missing")]
    Saga {
        /// The stage.
        stage: String,
        /// The batch.
        batch: u64,
        /// The event types missing.
        missing: String,
    },
    /// A listed file's path leaves the output folder.
    #[error("{kind}: file {path} is not inside the output folder")]
    FilePath {
        /// The event's type.
        kind: String,
        /// The path.
        path: String,
    },
    /// A listed file is missing.
    #[error("{kind}: file {path} is missing")]
    FileMissing {
        /// The event's type.
        kind: String,
        /// The path.
        path: String,
    },
    /// A listed file's size differs.
    #[error("{kind}: file {path} has {found} bytes, {recorded} recorded (it was changed)")]
    FileSize {
        /// The event's type.
        kind: String,
        /// The path.
        path: String,
        /// Its size now.
        found: u64,
        /// Its size recorded.
        recorded: u64,
    },
    /// A listed file's SHA-256 differs.
    #[error("{kind}: file {path} does not match its recorded SHA-256 (it was changed)")]
    FileHash {
        /// The event's type.
        kind: String,
        /// The path.
        path: String,
    },
}

/// A verified log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// The first record's sequence number.
    pub first: u64,
    /// The chains used, in the order they appear.
    pub chains: Vec<ChainScheme>,
    /// Output files whose size and SHA-256 were checked (each counted once).
    pub files: u64,
    /// Batches a failed run compensated (`BatchCompensated` events).
    pub compensated: u64,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chains: Vec<&str> = self.chains.iter().map(|c| c.as_str()).collect();
        write!(f, "ok: {} records", self.records)?;
        if self.first != 0 {
            write!(f, " (from sequence {})", self.first)?;
        }
        write!(
            f,
            ", chain {}, {} files verified",
            chains.join(" then "),
            self.files
        )?;
        if self.compensated > 0 {
            write!(f, ", {} compensated batches", self.compensated)?;
        }
        Ok(())
    }
}

/// One file of an audit log, as read.
#[derive(Debug, Clone)]
pub struct LogFile {
    /// Its name in messages.
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// The files of an audit log: a JSON-lines file, or every `*.jsonl` file of a sink's folder.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// The files, by name.
    pub files: Vec<LogFile>,
}

impl AuditLog {
    /// Reads the log at `path` (a file, or a folder whose `*.jsonl` files are read).
    ///
    /// # Errors
    /// [`VerifyError::Kafka`] for a `kafka://` address, [`VerifyError::Io`].
    pub fn read(path: &Path) -> Result<Self, VerifyError> {
        if path.to_string_lossy().starts_with("kafka://") {
            return Err(VerifyError::Kafka(path.display().to_string()));
        }
        let io = |error| VerifyError::Io {
            path: path.to_owned(),
            error,
        };
        let mut names = Vec::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                if p.is_file() && p.extension().is_some_and(|e| e == "jsonl") {
                    names.push(p);
                }
            }
            names.sort();
        } else {
            names.push(path.to_owned());
        }
        let mut files = Vec::with_capacity(names.len());
        for p in names {
            let bytes = std::fs::read(&p).map_err(|error| VerifyError::Io {
                path: p.clone(),
                error,
            })?;
            files.push(LogFile {
                name: p.display().to_string(),
                bytes,
            });
        }
        Ok(Self { files })
    }

    /// Verifies the log: its first problem, or what was checked. Files the closing events list
    /// are looked up in `out`.
    ///
    /// # Errors
    /// [`VerifyError::Invalid`] with the first problem; [`VerifyError::KeyNeeded`] for keyed
    /// records without `key`; [`VerifyError::Empty`].
    pub fn verify(
        &self,
        key: Option<&AuditKey>,
        out: &OutputFolder,
    ) -> Result<Verified, VerifyError> {
        Verifier::new(key, out).run(self)
    }
}

/// The output folder a log's files are looked up in; each file is read once.
#[derive(Debug)]
pub struct OutputFolder {
    root: PathBuf,
    seen: std::cell::RefCell<BTreeMap<String, Option<(u64, String)>>>,
}

impl OutputFolder {
    /// The folder at `root`.
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            seen: std::cell::RefCell::default(),
        }
    }

    /// The folder of the job that wrote the audit log at `path`: the parent of the sink's
    /// folder.
    #[must_use]
    pub fn of_log(path: &Path) -> Self {
        let dir = if path.is_dir() {
            Some(path)
        } else {
            path.parent()
        };
        let root = dir
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("."), Path::to_owned);
        let root = if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root
        };
        Self::new(root)
    }

    /// Size and SHA-256 of `path` in the folder, `None` if it cannot be read.
    fn digest(&self, path: &str) -> Option<(u64, String)> {
        if let Some(d) = self.seen.borrow().get(path) {
            return d.clone();
        }
        let d = file_digest(&self.root.join(path)).ok();
        self.seen.borrow_mut().insert(path.to_owned(), d.clone());
        d
    }
}

/// Options of [`verify`].
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// The audit key, for keyed records.
    pub key: Option<AuditKey>,
    /// The output folder the listed files are in (default: the parent of the log's folder).
    pub out: Option<PathBuf>,
}

/// Verifies the audit log at `path` (a JSON-lines file or a sink's folder).
///
/// # Errors
/// See [`AuditLog::read`] and [`AuditLog::verify`].
pub fn verify(path: &Path, options: &VerifyOptions) -> Result<Verified, VerifyError> {
    let log = AuditLog::read(path)?;
    let out = options
        .out
        .clone()
        .map_or_else(|| OutputFolder::of_log(path), OutputFolder::new);
    match log.verify(options.key.as_ref(), &out) {
        Err(VerifyError::Empty { .. }) => Err(VerifyError::Empty {
            path: path.to_owned(),
        }),
        other => other,
    }
}

const FIELDS: [&str; 6] = [
    "chain",
    "event",
    "hash",
    "prevHash",
    "recordedAt",
    "sequence",
];

/// A record's place: for messages.
struct At<'a> {
    file: &'a str,
    line: usize,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A saga (a stage's batch) seen in the log.
#[derive(Clone)]
struct SagaSeen {
    first: u64,
    at: String,
    role: SagaRole,
    stage: String,
    batch: u64,
    kinds: BTreeSet<DomainEventType>,
}

/// A verification in progress: records are checked one at a time, in the trail's order
/// ([`Verifier::line`]), then the checks that need the whole trail ([`Verifier::finish`]).
/// [`AuditLog::verify`] runs one over a log's files.
#[derive(Clone)]
pub struct Verifier<'a> {
    key: Option<&'a AuditKey>,
    out: &'a OutputFolder,
    /// The previous record: its sequence and hash.
    previous: Option<(u64, String)>,
    first: u64,
    records: u64,
    chains: Vec<ChainScheme>,
    /// The files checked.
    files: BTreeSet<String>,
    /// Event ids seen, with their record.
    ids: BTreeMap<String, u64>,
    /// Causation ids of other events not (yet) seen: checked once every id is known.
    later: Vec<(u64, String, Problem)>,
    /// Per (correlation id, stage): the saga's events.
    sagas: BTreeMap<(String, String), SagaSeen>,
    /// `BatchCompensated` events seen.
    compensated: u64,
}

fn saga_kind(name: &str) -> Option<(DomainEventType, SagaRole)> {
    let kind = DomainEventType::ALL
        .into_iter()
        .find(|k| k.as_str() == name)?;
    let role = [
        SagaRole::Ingestion,
        SagaRole::Anonymization,
        SagaRole::Canonization,
    ]
    .into_iter()
    .find(|r| {
        let (opening, closing) = r.events();
        closing == kind || opening.contains(&kind)
    })?;
    Some((kind, role))
}

impl<'a> Verifier<'a> {
    /// A verification with `key` (for keyed records), looking the listed files up in `out`.
    #[must_use]
    pub fn new(key: Option<&'a AuditKey>, out: &'a OutputFolder) -> Self {
        Self {
            key,
            out,
            previous: None,
            first: 0,
            records: 0,
            chains: Vec::new(),
            files: BTreeSet::new(),
            ids: BTreeMap::new(),
            later: Vec::new(),
            sagas: BTreeMap::new(),
            compensated: 0,
        }
    }

    fn run(mut self, log: &AuditLog) -> Result<Verified, VerifyError> {
        // Files in the order of their first record's sequence (the names follow the times
        // written, which a resumed run may start again).
        let mut files: Vec<(Option<u64>, &LogFile)> = log
            .files
            .iter()
            .map(|f| (first_sequence(&f.bytes), f))
            .collect();
        files.sort_by_key(|(s, _)| *s);
        for (_, file) in files {
            let mut lines: Vec<&[u8]> = file.bytes.split(|b| *b == b'\n').collect();
            // The last line ends with a line break: what follows it is empty.
            let last = lines.pop();
            for (i, line) in lines.into_iter().enumerate() {
                self.line(line, &file.name, i + 1)?;
            }
            if let Some(rest) = last.filter(|r| !r.is_empty()) {
                let at = At {
                    file: &file.name,
                    line: file.bytes.iter().filter(|b| **b == b'\n').count() + 1,
                };
                return Err(invalid(
                    self.expected(),
                    &at,
                    if std::str::from_utf8(rest).is_ok() {
                        Problem::NotJson("the last line does not end with a line break".to_owned())
                    } else {
                        Problem::NotUtf8
                    },
                ));
            }
        }
        self.finish()
    }

    /// Checks the next record of the trail: `line` (without its line break), line `number` of
    /// `file`.
    ///
    /// # Errors
    /// The record's problem.
    pub fn line(&mut self, line: &[u8], file: &str, number: usize) -> Result<(), VerifyError> {
        self.record(line, &At { file, line: number })
    }

    fn expected(&self) -> u64 {
        self.previous.as_ref().map_or(0, |(s, _)| s + 1)
    }

    fn record(&mut self, line: &[u8], at: &At<'_>) -> Result<(), VerifyError> {
        let expected = self.expected();
        let bad = |problem| invalid(expected, at, problem);
        let text = std::str::from_utf8(line).map_err(|_| bad(Problem::NotUtf8))?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(Problem::NotJson(e.to_string())))?;
        let Value::Object(map) = &value else {
            return Err(bad(Problem::NotJson("not an object".to_owned())));
        };
        let sequence = map
            .get("sequence")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad(Problem::Field("sequence")))?;
        let bad = |problem| invalid(sequence, at, problem);
        if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(Problem::Unexpected(k.clone())));
        }
        let field = |name: &'static str| map.get(name).ok_or_else(|| bad(Problem::Field(name)));
        let string = |name: &'static str| {
            field(name)?
                .as_str()
                .ok_or_else(|| bad(Problem::Field(name)))
        };
        let recorded_at = field("recordedAt")?;
        if !recorded_at.is_string() {
            return Err(bad(Problem::Field("recordedAt")));
        }
        let event = field("event")?;
        let prev_hash = string("prevHash")?;
        let hash = string("hash")?;
        let chain = match string("chain")? {
            "sha256" => ChainScheme::Sha256,
            "hmac-sha256" => ChainScheme::HmacSha256,
            other => return Err(bad(Problem::UnknownChain(other.to_owned()))),
        };
        // The line as the audit stage writes it: anything else was edited.
        let event_form = canonical_json(event);
        let recorded_form = canonical_json(recorded_at);
        let line_form = record_form(
            chain,
            &event_form,
            &recorded_form,
            sequence,
            Some((prev_hash, hash)),
        );
        if line_form != text {
            return Err(bad(Problem::NotCanonical));
        }
        // Order and links.
        match &self.previous {
            None => {
                self.first = sequence;
                if sequence == 0 && prev_hash != GENESIS {
                    return Err(bad(Problem::Genesis));
                }
            }
            Some((previous, previous_hash)) => {
                let previous = *previous;
                if sequence <= previous {
                    return Err(bad(Problem::Repeated {
                        found: sequence,
                        previous,
                    }));
                }
                if sequence > previous + 1 {
                    return Err(bad(Problem::Gap {
                        found: sequence,
                        previous,
                    }));
                }
                if prev_hash != previous_hash {
                    return Err(bad(Problem::Link));
                }
            }
        }
        // The hash.
        let key = match (chain, self.key) {
            (ChainScheme::HmacSha256, None) => {
                return Err(VerifyError::KeyNeeded { record: sequence });
            }
            (ChainScheme::HmacSha256, Some(key)) => Some(key),
            (ChainScheme::Sha256, Some(_)) => return Err(bad(Problem::Unkeyed)),
            (ChainScheme::Sha256, None) => None,
        };
        let canonical = record_form(chain, &event_form, &recorded_form, sequence, None);
        if record_hash(key, prev_hash, &canonical) != hash {
            return Err(bad(Problem::Hash));
        }
        if self.chains.last() != Some(&chain) {
            self.chains.push(chain);
        }
        self.event(sequence, event, at)?;
        self.previous = Some((sequence, hash.to_owned()));
        self.records += 1;
        Ok(())
    }

    /// The event's checks: ids, causation, saga, files.
    fn event(&mut self, sequence: u64, event: &Value, at: &At<'_>) -> Result<(), VerifyError> {
        let bad = |problem| invalid(sequence, at, problem);
        let metadata = &event["metadata"];
        let payload = &event["payload"];
        let (Some(id), Some(kind)) = (metadata["eventId"].as_str(), metadata["eventType"].as_str())
        else {
            return Err(bad(Problem::Field("event.metadata")));
        };
        let cause = metadata["causationId"].as_str();
        let saga = saga_kind(kind);
        if let Some(first) = self.ids.get(id)
            && saga.is_some()
        {
            return Err(bad(Problem::DuplicateEvent {
                id: id.to_owned(),
                kind: kind.to_owned(),
                first: *first,
            }));
        }
        if let Some(cause) = cause
            && !self.ids.contains_key(cause)
        {
            let problem = Problem::Cause {
                kind: kind.to_owned(),
                id: id.to_owned(),
                cause: cause.to_owned(),
            };
            if saga.is_some() {
                return Err(bad(problem));
            }
            self.later.push((sequence, at.to_string(), problem));
        }
        self.ids.entry(id.to_owned()).or_insert(sequence);
        if kind == BATCH_COMPENSATED {
            // It names its batch and stage, and what was undone.
            if metadata["correlationId"].as_str().is_none()
                || payload["stage"].as_str().is_none()
                || payload["batch"].as_u64().is_none()
                || !payload["detail"]["undone"].is_object()
            {
                return Err(bad(Problem::Field("event.payload")));
            }
            self.compensated += 1;
        }
        if let Some((kind, role)) = saga {
            let (Some(correlation), Some(stage), Some(batch)) = (
                metadata["correlationId"].as_str(),
                payload["stage"].as_str(),
                payload["batch"].as_u64(),
            ) else {
                return Err(bad(Problem::Field("event.payload")));
            };
            let seen = self
                .sagas
                .entry((correlation.to_owned(), stage.to_owned()))
                .or_insert_with(|| SagaSeen {
                    first: sequence,
                    at: at.to_string(),
                    role,
                    stage: stage.to_owned(),
                    batch,
                    kinds: BTreeSet::new(),
                });
            seen.kinds.insert(kind);
        }
        let listed = match payload.get("files") {
            None => Vec::new(),
            Some(files) => serde_json::from_value::<Vec<FileDigest>>(files.clone())
                .map_err(|_| bad(Problem::Field("event.payload.files")))?,
        };
        for f in listed {
            self.file(kind, &f).map_err(bad)?;
            self.files.insert(f.path);
        }
        Ok(())
    }

    fn file(&self, kind: &str, f: &FileDigest) -> Result<(), Problem> {
        let path = Path::new(&f.path);
        if f.path.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Problem::FilePath {
                kind: kind.to_owned(),
                path: f.path.clone(),
            });
        }
        let Some((bytes, sha256)) = self.out.digest(&f.path) else {
            return Err(Problem::FileMissing {
                kind: kind.to_owned(),
                path: f.path.clone(),
            });
        };
        if bytes != f.bytes {
            return Err(Problem::FileSize {
                kind: kind.to_owned(),
                path: f.path.clone(),
                found: bytes,
                recorded: f.bytes,
            });
        }
        if sha256 != f.sha256 {
            return Err(Problem::FileHash {
                kind: kind.to_owned(),
                path: f.path.clone(),
            });
        }
        Ok(())
    }

    /// The checks that need the whole log: causation ids naming later records, complete sagas.
    /// The problem of the lowest record is reported.
    ///
    /// # Errors
    /// The problem of the lowest record, [`VerifyError::Empty`] if no record was checked.
    pub fn finish(self) -> Result<Verified, VerifyError> {
        if self.records == 0 {
            return Err(VerifyError::Empty {
                path: PathBuf::new(),
            });
        }
        let mut problems: Vec<(u64, String, Problem)> = Vec::new();
        for (record, at, problem) in self.later {
            if let Problem::Cause { cause, .. } = &problem
                && self.ids.contains_key(cause)
            {
                problems.push((record, at, problem));
            }
        }
        for seen in self.sagas.into_values() {
            let (opening, closing) = seen.role.events();
            let missing: Vec<&str> = opening
                .iter()
                .chain(std::iter::once(&closing))
                .filter(|k| !seen.kinds.contains(k))
                .map(|k| k.as_str())
                .collect();
            if !missing.is_empty() {
                problems.push((
                    seen.first,
                    seen.at,
                    Problem::Saga {
                        stage: seen.stage,
                        batch: seen.batch,
                        missing: missing.join(", "),
                    },
                ));
            }
        }
        if let Some((record, at, problem)) = problems.into_iter().min_by_key(|(r, _, _)| *r) {
            return Err(VerifyError::Invalid {
                record,
                at,
                problem,
            });
        }
        Ok(Verified {
            records: self.records,
            first: self.first,
            chains: self.chains,
            files: self.files.len() as u64,
            compensated: self.compensated,
        })
    }
}

fn invalid(record: u64, at: &At<'_>, problem: Problem) -> VerifyError {
    VerifyError::Invalid {
        record,
        at: at.to_string(),
        problem,
    }
}

/// The sequence of a file's first record, if it can be read.
fn first_sequence(bytes: &[u8]) -> Option<u64> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    #[derive(Deserialize)]
    struct Sequence {
        sequence: u64,
    }
    serde_json::from_slice::<Sequence>(line)
        .ok()
        .map(|s| s.sequence)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        // Key "Jefe", data "what do ya want for nothing?".
        let key = AuditKey(HmacSha256::new_from_slice(b"Jefe").unwrap());
        assert_eq!(
            hex(&key.mac(&[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": [{"z": 1, "a": "é\n"}], "a": null, "c": 1.5});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":null,"b":[{"a":"é\n","z":1}],"c":1.5}"#
        );
    }

    #[test]
    fn audit_keys_are_never_ephemeral_and_never_shown() {
        assert!("ephemeral".parse::<AuditKeySource>().is_err());
        assert!("env:".parse::<AuditKeySource>().is_err());
        assert_eq!(
            "file:k.bin".parse::<AuditKeySource>(),
            Ok(AuditKeySource::File("k.bin".to_owned()))
        );
        let key = AuditKey::from_bytes(b"0123456789abcdef\n".to_vec()).unwrap();
        assert_eq!(format!("{key:?}"), "AuditKey(<redacted>)");
        assert!(matches!(
            AuditKey::from_bytes(b"short".to_vec()),
            Err(AuditKeyError::TooShort { len: 5, .. })
        ));
    }
}
