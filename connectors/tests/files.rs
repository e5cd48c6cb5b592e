//! File sources: fixtures made here, and the shared sample data when present.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use vitalflow_connectors::files::hl7_messages;
use vitalflow_connectors::{FileError, FileFormat, FileSource};
use vitalflow_model::{RawFormat, RawRecord};

fn read(path: &Path, format: FileFormat) -> Vec<RawRecord> {
    let src = FileSource {
        name: "in".into(),
        path: path.to_path_buf(),
        format,
    };
    let mut out = Vec::new();
    let n = src.read(|r| out.push(r)).unwrap();
    assert_eq!(n, out.len() as u64);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.sequence, i as u64, "dense sequence");
        assert_eq!(r.source, "in");
    }
    out
}

fn loc(r: &RawRecord) -> String {
    let (path, line) = r.location.rsplit_once(':').unwrap();
    let name = Path::new(path).file_name().unwrap().to_string_lossy();
    format!("{name}:{line}")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn envelope_ndjson_and_json_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut a = b"\xEF\xBB\xBF{\"n\":1}\r\n\n   \n{\"n\":2}\n".to_vec();
    a.extend_from_slice(b"{\"bad\":\"\xFF\xFE\"}\n{\"n\":3}");
    write(d, "a.ndjson", &a);
    write(d, "b.jsonl", b"{\"n\":4}\n");
    write(d, "c.json", b"\n{\n  \"n\": 5\n}\n");
    write(d, "README.md", b"{\"no\":1}\n");
    write(d, "LICENSE", b"{\"no\":2}\n");
    write(d, ".hidden.ndjson", b"{\"no\":3}\n");
    write(d, "notes.txt", b"{\"no\":4}\n");
    write(d, "empty.ndjson", b"\n\n");
    fs::create_dir(d.join("sub.ndjson")).unwrap();
    write(&d.join("sub.ndjson"), "x.ndjson", b"{\"no\":5}\n");

    let recs = read(d, FileFormat::Envelope);
    let got: Vec<(String, Vec<u8>)> = recs.iter().map(|r| (loc(r), r.bytes.clone())).collect();
    let want: Vec<(String, Vec<u8>)> = vec![
        ("a.ndjson:1".into(), b"{\"n\":1}".to_vec()),
        ("a.ndjson:4".into(), b"{\"n\":2}".to_vec()),
        ("a.ndjson:5".into(), b"{\"bad\":\"\xFF\xFE\"}".to_vec()),
        ("a.ndjson:6".into(), b"{\"n\":3}".to_vec()),
        ("b.jsonl:1".into(), b"{\"n\":4}".to_vec()),
        ("c.json:2".into(), b"\n{\n  \"n\": 5\n}\n".to_vec()),
    ];
    assert_eq!(got, want);
    assert!(
        recs.iter()
            .all(|r| r.format == RawFormat::Envelope && r.header.is_none())
    );

    // A single file is read as given.
    let one = read(&d.join("b.jsonl"), FileFormat::Envelope);
    assert_eq!(one.len(), 1);
}

#[test]
fn fhir_documents_and_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bundle = b"{\n \"resourceType\": \"Bundle\",\n \"entry\": []\n}\n";
    write(d, "1-bundle.json", bundle);
    write(
        d,
        "2-resources.ndjson",
        b"{\"resourceType\":\"Patient\"}\n{\"resourceType\":\"Observation\"}\n",
    );
    write(
        d,
        "3-lines.json",
        b"{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Patient\"}\n",
    );
    write(d, "4-broken.json", b"{\"resourceType\": \"Patient\",\n");
    let recs = read(d, FileFormat::Fhir);
    let got: Vec<String> = recs.iter().map(loc).collect();
    assert_eq!(
        got,
        [
            "1-bundle.json:1",
            "2-resources.ndjson:1",
            "2-resources.ndjson:2",
            "3-lines.json:1",
            "3-lines.json:3",
            "4-broken.json:1"
        ]
    );
    assert_eq!(recs[0].bytes, bundle);
    assert!(recs.iter().all(|r| r.format == RawFormat::Fhir));
}

#[test]
fn vitals_csv_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut csv = b"\xEF\xBB\xBFtime, HR ,SpO2\r\n2026-01-01T00:00:00Z,72,98\r\n\r\n".to_vec();
    csv.extend_from_slice(b"2026-01-01T00:01:00Z,\"7,3\",97\n2026-01-01T00:02:00Z,70\n");
    csv.extend_from_slice(b"2026-01-01T00:03:00Z,\xFF,96\n\"multi\nline\",1,2\n");
    write(d, "p1.csv", &csv);
    write(d, "p1.json", b"{}");
    let recs = read(
        d,
        FileFormat::VitalsCsv {
            patient_id: "P000000001".into(),
        },
    );
    let header = vec!["time".to_owned(), "HR".to_owned(), "SpO2".to_owned()];
    for r in &recs {
        assert_eq!(r.header.as_ref(), Some(&header));
        assert_eq!(r.context.as_deref(), Some("P000000001"));
        assert_eq!(r.format, RawFormat::VitalsCsv);
    }
    let got: Vec<(String, Vec<u8>)> = recs.iter().map(|r| (loc(r), r.bytes.clone())).collect();
    let want: Vec<(String, Vec<u8>)> = vec![
        ("p1.csv:2".into(), b"2026-01-01T00:00:00Z,72,98".to_vec()),
        (
            "p1.csv:4".into(),
            b"2026-01-01T00:01:00Z,\"7,3\",97".to_vec(),
        ),
        ("p1.csv:5".into(), b"2026-01-01T00:02:00Z,70".to_vec()),
        ("p1.csv:6".into(), b"2026-01-01T00:03:00Z,\xFF,96".to_vec()),
        ("p1.csv:7".into(), b"\"multi\nline\",1,2".to_vec()),
    ];
    assert_eq!(got, want);
}

#[test]
fn hl7_one_message_per_file_and_errors_name_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "b.hl7", b"MSH|^~\\&|B\rPID|1\r");
    write(d, "a.hl7", b"MSH|^~\\&|A\rPID|1\r");
    write(d, "LICENSE.txt", b"MIT");
    let recs = read(d, FileFormat::Hl7v2);
    assert_eq!(
        recs.iter().map(loc).collect::<Vec<_>>(),
        ["a.hl7:1", "b.hl7:1"]
    );
    // With its final terminator: ingestion tells a message cut short by its absence.
    assert_eq!(recs[1].bytes, b"MSH|^~\\&|B\rPID|1\r");

    // A batch file: one record per message, the batch envelope left out, with its line.
    let batch =
        b"FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|1\nPID|1\n\nMSH|^~\\&|2\r\nPID|2\r\nBTS|2\nFTS|1\n";
    let msgs = hl7_messages(batch);
    assert_eq!(
        msgs,
        vec![
            (3, &b"MSH|^~\\&|1\nPID|1\n"[..]),
            (6, &b"MSH|^~\\&|2\r\nPID|2\r\n"[..])
        ]
    );
    // MLLP frames.
    let framed = b"\x0bMSH|^~\\&|1\rPID|1\r\x1c\r\x0bMSH|^~\\&|2\rPID|2\r\x1c\r";
    let msgs: Vec<&[u8]> = hl7_messages(framed).into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        msgs,
        vec![&b"MSH|^~\\&|1\rPID|1\r"[..], &b"MSH|^~\\&|2\rPID|2\r"[..]]
    );
    // Anything else is one record, for ingestion to dead-letter.
    assert_eq!(hl7_messages(b"garbage\n").len(), 1);
    assert!(hl7_messages(b" \n").is_empty());

    let missing = FileSource {
        name: "in".into(),
        path: d.join("nope"),
        format: FileFormat::Hl7v2,
    };
    let err = missing.read(|_| {}).unwrap_err();
    assert!(matches!(err, FileError::Io { .. }));
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn an_unterminated_csv_quote_is_one_record_and_reading_resumes_after_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut csv = b"id,note,hr\n1,\"two\nlines\",70\n2,\"never closed,71\n".to_vec();
    for i in 3..200 {
        csv.extend_from_slice(format!("{i},fine,{}\n", 60 + i % 40).as_bytes());
    }
    // Near the end of the file, an opening quote with too few lines left to close it.
    csv.extend_from_slice(b"200,\"open at the end,72\n201,last,73\n");
    write(d, "rows.csv", &csv);
    let recs = read(d, FileFormat::Csv { header: true });
    let got: Vec<(String, Vec<u8>)> = recs.iter().map(|r| (loc(r), r.bytes.clone())).collect();
    assert_eq!(got.len(), 201, "{:?}", &got[..3]);
    assert_eq!(
        got[0],
        ("rows.csv:2".into(), b"1,\"two\nlines\",70".to_vec())
    );
    // The line with the opening quote, as it stands, for ingestion to dead-letter.
    assert_eq!(
        got[1],
        ("rows.csv:4".into(), b"2,\"never closed,71".to_vec())
    );
    for (i, (at, bytes)) in got[2..199].iter().enumerate() {
        let n = i + 3;
        assert_eq!(*at, format!("rows.csv:{}", n + 2));
        assert_eq!(*bytes, format!("{n},fine,{}", 60 + n % 40).into_bytes());
    }
    assert_eq!(
        got[199],
        ("rows.csv:202".into(), b"200,\"open at the end,72".to_vec())
    );
    assert_eq!(got[200], ("rows.csv:203".into(), b"201,last,73".to_vec()));
}

#[test]
fn every_file_is_counted_empty_ones_too() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "a.hl7", b"MSH|^~\\&|A\rPID|1\r");
    write(d, "b.hl7", b"");
    write(d, "c.hl7", b"\r\n");
    let src = FileSource {
        name: "in".into(),
        path: d.to_path_buf(),
        format: FileFormat::Hl7v2,
    };
    let mut files = Vec::new();
    let n = src
        .read_counting(
            |path, records| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                files.push((name, records));
            },
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        files,
        [
            ("a.hl7".into(), 1),
            ("b.hl7".into(), 0),
            ("c.hl7".into(), 0)
        ]
    );
}

/// `emit` answering `Break` stops the reading in every format: the record it was given and
/// everything after are not taken, the file being read is counted with what was taken from it,
/// and the files after it are not read.
#[test]
fn reading_stops_when_emit_says_so() {
    type Record = fn(u32) -> String;
    let cases: [(FileFormat, &str, Record); 4] = [
        (FileFormat::Json, "jsonl", |i| format!("{{\"n\":{i}}}\n")),
        (FileFormat::Json, "json", |i| format!("{{\"n\":{i}}}\n")),
        (FileFormat::Csv { header: false }, "csv", |i| {
            format!("{i},x\n")
        }),
        (FileFormat::Hl7v2, "hl7", |i| {
            format!("MSH|^~\\&|A|{i}\rPID|1\r")
        }),
    ];
    for (format, ext, record) in cases {
        let tmp = tempfile::tempdir().unwrap();
        for (f, name) in ["a", "b", "c"].iter().enumerate() {
            let text: String = (0..4).map(|i| record(f as u32 * 4 + i)).collect();
            write(tmp.path(), &format!("{name}.{ext}"), text.as_bytes());
        }
        let src = FileSource {
            name: "in".into(),
            path: tmp.path().to_path_buf(),
            format,
        };
        let (mut files, mut taken, mut offered) = (Vec::new(), Vec::new(), 0);
        let n = src
            .read_counting(
                |path, records| {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    files.push((name, records));
                },
                |r| {
                    offered += 1;
                    if offered > 5 {
                        return ControlFlow::Break(());
                    }
                    taken.push(r.sequence);
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        assert_eq!(n, 5, "{ext}");
        assert_eq!(offered, 6, "{ext}: read on after a Break");
        assert_eq!(taken, [0, 1, 2, 3, 4], "{ext}");
        assert_eq!(
            files,
            [(format!("a.{ext}"), 4), (format!("b.{ext}"), 1)],
            "{ext}"
        );
    }
}

#[test]
fn hl7_messages_are_split_where_a_terminator_is_missing() {
    // Files joined end to end, the first without its final segment terminator.
    let joined = b"MSH|^~\\&|1\rPID|1MSH|^~\\&|2\rPID|2\r";
    assert_eq!(
        hl7_messages(joined),
        vec![
            (1, &b"MSH|^~\\&|1\rPID|1"[..]),
            (2, &b"MSH|^~\\&|2\rPID|2\r"[..])
        ]
    );
    // Another field separator glued to a segment is data, not a message.
    let text = b"MSH|^~\\&|1\rNTE|1||see MSH#^~\\&#\r";
    assert_eq!(hl7_messages(text).len(), 1);
    // An MLLP frame without its end block ends at the next frame's start, and keeps its start
    // block so that ingestion can tell it was cut short.
    let framed = b"\x0bMSH|^~\\&|1\rPID|1\r\x0bMSH|^~\\&|2\rPID|2\r\x1c\r\x0bMSH|^~\\&|3\rPI";
    let msgs: Vec<&[u8]> = hl7_messages(framed).into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        msgs,
        vec![
            &b"\x0bMSH|^~\\&|1\rPID|1\r"[..],
            &b"MSH|^~\\&|2\rPID|2\r"[..],
            &b"\x0bMSH|^~\\&|3\rPI"[..],
        ]
    );
}

/// The sample data, when every one of `parts` is in it; otherwise `None` after a loud message, or
/// a failure when `VITALFLOW_REQUIRE_SAMPLE_DATA` is set (CI), so that a partial copy cannot pass
/// unnoticed.
fn sample_data(parts: &[&str]) -> Option<PathBuf> {
    let dir = std::env::var_os("VITALFLOW_SAMPLE_DATA").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")),
        PathBuf::from,
    );
    let missing: Vec<String> = parts
        .iter()
        .map(|p| dir.join(p))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    let required = std::env::var_os("VITALFLOW_REQUIRE_SAMPLE_DATA")
        .is_some_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "VITALFLOW_REQUIRE_SAMPLE_DATA is set but the sample data lacks {missing:?}"
    );
    eprintln!("!!! SKIPPED: sample data not found: {missing:?} (set VITALFLOW_SAMPLE_DATA)");
    None
}

#[test]
fn reads_the_shared_sample_data() {
    let Some(data) = sample_data(&["vitals/s00001-numerics.csv", "fhir-r4", "hl7v2"]) else {
        return;
    };
    let vitals = read(
        &data.join("vitals/s00001-numerics.csv"),
        FileFormat::VitalsCsv {
            patient_id: "s00001".into(),
        },
    );
    assert_eq!(vitals.len(), 1936);
    assert_eq!(vitals[0].header.as_ref().unwrap()[2], "HR");
    assert!(vitals[0].location.ends_with("s00001-numerics.csv:2"));
    assert!(
        vitals
            .iter()
            .all(|r| r.bytes.split(|&b| b == b',').count() == 12)
    );

    let fhir = read(&data.join("fhir-r4"), FileFormat::Fhir);
    assert_eq!(fhir.len(), 4);
    for r in &fhir {
        let v: serde_json::Value = serde_json::from_slice(&r.bytes).unwrap();
        assert_eq!(v["resourceType"], "Bundle");
    }

    let hl7 = read(&data.join("hl7v2"), FileFormat::Hl7v2);
    assert_eq!(hl7.len(), 139);
    assert!(hl7.iter().all(|r| r.bytes.starts_with(b"MSH|")));
}
