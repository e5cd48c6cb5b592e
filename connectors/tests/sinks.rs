//! Parquet and JSON-lines sinks.
#![allow(clippy::unwrap_used, clippy::float_cmp)]

use std::fs::{self, File};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMicrosecondType};
use arrow_array::{Array as _, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::NaiveDate;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use vitalflow_connectors::parquet::Partitioning;
use vitalflow_connectors::{
    JsonlFile, ParquetWriter, SinkError, dead_letter_json, observation_schema, patient_schema,
};
use vitalflow_model::canonical::{
    CanonicalResource, Columns, ObservationColumns, PatientColumns, ResourceType,
};
use vitalflow_model::{DeadLetter, RawFormat};

fn observation(i: i64, day: u32) -> CanonicalResource {
    let bp = i % 2 == 1;
    CanonicalResource {
        id: format!("obs-{i}"),
        patient: format!("pat-{}", i % 3),
        date: NaiveDate::from_ymd_opt(2026, 1, day).unwrap(),
        columns: Columns::Observation(ObservationColumns {
            code: if bp { "85354-9" } else { "8867-4" }.into(),
            display: "d".into(),
            value: (!bp).then_some(60.0 + i as f64),
            unit: if bp { "mm[Hg]" } else { "/min" }.into(),
            unit_ucum: true,
            category: "vital-signs".into(),
            status: "final".into(),
            value_text: None,
            interpretation: None,
            ref_low: None,
            ref_high: None,
            systolic: bp.then_some(120.0),
            diastolic: bp.then_some(80.0),
            effective_us: 1_767_225_600_000_000 + i * 60_000_000,
        }),
        resource: format!("{{\"resourceType\":\"Observation\",\"id\":\"obs-{i}\"}}"),
    }
}

fn patient(i: i32) -> CanonicalResource {
    CanonicalResource {
        id: format!("pat-{i}"),
        patient: format!("pat-{i}"),
        date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        columns: Columns::Patient(PatientColumns {
            gender: (i != 0).then(|| "female".into()),
            birth_year: (i != 2).then_some(1950 + i),
            age_group: (i == 2).then(|| "90 or older".into()),
            deceased: i == 1,
            state: Some("NH".into()),
            zip3: Some("000".into()),
            country: None,
        }),
        resource: format!("{{\"resourceType\":\"Patient\",\"id\":\"pat-{i}\"}}"),
    }
}

fn all_files(dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
}

fn first_batch(path: &Path) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder.build().unwrap().next().unwrap().unwrap()
}

/// Ten observations on 2026-01-01 (even) and 2026-01-02 (odd), then three patients.
fn two_days() -> Vec<CanonicalResource> {
    let mut rows: Vec<CanonicalResource> = (0..10)
        .map(|i| observation(i, 1 + (i % 2) as u32))
        .collect();
    rows.extend((0..3).map(patient));
    rows
}

#[test]
fn parquet_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("canonical");
    let rows = two_days();
    let mut w = ParquetWriter::new(root.clone(), Partitioning::Day);
    let files = w.write("e0000000003-w1", &rows).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[0].resource_type, ResourceType::Patient);
    assert!(
        files[0]
            .path
            .ends_with("Patient/date=2026-01-01/part-e0000000003-w1.parquet")
    );
    assert!(
        files[1]
            .path
            .ends_with("Observation/date=2026-01-01/part-e0000000003-w1.parquet")
    );
    assert!(
        files[2]
            .path
            .ends_with("Observation/date=2026-01-02/part-e0000000003-w1.parquet")
    );
    let mut listed = Vec::new();
    all_files(&root, &mut listed);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|f| !f.contains("inprogress")));

    // Observations of 2026-01-01: the even ones, heart rates.
    let f = &files[1];
    assert_eq!(f.rows, 5);
    assert_eq!(f.bytes, fs::metadata(&f.path).unwrap().len());
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&f.path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let reader = builder.build().unwrap();
    assert_eq!(
        schema.field_with_name("effective").unwrap().data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(schema.fields().len(), observation_schema().fields().len());
    for (a, b) in schema.fields().iter().zip(observation_schema().fields()) {
        assert_eq!(
            (a.name(), a.data_type(), a.is_nullable()),
            (b.name(), b.data_type(), b.is_nullable())
        );
        assert!(!a.metadata()["description"].is_empty());
    }
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let b = &batches[0];
    assert_eq!(b.num_rows(), 5);
    assert_eq!(b.column(0).as_string::<i32>().value(1), "obs-2");
    assert_eq!(b.column(4).as_primitive::<Float64Type>().value(1), 62.0);
    assert!(b.column(6).is_null(1));
    let eff = b.column(8).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(eff.value(0), 1_767_225_600_000_000);
    assert_eq!(eff.timezone(), Some("UTC"));

    let b = first_batch(&files[2].path);
    assert!(b.column(4).is_null(0));
    assert_eq!(b.column(6).as_primitive::<Float64Type>().value(0), 120.0);

    let b = first_batch(&files[0].path);
    assert_eq!(b.schema().fields().len(), patient_schema().fields().len());
    assert_eq!(b.num_rows(), 3);
    assert!(b.column(1).is_null(0));
    assert!(b.column(2).is_null(2));
    assert_eq!(b.column(2).as_primitive::<Int32Type>().value(1), 1951);
    assert_eq!(b.column(3).as_string::<i32>().value(2), "90 or older");
    assert!(b.column(4).as_boolean().value(1));
    assert!(b.column(7).is_null(0));

    // Rewriting with the same tag replaces the files; a bad tag is refused.
    let again = w.write("e0000000003-w1", &rows).unwrap();
    assert_eq!(
        again.iter().map(|f| &f.path).collect::<Vec<_>>(),
        files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
    assert!(matches!(
        w.write("../x", &rows),
        Err(SinkError::InvalidName(_))
    ));
    assert!(w.write("e1", &[]).unwrap().is_empty());
}

#[test]
fn monthly_folders_hold_every_day_of_their_month() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("canonical");
    let rows = two_days();
    let mut w = ParquetWriter::new(root.clone(), Partitioning::default());
    let files = w.write("e7-w0", &rows).unwrap();
    let found: Vec<(String, u64)> = files
        .iter()
        .map(|f| {
            let rel = f.path.strip_prefix(&root).unwrap();
            (rel.to_string_lossy().into_owned(), f.rows)
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("Patient/month=2026-01/part-e7-w0.parquet".to_owned(), 3),
            (
                "Observation/month=2026-01/part-e7-w0.parquet".to_owned(),
                10
            ),
        ]
    );
    let mut listed = Vec::new();
    all_files(&root, &mut listed);
    assert_eq!(listed.len(), 2, "{listed:?}");
    // Both days in the one file, in the order written.
    let b = first_batch(&files[1].path);
    let ids = b.column(0).as_string::<i32>();
    assert_eq!(
        ids.iter().map(Option::unwrap).collect::<Vec<_>>(),
        (0..10).map(|i| format!("obs-{i}")).collect::<Vec<_>>()
    );
}

/// More rows than one Arrow batch, interleaved over two months: every file holds its rows in
/// the order written, each row's values in their own columns.
#[test]
fn rows_keep_their_order_and_values_across_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("canonical");
    let n = 3 * vitalflow_connectors::parquet::BATCH_ROWS as i64 + 7;
    let rows: Vec<CanonicalResource> = (0..n)
        .map(|i| {
            let mut row = observation(i, 1);
            if i % 3 == 0 {
                row.date = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
            }
            row
        })
        .collect();
    let files = ParquetWriter::new(root, Partitioning::Month)
        .write("e1-w0", &rows)
        .unwrap();
    assert_eq!(files.len(), 2);
    for (file, month) in files.iter().zip([1, 2]) {
        let expected: Vec<&CanonicalResource> = rows
            .iter()
            .filter(|r| r.date.format("%m").to_string() == format!("{month:02}"))
            .collect();
        assert_eq!(file.rows, expected.len() as u64);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file.path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut seen = 0;
        for batch in reader.map(Result::unwrap) {
            let id = batch.column(0).as_string::<i32>();
            let code = batch.column(2).as_string::<i32>();
            let value = batch.column(4).as_primitive::<Float64Type>();
            let unit = batch.column(5).as_string::<i32>();
            let systolic = batch.column(6).as_primitive::<Float64Type>();
            let column = |name| batch.column_by_name(name).unwrap();
            let resource = column("resource").as_string::<i32>();
            let category = column("category").as_string::<i32>();
            let unit_ucum = column("unit_ucum").as_boolean();
            for i in 0..batch.num_rows() {
                let row = expected[seen];
                let Columns::Observation(o) = &row.columns else {
                    panic!("not an observation")
                };
                assert_eq!(id.value(i), row.id);
                assert_eq!(code.value(i), o.code);
                assert_eq!(unit.value(i), o.unit);
                assert_eq!(value.is_null(i), o.value.is_none());
                assert_eq!(systolic.is_null(i), o.systolic.is_none());
                assert_eq!(resource.value(i), row.resource);
                assert_eq!(category.value(i), o.category);
                assert_eq!(unit_ucum.value(i), o.unit_ucum);
                seen += 1;
            }
        }
        assert_eq!(seen, expected.len());
    }
}

/// Every row has its own id and FHIR JSON: those columns are written without a dictionary, and
/// the JSON without statistics; the others keep both.
#[test]
fn unique_columns_have_no_dictionary() {
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let rows: Vec<CanonicalResource> = (0..50).map(|i| observation(i, 1)).collect();
    let files = ParquetWriter::new(tmp.path().join("canonical"), Partitioning::Month)
        .write("e1-w0", &rows)
        .unwrap();
    let reader = SerializedFileReader::new(File::open(&files[0].path).unwrap()).unwrap();
    let group = reader.metadata().row_group(0);
    let column = |name: &str| {
        (0..group.num_columns())
            .map(|i| group.column(i))
            .find(|c| c.column_path().string() == name)
            .unwrap()
    };
    let dictionary = |name: &str| {
        column(name)
            .encodings()
            .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
    };
    assert!(!dictionary("id"));
    assert!(!dictionary("resource"));
    assert!(dictionary("patient"));
    assert!(dictionary("code"));
    assert!(column("resource").statistics().is_none());
    assert!(column("effective").statistics().is_some());
    assert!(column("id").statistics().is_some());
}

#[test]
fn jsonl_commit_and_permissions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dead-letter");
    let mut f = JsonlFile::create(&dir, "batch-1.jsonl", true).unwrap();
    assert!(dir.join("batch-1.jsonl.inprogress").exists());
    let ok = DeadLetter {
        stage: "ingest".into(),
        source: "files".into(),
        location: "a.ndjson:3".into(),
        format: RawFormat::Envelope,
        reason: "missing field `payload`".into(),
        bytes: b"{\"x\":1}".to_vec(),
    };
    let bad = DeadLetter {
        bytes: vec![0xff, 0x00, 0x41],
        format: RawFormat::VitalsCsv,
        ..ok.clone()
    };
    f.write_line(&dead_letter_json(&ok)).unwrap();
    f.write_line(&dead_letter_json(&bad)).unwrap();
    assert_eq!(f.lines(), 2);
    let path = f.commit().unwrap();
    assert_eq!(path, dir.join("batch-1.jsonl"));
    assert!(!dir.join("batch-1.jsonl.inprogress").exists());
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["raw"], "{\"x\":1}");
    assert_eq!(lines[0]["format"], "envelope");
    assert_eq!(lines[0]["location"], "a.ndjson:3");
    assert!(lines[0].get("rawBase64").is_none());
    assert_eq!(lines[1]["rawBase64"], "/wBB");
    assert_eq!(lines[1]["format"], "vitals-csv");
    assert!(lines[1].get("raw").is_none());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let public = tmp.path().join("audit");
    let mut f = JsonlFile::create(&public, "audit.jsonl", false).unwrap();
    f.write_line(&serde_json::json!({"n": 1})).unwrap();
    let p = f.commit().unwrap();
    assert_eq!(fs::read_to_string(p).unwrap(), "{\"n\":1}\n");
    assert!(matches!(
        JsonlFile::create(&public, "a/b", false),
        Err(SinkError::InvalidName(_))
    ));
}
