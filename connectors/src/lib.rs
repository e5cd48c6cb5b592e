//! vitalflow's sources and sinks, as plain synchronous building blocks.
//!
//! The engine wraps these in dataflow operators; nothing here knows about timely.
//!
//! * [`generator`]: realistic synthetic clinical events, a pure function of `(seed, index)`;
//! * [`files`]: reads input files (envelope NDJSON, FHIR, vitals CSV, HL7 v2) into
//!   [`RawRecord`](vitalflow_model::RawRecord)s;
//! * [`parquet`]: the canonical sink's Parquet writer (Hive-partitioned, committed atomically);
//! * [`jsonl`]: JSON-lines files committed atomically (dead letters, audit trail, events);
//! * [`pace`]: spreading a sink write's work over time, so a roll does not take the workers' cores;
//! * [`kafka`]: Kafka clients (explicit partitions, delivery-tracking producer) and the embedded
//!   broker;
//! * [`mllp`]: the MLLP listener, HL7 acknowledgements and the durable log messages are stored
//!   in before they are acknowledged;
//! * [`notify`]: clinical delivery: identified notifications as HL7 v2 `ORU^R01` messages (sent
//!   over MLLP) and FHIR R4 `Communication` resources (posted over HTTPS).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

pub mod files;
pub mod generator;
pub mod jsonl;
pub mod kafka;
pub mod mllp;
pub mod notify;
pub mod pace;
pub mod parquet;
pub mod parquet_rows;

pub use files::{FileError, FileFormat, FileSource};
pub use generator::{Generator, GeneratorConfig};
pub use jsonl::{JsonlFile, dead_letter_json};
pub use pace::Pace;
pub use parquet::{
    CommittedFile, ParquetWriter, encounter_schema, observation_schema, patient_schema,
};

/// An error of a sink. Messages name the file involved (paths hold no PHI) but never the data.
#[derive(Debug, Error)]
pub enum SinkError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `rename`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The Parquet encoder failed.
    #[error("writing Parquet {}: {source}", path.display())]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The Parquet error.
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    /// An Arrow batch could not be built from the rows.
    #[error("building Arrow batch for {}: {source}", path.display())]
    Arrow {
        /// The file the batch was for.
        path: PathBuf,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A value could not be serialized to JSON.
    #[error("serializing a line of {}: {source}", path.display())]
    Json {
        /// The file being written.
        path: PathBuf,
        /// The serialization error.
        #[source]
        source: serde_json::Error,
    },
    /// A file name or tag given by the caller is empty or would escape its directory.
    #[error(
        "invalid file name or tag `{0}`: must be non-empty, without `/`, `\\` or a leading `.`"
    )]
    InvalidName(String),
}

impl SinkError {
    pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks that a caller-given file name or tag stays inside its directory.
pub(crate) fn check_name(name: &str) -> Result<(), SinkError> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.contains("..")
    {
        return Err(SinkError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Makes everything written to the filesystem holding `path` durable with one `syncfs` (Linux):
/// new files, their folders and renames. For a commit of many files this replaces an fsync per
/// file and per folder. Elsewhere, `files` and their folders are fsynced one by one.
pub fn sync_filesystem(path: &Path, files: &[PathBuf]) -> Result<(), SinkError> {
    #[cfg(target_os = "linux")]
    {
        let _ = files;
        let dir = File::open(path).map_err(SinkError::io("open", path))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| SinkError::io("syncfs", path)(std::io::Error::from(e)))?;
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        for f in files {
            File::open(f)
                .and_then(|f| f.sync_all())
                .map_err(SinkError::io("fsync", f))?;
            if let Some(dir) = f.parent() {
                sync_dir(dir)?;
            }
        }
    }
    Ok(())
}

/// Fsyncs a directory so that a rename or a new entry in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    // Directories can only be opened (and synced) this way on Unix.
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(SinkError::io("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` and its missing parents, fsyncing the parent of every directory it created.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), SinkError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(SinkError::io("create directory", dir))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}
