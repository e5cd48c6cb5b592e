//! A file source read by several readers (`FileSource::read_share`): together the readers make
//! exactly the records one reader makes, each with the same sequence, location, header and
//! bytes, and count every file once with its number of records, for every format and for the
//! cases where numbering records is easy to get wrong (blank and whitespace lines, CRLF, a last
//! line without its line break, byte order marks, empty files, CSV headers, quoted CSV fields
//! over several lines, quotes that never close, HL7 batch files and MLLP frames, JSON
//! documents).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use vitalflow_connectors::FileFormat;
use vitalflow_connectors::files::{FileSource, Share};
use vitalflow_model::RawRecord;

fn source(path: &Path, format: FileFormat) -> FileSource {
    FileSource {
        name: "in".into(),
        path: path.to_path_buf(),
        format,
    }
}

/// What one reader of `readers` makes: its records, and the files it counted with theirs.
fn read_share(
    src: &FileSource,
    reader: u64,
    readers: u64,
) -> (Vec<RawRecord>, Vec<(PathBuf, u64)>) {
    let files = src.files().unwrap();
    let (mut records, mut counted) = (Vec::new(), Vec::new());
    let taken = src
        .read_share(
            &files,
            Share { reader, readers },
            |path, n| counted.push((path.to_path_buf(), n)),
            |r| {
                records.push(r);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(taken, records.len() as u64, "reader {reader} of {readers}");
    (records, counted)
}

/// Reads `src` whole and as 2, 3, 4 and 7 readers: every reader makes the records of its
/// sequences only, and together they make what one reader makes and count what it counts.
/// The whole read's records.
fn same_as_one_reader(src: &FileSource) -> Vec<RawRecord> {
    let (whole, whole_files) = read_share(src, 0, 1);
    for (i, r) in whole.iter().enumerate() {
        assert_eq!(r.sequence, i as u64, "dense sequence");
    }
    let mut whole_counts: Vec<(PathBuf, u64)> = whole_files.clone();
    whole_counts.sort();
    for readers in [2, 3, 4, 7] {
        let mut records = Vec::new();
        let mut counted = Vec::new();
        for reader in 0..readers {
            let (mine, files) = read_share(src, reader, readers);
            for r in &mine {
                assert_eq!(
                    r.sequence % readers,
                    reader,
                    "reader {reader} of {readers} made record {} ({})",
                    r.sequence,
                    r.location
                );
            }
            let places: Vec<usize> = files
                .iter()
                .map(|(p, _)| whole_files.iter().position(|(w, _)| w == p).unwrap())
                .collect();
            assert!(
                places.iter().all(|&f| f as u64 % readers == reader),
                "reader {reader} of {readers} counted the files at {places:?}"
            );
            records.extend(mine);
            counted.extend(files);
        }
        records.sort_by_key(|r| r.sequence);
        assert_eq!(records, whole, "{readers} readers");
        counted.sort();
        assert_eq!(counted, whole_counts, "{readers} readers' files");
    }
    whole
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn json_lines_blank_lines_crlf_and_a_last_line_without_its_break() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "a.jsonl",
        b"\xEF\xBB\xBF{\"n\":0}\r\n\r\n  \t \n{\"n\":1}\n{\"n\":2}\r\n\n{\"n\":3}",
    );
    write(d, "b-empty.jsonl", b"");
    write(d, "c-blank.ndjson", b"\n\r\n   \n");
    write(d, "d.ndjson", b"{\"n\":4}\n\xFF\xFE\n{\"n\":6}\n");
    write(d, "e-one.jsonl", b"{\"n\":7}");
    let recs = same_as_one_reader(&source(d, FileFormat::Json));
    let lines: Vec<&str> = recs
        .iter()
        .map(|r| r.location.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "a.jsonl:1",
            "a.jsonl:4",
            "a.jsonl:5",
            "a.jsonl:7",
            "d.ndjson:1",
            "d.ndjson:2",
            "d.ndjson:3",
            "e-one.jsonl:1"
        ]
    );
    assert_eq!(recs[0].bytes, b"{\"n\":0}");
    assert_eq!(recs[3].bytes, b"{\"n\":3}");
}

#[test]
fn csv_headers_blank_rows_and_quoted_fields_over_several_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut a = b"\xEF\xBB\xBF\r\nid,note\r\n1,plain\r\n\r\n2,\"two\r\nlines\"\r\n".to_vec();
    a.extend_from_slice(b"3,\"a \"\"quoted\"\", comma\"\n4,\"three\n\nlines\"\n5,last");
    write(d, "a.csv", &a);
    write(d, "b-empty.csv", b"");
    write(d, "c-header-only.csv", b"id,note\n");
    // A quote that never closes: its line is one record, and reading resumes after it.
    write(d, "d-open.csv", b"id,note\n6,\"never closed\n7,x\n8,y\n");
    write(d, "e.csv", b"\"i\nd\",note\n9,z\n");
    let recs = same_as_one_reader(&source(d, FileFormat::Csv { header: true }));
    let got: Vec<(String, Vec<u8>)> = recs
        .iter()
        .map(|r| {
            let loc = r.location.rsplit('/').next().unwrap().to_owned();
            (loc, r.bytes.clone())
        })
        .collect();
    let want: Vec<(String, Vec<u8>)> = vec![
        ("a.csv:3".into(), b"1,plain".to_vec()),
        ("a.csv:5".into(), b"2,\"two\r\nlines\"".to_vec()),
        ("a.csv:7".into(), b"3,\"a \"\"quoted\"\", comma\"".to_vec()),
        ("a.csv:8".into(), b"4,\"three\n\nlines\"".to_vec()),
        ("a.csv:11".into(), b"5,last".to_vec()),
        ("d-open.csv:2".into(), b"6,\"never closed".to_vec()),
        ("d-open.csv:3".into(), b"7,x".to_vec()),
        ("d-open.csv:4".into(), b"8,y".to_vec()),
        ("e.csv:3".into(), b"9,z".to_vec()),
    ];
    assert_eq!(got, want);
    let header = |r: &RawRecord| r.header.clone().unwrap_or_default();
    assert_eq!(header(&recs[0]), ["id", "note"]);
    assert_eq!(header(&recs[8]), ["i\nd", "note"]);

    // Without a header every row is a record; vitals CSV carries its patient.
    let rows = same_as_one_reader(&source(&d.join("a.csv"), FileFormat::Csv { header: false }));
    assert_eq!(rows.len(), 6);
    let vitals = same_as_one_reader(&source(
        d,
        FileFormat::VitalsCsv {
            patient_id: "p1".into(),
        },
    ));
    assert!(vitals.iter().all(|r| r.context.as_deref() == Some("p1")));
    assert_eq!(vitals.len(), 9);
}

#[test]
fn a_quote_open_past_its_bounds_is_read_again_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = b"id,note\n1,\"opens".to_vec();
    for i in 0..150 {
        text.extend_from_slice(format!("\n{},row", i + 2).as_bytes());
    }
    text.extend_from_slice(b"\n");
    write(tmp.path(), "long.csv", &text);
    let recs = same_as_one_reader(&source(tmp.path(), FileFormat::Csv { header: true }));
    assert_eq!(recs.len(), 151);
}

#[test]
fn hl7_batches_frames_and_json_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let msh = |id: u32| format!("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|{id}|P|2.5\rPID|1||{id}\r");
    let mut batch = String::from("FHS|^~\\&\rBHS|^~\\&\r");
    for id in 0..5 {
        batch.push_str(&msh(id));
    }
    batch.push_str("BTS|5\rFTS|1\r");
    write(d, "a-batch.hl7", batch.as_bytes());
    write(d, "b-empty.hl7", b"");
    let mut frames = Vec::new();
    for id in 5..8 {
        frames.push(0x0B);
        frames.extend_from_slice(msh(id).as_bytes());
        frames.extend_from_slice(b"\x1C\r");
    }
    write(d, "c-frames.hl7", &frames);
    write(d, "d-one.hl7", msh(8).as_bytes());
    let recs = same_as_one_reader(&source(d, FileFormat::Hl7v2));
    assert_eq!(recs.len(), 9);

    let j = tmp.path().join("json");
    fs::create_dir(&j).unwrap();
    write(
        &j,
        "a-bundle.json",
        b"{\n \"resourceType\": \"Bundle\",\n \"entry\": []\n}\n",
    );
    write(
        &j,
        "b-lines.json",
        b"{\"resourceType\":\"Patient\"}\n\n{\"resourceType\":\"Patient\"}\n",
    );
    write(&j, "c-lines.ndjson", b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
    write(&j, "d-broken.json", b"{\"resourceType\": \"Patient\",\n");
    write(&j, "e-empty.json", b"");
    let recs = same_as_one_reader(&source(&j, FileFormat::Fhir));
    assert_eq!(recs.len(), 7);
}

#[test]
fn the_sample_data_read_by_several_readers_is_read_once() {
    let dir = std::env::var_os("VITALFLOW_SAMPLE_DATA").map(PathBuf::from);
    let Some(dir) = dir.filter(|d| d.join("hl7v2").is_dir()) else {
        let required = std::env::var_os("VITALFLOW_REQUIRE_SAMPLE_DATA")
            .is_some_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "VITALFLOW_REQUIRE_SAMPLE_DATA is set but the sample data is missing"
        );
        eprintln!("!!! SKIPPED: sample data not found (set VITALFLOW_SAMPLE_DATA)");
        return;
    };
    let formats = [
        ("fhir-r4", FileFormat::Fhir, 4),
        ("hl7v2", FileFormat::Hl7v2, 139),
        (
            "vitals",
            FileFormat::VitalsCsv {
                patient_id: "s".into(),
            },
            0,
        ),
    ];
    for (sub, format, count) in formats {
        let recs = same_as_one_reader(&source(&dir.join(sub), format));
        assert!(!recs.is_empty(), "{sub}");
        if count > 0 {
            assert_eq!(recs.len(), count, "{sub}");
        }
    }
}

/// A reader told to stop takes nothing more and counts the file it was in with the records
/// numbered in it so far; the other readers are not affected.
#[test]
fn a_reader_that_stops_reads_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    for f in 0..4 {
        let text: String = (0..10)
            .map(|i| format!("{{\"f\":{f},\"i\":{i}}}\n"))
            .collect();
        write(tmp.path(), &format!("{f}.jsonl"), text.as_bytes());
    }
    let src = source(tmp.path(), FileFormat::Json);
    let files = src.files().unwrap();
    // Reader 1 of 2 (odd records, files 1 and 3) stops at its 8th record: record 15, in
    // file 1.
    let (mut taken, mut counted) = (Vec::new(), Vec::new());
    let n = src
        .read_share(
            &files,
            Share {
                reader: 1,
                readers: 2,
            },
            |p, n| counted.push((p.file_name().unwrap().to_owned(), n)),
            |r| {
                if taken.len() == 7 {
                    return ControlFlow::Break(());
                }
                taken.push(r.sequence);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(n, 7);
    assert_eq!(taken, [1, 3, 5, 7, 9, 11, 13]);
    assert_eq!(counted, [("1.jsonl".into(), 5)]);
}
