//! A file source cut into chunks (`FileSource::chunks`), each counted apart and then read from
//! the start the counts give it: for every chunk size, the chunks' records are exactly those
//! of a whole read, with the same sequences, locations and bytes, and the counts add up to
//! them. Covers the cases where cutting lines is easy to get wrong: a last line without its
//! line break, blank and whitespace lines, CRLF (a cut between `\r` and `\n`), a cut that falls
//! exactly after or on a line break, a byte order mark, lines longer than a chunk, empty
//! files, and files read whole (CSV, `.json`) between the cut ones.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use vitalflow_connectors::FileFormat;
use vitalflow_connectors::files::{Chunk, ChunkCount, ChunkStart, FileSource};
use vitalflow_model::RawRecord;

fn source(path: &Path, format: FileFormat) -> FileSource {
    FileSource {
        name: "in".into(),
        path: path.to_path_buf(),
        format,
    }
}

/// Every record of `files`, read whole.
fn whole(src: &FileSource) -> Vec<RawRecord> {
    let mut records = Vec::new();
    src.read(|r| records.push(r)).unwrap();
    records
}

/// Cuts `src` into chunks of `chunk_bytes`, counts each, and reads each from its start: the
/// chunks, and the records in chunk order.
fn by_chunks(
    src: &FileSource,
    files: &[PathBuf],
    chunk_bytes: u64,
) -> (Vec<Chunk>, Vec<RawRecord>) {
    let chunks = src.chunks(files, chunk_bytes).unwrap();
    let counts: Vec<ChunkCount> = chunks
        .iter()
        .map(|c| src.count_chunk(files, *c).unwrap())
        .collect();
    let starts = ChunkStart::of(&chunks, &counts);
    let mut records = Vec::new();
    for ((chunk, count), start) in chunks.iter().zip(&counts).zip(&starts) {
        let before = records.len();
        let read = src
            .read_chunk(files, *chunk, *start, |r| {
                records.push(r);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(!read.stopped);
        assert_eq!(
            read.taken, count.records,
            "chunk {chunk:?} of {chunk_bytes} bytes: counted {count:?}"
        );
        assert_eq!((records.len() - before) as u64, count.records);
        read.check(files, *chunk, *count).unwrap();
    }
    (chunks, records)
}

/// For every chunk size from 1 byte to past the largest file, the chunks give the whole
/// read's records. The whole read's records.
fn same_for_every_chunk_size(src: &FileSource) -> Vec<RawRecord> {
    let files = src.files().unwrap();
    let expected = whole(src);
    for (i, r) in expected.iter().enumerate() {
        assert_eq!(r.sequence, i as u64);
    }
    let largest = files
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    for chunk_bytes in 1..=largest + 1 {
        let (chunks, records) = by_chunks(src, &files, chunk_bytes);
        assert_eq!(
            records, expected,
            "chunks of {chunk_bytes} bytes: {chunks:?}"
        );
    }
    expected
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn json_lines_cut_anywhere_read_as_a_whole() {
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
    write(
        d,
        "f.json",
        b"{\"resourceType\":\"Patient\",\n\"id\":\"p\"}\n",
    );
    write(
        d,
        "g-long.jsonl",
        b"{\"a\":\"a line longer than many chunks\"}\n\n{\"b\":1}\r\n{\"c\":2}\n\n\n{\"d\":3}\n",
    );
    let recs = same_for_every_chunk_size(&source(d, FileFormat::Json));
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
            "e-one.jsonl:1",
            "f.json:1",
            "g-long.jsonl:1",
            "g-long.jsonl:3",
            "g-long.jsonl:4",
            "g-long.jsonl:7",
        ]
    );
    assert_eq!(recs[0].bytes, b"{\"n\":0}");
    assert_eq!(recs[3].bytes, b"{\"n\":3}");
}

/// The cuts of a file: a chunk starting right after a line break, one starting on a line
/// break (its line belongs to the chunk before), one between `\r` and `\n`, and one inside a
/// line; the counts say so.
#[test]
fn a_cut_on_a_line_break_and_inside_a_crlf() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Offsets: "ab\n" 0..3, "cd\r\n" 3..7, "ef\n" 7..10, "g" 10..11.
    write(d, "a.jsonl", b"ab\ncd\r\nef\ng");
    let src = source(d, FileFormat::Json);
    let files = src.files().unwrap();
    let counts = |chunk_bytes| {
        let chunks = src.chunks(&files, chunk_bytes).unwrap();
        chunks
            .iter()
            .map(|c| {
                let n = src.count_chunk(&files, *c).unwrap();
                (c.range, n.records, n.lines)
            })
            .collect::<Vec<_>>()
    };
    // 3: cuts at 3 (just after "ab\n"), 6 (between \r and \n), 9 (on the \n of "ef").
    assert_eq!(
        counts(3),
        [
            (Some((0, 3)), 1, 1),
            (Some((3, 6)), 1, 1),
            (Some((6, 9)), 1, 1),
            (Some((9, u64::MAX)), 1, 1),
        ]
    );
    // 2: cuts at 2 (on "ab"'s \n), 4, 6, 8 (inside lines), 10 (just after "ef\n": "g" is
    // the last chunk's).
    assert_eq!(
        counts(2),
        [
            (Some((0, 2)), 1, 1),
            (Some((2, 4)), 1, 1),
            (Some((4, 6)), 0, 0),
            (Some((6, 8)), 1, 1),
            (Some((8, 10)), 0, 0),
            (Some((10, u64::MAX)), 1, 1),
        ]
    );
    // 11 and more: one chunk, the whole file.
    assert_eq!(counts(11), [(None, 4, 0)]);
    same_for_every_chunk_size(&src);
}

/// CSV, HL7 v2 and `.json` files are never cut, whatever their size; JSON lines files are.
#[test]
fn only_json_lines_are_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(d, "a.csv", b"id,note\n1,\"two\nlines\"\n2,x\n");
    let csv = source(d, FileFormat::Csv { header: true });
    let files = csv.files().unwrap();
    assert_eq!(
        csv.chunks(&files, 1).unwrap(),
        [Chunk {
            file: 0,
            range: None
        }]
    );
    same_for_every_chunk_size(&csv);
    let hl7 = tempfile::tempdir().unwrap();
    write(
        hl7.path(),
        "a.hl7",
        b"MSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\rPID|1||P1\rMSH|^~\\&|A|B|C|D|20240101||ADT^A01|2|P|2.5\rPID|1||P2\r",
    );
    let hl7 = source(hl7.path(), FileFormat::Hl7v2);
    let files = hl7.files().unwrap();
    assert_eq!(hl7.chunks(&files, 1).unwrap().len(), 1);
    assert_eq!(same_for_every_chunk_size(&hl7).len(), 2);
}

/// A reader that stops mid-chunk takes no more, and says so.
#[test]
fn a_chunk_reader_that_stops_reads_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "a.jsonl",
        b"{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n",
    );
    let src = source(tmp.path(), FileFormat::Json);
    let files = src.files().unwrap();
    let chunks = src.chunks(&files, 16).unwrap();
    assert_eq!(chunks.len(), 2);
    let start = ChunkStart {
        sequence: 10,
        line: 1,
    };
    let mut seen = Vec::new();
    let read = src
        .read_chunk(&files, chunks[0], start, |r| {
            if seen.len() == 1 {
                return ControlFlow::Break(());
            }
            seen.push(r);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(read.stopped);
    assert_eq!(read.taken, 1);
    assert_eq!(seen[0].sequence, 10);
    // Stopped: not a changed file.
    read.check(
        &files,
        chunks[0],
        ChunkCount {
            records: 2,
            lines: 2,
        },
    )
    .unwrap();
}
