//! JSON-lines files committed atomically: written as `<name>.inprogress`, then flushed, fsynced
//! and renamed to `<name>` (dead letters, the audit trail, domain events).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use vitalflow_model::DeadLetter;

use crate::{SinkError, check_name, create_dir_durable, sync_dir};

/// A JSON-lines file being written.
#[derive(Debug)]
pub struct JsonlFile {
    dir: PathBuf,
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    lines: u64,
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
        Ok(())
    }

    /// Lines written so far.
    #[must_use]
    pub const fn lines(&self) -> u64 {
        self.lines
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
