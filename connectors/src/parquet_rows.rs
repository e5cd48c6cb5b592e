//! Parquet files of rows of a declared schema (the `parquet` sink of a row pipeline).
//!
//! Each [`RowParquetWriter::write`] commits one file `<dir>/part-<tag>.parquet` atomically, like
//! the canonical writer ([`crate::parquet`]): written as `.part-<tag>.parquet.inprogress`,
//! fsynced, renamed into place, and the folder fsynced. Same writer properties (Snappy, row
//! groups of at most [`crate::parquet::ROW_GROUP_ROWS`] rows).
//!
//! Column types: `boolean` → `Boolean`, `integer` → `Int64`, `float` → `Float64`,
//! `string` → `Utf8`, `timestamp` → `Timestamp(Millisecond, "UTC")`; a column is nullable when
//! its field is.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use vitalflow_model::row::{Field, Row, Schema, Type, Value};

use crate::parquet::{BATCH_ROWS, writer_properties};
use crate::{Pace, SinkError, check_name, create_dir_durable, sync_dir};

/// The Arrow type of a field type.
#[must_use]
pub fn arrow_type(ty: Type) -> DataType {
    match ty {
        Type::Bool => DataType::Boolean,
        Type::Int => DataType::Int64,
        Type::Float => DataType::Float64,
        Type::String => DataType::Utf8,
        Type::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
    }
}

/// The Arrow schema of rows of `schema`: one column per field, in order, named like the field,
/// nullable when the field is.
#[must_use]
pub fn arrow_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<arrow_schema::Field> = schema
        .fields
        .iter()
        .map(|f| arrow_schema::Field::new(&f.name, arrow_type(f.ty), f.nullable))
        .collect();
    Arc::new(arrow_schema::Schema::new(fields))
}

/// A Parquet file of rows the writer committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedRowFile {
    /// Final path of the file.
    pub path: PathBuf,
    /// Number of rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// Writes rows of one schema as Parquet files into one folder.
#[derive(Clone, Debug)]
pub struct RowParquetWriter {
    dir: PathBuf,
    schema: Schema,
    arrow: SchemaRef,
}

impl RowParquetWriter {
    /// A writer of rows of `schema` into `dir` (created on the first write).
    #[must_use]
    pub fn new(dir: PathBuf, schema: &Schema) -> Self {
        Self {
            dir,
            arrow: arrow_schema(schema),
            schema: schema.clone(),
        }
    }

    /// The folder the files go to.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Arrow schema of the files.
    #[must_use]
    pub const fn arrow_schema(&self) -> &SchemaRef {
        &self.arrow
    }

    /// Writes `rows`, in order, to `<dir>/part-<tag>.parquet`, committed atomically (see the
    /// module documentation); a file of an earlier write with the same tag is replaced. Returns
    /// the committed file, or nothing when `rows` is empty (no file is written).
    ///
    /// # Errors
    /// [`SinkError::InvalidName`] when `tag` is not a plain file-name fragment;
    /// [`SinkError::Arrow`] when a row does not fit the schema (a wrong number of values, a
    /// value of another type, a null in a non-nullable field: the message names the field and
    /// the row's sequence, never a value); other [`SinkError`]s on I/O or encoding errors. A
    /// failed file's `.inprogress` file is removed.
    pub fn write<'r>(
        &self,
        tag: &str,
        rows: impl IntoIterator<Item = &'r Row>,
    ) -> Result<Vec<CommittedRowFile>, SinkError> {
        self.write_paced(tag, rows, &mut Pace::none())
    }

    /// [`write`](Self::write), advancing `pace` after each Arrow batch encoded.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_paced<'r>(
        &self,
        tag: &str,
        rows: impl IntoIterator<Item = &'r Row>,
        pace: &mut Pace,
    ) -> Result<Vec<CommittedRowFile>, SinkError> {
        check_name(tag)?;
        let rows: Vec<&Row> = rows.into_iter().collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        create_dir_durable(&self.dir)?;
        let tmp = self.dir.join(format!(".part-{tag}.parquet.inprogress"));
        let path = self.dir.join(format!("part-{tag}.parquet"));
        if let Err(e) = self.write_file(&tmp, &rows, pace) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path).map_err(SinkError::io("rename", &tmp))?;
        sync_dir(&self.dir)?;
        let bytes = fs::metadata(&path)
            .map_err(SinkError::io("stat", &path))?
            .len();
        tracing::debug!(path = %path.display(), rows = rows.len(), bytes, "committed Parquet file");
        Ok(vec![CommittedRowFile {
            path,
            rows: rows.len() as u64,
            bytes,
        }])
    }

    /// Writes and fsyncs one file.
    fn write_file(&self, path: &Path, rows: &[&Row], pace: &mut Pace) -> Result<(), SinkError> {
        let arrow_err = |source| SinkError::Arrow {
            path: path.to_path_buf(),
            source,
        };
        let parquet_err = |source| SinkError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        // Check every row before creating the file.
        let width = self.schema.fields.len();
        if let Some(row) = rows.iter().find(|r| r.values.len() != width) {
            return Err(arrow_err(ArrowError::InvalidArgumentError(format!(
                "row #{} has {} values, but the schema has {width} fields",
                row.sequence,
                row.values.len()
            ))));
        }
        let file = File::create(path).map_err(SinkError::io("create", path))?;
        let mut writer = ArrowWriter::try_new(file, self.arrow.clone(), Some(writer_properties()))
            .map_err(parquet_err)?;
        for chunk in rows.chunks(pace.batch_rows(BATCH_ROWS)) {
            let batch = self.batch(chunk).map_err(arrow_err)?;
            writer.write(&batch).map_err(parquet_err)?;
            pace.advance(chunk.len());
        }
        let file = writer.into_inner().map_err(parquet_err)?;
        file.sync_all().map_err(SinkError::io("fsync", path))
    }

    /// An Arrow batch of `rows`, built column by column.
    fn batch(&self, rows: &[&Row]) -> Result<RecordBatch, ArrowError> {
        let columns = self
            .schema
            .fields
            .iter()
            .enumerate()
            .map(|(i, field)| column(i, field, rows))
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        RecordBatch::try_new(self.arrow.clone(), columns)
    }
}

/// Why a value cannot go into a column (names the field and row, never the value).
fn unfit(field: &Field, row: &Row, value: &Value) -> ArrowError {
    let reason = match value.ty() {
        None => "is null, but the field is not nullable".to_owned(),
        Some(t) => format!("holds a {t} value, but the field is {}", field.ty),
    };
    ArrowError::InvalidArgumentError(format!(
        "field `{}` of row #{} {reason}",
        field.name, row.sequence
    ))
}

/// The values of field `i` of `rows` as an Arrow array of its type.
fn column(i: usize, field: &Field, rows: &[&Row]) -> Result<ArrayRef, ArrowError> {
    let n = rows.len();
    // Every row was checked to have a value for every field.
    let values = rows
        .iter()
        .map(move |r| (r, r.values.get(i).unwrap_or(&Value::Null)));
    macro_rules! build {
        ($builder:expr, $($pattern:pat => $value:expr),+) => {{
            let mut b = $builder;
            for (row, v) in values {
                match v {
                    $($pattern => b.append_value($value),)+
                    Value::Null if field.nullable => b.append_null(),
                    other => return Err(unfit(field, row, other)),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match field.ty {
        Type::Bool => build!(BooleanBuilder::with_capacity(n), Value::Bool(x) => *x),
        Type::Int => build!(Int64Builder::with_capacity(n), Value::Int(x) => *x),
        // Integers are accepted in float columns: expressions may yield them.
        Type::Float => build!(
            Float64Builder::with_capacity(n),
            Value::Float(x) => *x,
            Value::Int(x) => *x as f64
        ),
        Type::String => {
            let bytes = rows
                .iter()
                .filter_map(|r| match r.values.get(i) {
                    Some(Value::Str(s)) => Some(s.len()),
                    _ => None,
                })
                .sum();
            build!(StringBuilder::with_capacity(n, bytes), Value::Str(x) => &**x)
        }
        Type::Timestamp => build!(
            TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
            Value::Timestamp(x) => *x
        ),
    })
}
