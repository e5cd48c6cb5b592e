//! The checkers themselves, fed outputs with the faults they are for: a PHI scan must find PHI
//! that only a decoder can see.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, BinaryArray, Date32Array, RecordBatch, StringArray, StructArray};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::support::{python, root, scannable_text, show};

/// PHI values, each where a byte search of the file cannot see it or a decoding of the plain
/// string columns does not reach: after another value with the same first 14 characters (Snappy
/// writes those as a back-reference), as a date, in a list, in a struct, dictionary-encoded, as
/// binary.
const PHI: [&str; 6] = [
    "Johnson-Whitfield",
    "1961-07-23",
    "Margarethe",
    "Bartholomew",
    "Kowalczykowski",
    "555-0142-7788",
];

/// A Snappy-compressed Parquet file holding every value of `PHI` (and filler around them).
fn write_phi_parquet(path: &std::path::Path) {
    let n = 40;
    let family: Vec<String> = (0..n)
        .map(|i| match i {
            10 => "Johnson-Whitfirth".to_owned(),
            30 => "Johnson-Whitfield".to_owned(),
            // Fillers on both sides, so that neither value is the column's minimum or maximum
            // (the footer's statistics hold those uncompressed).
            _ if i % 2 == 0 => format!("Aaron-{i:04}"),
            _ => format!("Zed-{i:04}"),
        })
        .collect();
    // 1961-07-23 is day -3084 of the Unix epoch.
    let birth: Vec<i32> = (0..n)
        .map(|i| if i == 7 { -3084 } else { 19_000 + i })
        .collect();
    let mut given = ListBuilder::new(StringBuilder::new());
    let mut city = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..n {
        given.values().append_value(format!("given-{i}"));
        if i == 3 {
            given.values().append_value("Margarethe");
        }
        given.append(true);
        city.append_value(if i == 5 { "Kowalczykowski" } else { "city" });
    }
    let nickname: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| {
        if i == 9 {
            "Bartholomew".to_owned()
        } else {
            format!("n{i}")
        }
    })));
    let contact = StructArray::try_from(vec![("nickname", nickname)]).unwrap();
    let phone: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            if i == 20 {
                b"555-0142-7788".to_vec()
            } else {
                vec![0; 4]
            }
        })
        .collect();
    let batch = RecordBatch::try_from_iter([
        (
            "family",
            Arc::new(StringArray::from_iter_values(family)) as ArrayRef,
        ),
        ("birth", Arc::new(Date32Array::from(birth)) as ArrayRef),
        ("given", Arc::new(given.finish()) as ArrayRef),
        ("contact", Arc::new(contact) as ArrayRef),
        ("city", Arc::new(city.finish()) as ArrayRef),
        (
            "phone",
            Arc::new(BinaryArray::from_iter_values(phone)) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn the_phi_scans_decode_every_parquet_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("canonical")).unwrap();
    std::fs::create_dir_all(out.join("rows")).unwrap();
    let file = out.join("rows/part-0.parquet");
    write_phi_parquet(&file);

    // The file hides some of them from a byte search: the point of decoding.
    let raw = std::fs::read(&file).unwrap();
    let hidden: Vec<&str> = PHI
        .iter()
        .copied()
        .filter(|v| !raw.windows(v.len()).any(|w| w == v.as_bytes()))
        .collect();
    assert!(
        hidden.contains(&"Johnson-Whitfield") && hidden.contains(&"1961-07-23"),
        "the file should hide the back-referenced name and the date from a byte search: {hidden:?}"
    );

    // The tests' scan.
    let text = scannable_text(&file);
    for v in PHI {
        assert!(text.contains(v), "the Rust scan misses `{v}`");
    }

    // The output checker's scan: it finds each value (by its line of the PHI file) and fails.
    let Some(python) = python() else { return };
    let phi_file = dir.path().join("phi.txt");
    std::fs::write(&phi_file, PHI.join("\n") + "\n").unwrap();
    let o = Command::new(&python)
        .arg(root().join("tests/python/check_output.py"))
        .args([out.to_str().unwrap(), "--phi", phi_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["phi_hits"], PHI.len(), "{summary}\n{}", show(&o));
    assert_eq!(
        summary["problems"],
        serde_json::json!({"phi": 1}),
        "{summary}"
    );
}
