//! The harness's same-work check: the straight-line loop must have written what the engine's 1×
//! run wrote, in every sink of the job (dead letters and the audit log included), or no ratio is
//! reported.
//!
//! Each sink's content is digested whatever its file layout (the engine writes a file per worker
//! and roll, the loop one per roll): every row (a Parquet row, or a JSON line) is rendered as text
//! with the per-run fields left out, each text is hashed, and the hashes, sorted, are hashed
//! together. Two sinks with the same digest hold the same rows. The per-run fields, left out by
//! name ([`AUDIT_PER_RUN`], [`ALERT_PER_RUN`]), are the wall-clock times and what follows from
//! them, and the names of files. Nothing else differs between two runs of the harness job: the
//! loop is given the engine run's id (which the saga's event ids derive from), and the job's
//! pseudonym key is a file the harness writes, so pseudonyms and shifted dates are the same.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use parquet::file::reader::SerializedFileReader;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use vitalflow_engine::audit_trail::canonical_json;
use vitalflow_engine::baseline::{Prepared, prepared};
use vitalflow_engine::job::Section;
use vitalflow_engine::runtime::plan::Plan;
use vitalflow_model::ids::hex;

/// Per-run fields of an audit record: when it was recorded and its event published (wall
/// clock), the hashes (they cover those times), and the files a stage's output went to (their
/// names and number follow the file layout, their sizes and digests the rows each holds).
pub const AUDIT_PER_RUN: &[&str] = &[
    "/recordedAt",
    "/hash",
    "/prevHash",
    "/event/metadata/timestamp",
    "/event/payload/outputs",
    "/event/payload/files",
];

/// Per-run fields of an alert event: when it was emitted (wall clock), and its latency.
pub const ALERT_PER_RUN: &[&str] = &[
    "/metadata/timestamp",
    "/payload/emittedAt",
    "/payload/latencyMs",
    "/payload/detectedAt",
];

/// One sink's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkWork {
    /// The sink node.
    pub sink: String,
    /// Rows (Parquet rows, or lines).
    pub rows: u64,
    /// SHA-256 of the sorted SHA-256s of the rows, per-run fields left out (hex).
    pub digest: String,
}

/// How a sink's rows are read and which fields are per-run.
enum Kind {
    Parquet,
    Lines(&'static [&'static str]),
}

/// Every sink of `plan`, its folder relative to the output folder and how to read it.
fn sinks(plan: &Plan) -> anyhow::Result<Vec<(String, PathBuf, Kind)>> {
    let kind_of = |node: &str| plan.node(node).map(prepared);
    let mut out = Vec::new();
    for node in &plan.nodes {
        let (name, inputs) = (&node.name, &node.inputs);
        if node.section != Section::Sinks {
            continue;
        }
        let (dir, kind) = match prepared(node) {
            Prepared::Parquet(p) => (&p.dir, Kind::Parquet),
            Prepared::Jsonl(j) => {
                let fields = match inputs.first().and_then(|(n, _)| kind_of(n)) {
                    Some(Prepared::Audit) => AUDIT_PER_RUN,
                    Some(Prepared::Alert(_)) => ALERT_PER_RUN,
                    _ => &[],
                };
                (&j.dir, Kind::Lines(fields))
            }
            Prepared::DeadLetter(d) => (&d.dir, Kind::Lines(&[])),
            _ => bail!("the same-work check cannot compare what the sink `{name}` did"),
        };
        let relative = dir.strip_prefix(&plan.out).unwrap_or(dir).to_owned();
        out.push((name.clone(), relative, kind));
    }
    Ok(out)
}

/// The content of every sink of `plan` as written under `out` (the plan's own output folder,
/// or another run's of the same job).
///
/// # Errors
/// A file that cannot be read or parsed.
pub fn digest_sinks(plan: &Plan, out: &Path) -> anyhow::Result<Vec<SinkWork>> {
    let mut works = Vec::new();
    for (sink, dir, kind) in sinks(plan)? {
        let mut files = Vec::new();
        collect_files(&out.join(&dir), &mut files)?;
        let mut hashes: Vec<[u8; 32]> = Vec::new();
        for file in &files {
            let name = file.to_string_lossy();
            match &kind {
                Kind::Parquet if name.ends_with(".parquet") => parquet_rows(file, &mut hashes)?,
                Kind::Lines(fields) if name.ends_with(".jsonl") => {
                    json_lines(file, fields, &mut hashes)?;
                }
                _ => {}
            }
        }
        hashes.sort_unstable();
        let mut all = Sha256::new();
        for h in &hashes {
            all.update(h);
        }
        works.push(SinkWork {
            sink,
            rows: hashes.len() as u64,
            digest: hex(&all.finalize()),
        });
    }
    Ok(works)
}

/// Refuses unless the loop's sinks hold what the engine's do, sink by sink.
///
/// # Errors
/// The first sink whose rows differ, naming both sides' rows and digests.
pub fn same_work(engine: &[SinkWork], baseline: &[SinkWork]) -> anyhow::Result<()> {
    for e in engine {
        let Some(b) = baseline.iter().find(|b| b.sink == e.sink) else {
            bail!(
                "the straight-line loop has no sink `{}`: it did not do the engine's work",
                e.sink
            );
        };
        if b != e {
            bail!(
                "the sink `{}` holds {} rows (digest {}) from the engine and {} rows (digest {}) \
                 from the straight-line loop: they did not do the same work, so no ratio",
                e.sink,
                e.rows,
                short(&e.digest),
                b.rows,
                short(&b.digest)
            );
        }
    }
    if let Some(b) = baseline
        .iter()
        .find(|b| !engine.iter().any(|e| e.sink == b.sink))
    {
        bail!("the engine has no sink `{}`", b.sink);
    }
    Ok(())
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// The committed files under `dir` (none when it does not exist).
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn parquet_rows(path: &Path, hashes: &mut Vec<[u8; 32]>) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), i + 1))?;
        let mut h = Sha256::new();
        for (name, field) in row.get_column_iter() {
            h.update(name.as_bytes());
            h.update(b"=");
            h.update(field.to_string().as_bytes());
            h.update(b"\t");
        }
        hashes.push(h.finalize().into());
    }
    Ok(())
}

fn json_lines(path: &Path, per_run: &[&str], hashes: &mut Vec<[u8; 32]>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (i, line) in text.lines().enumerate() {
        let mut value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        for pointer in per_run {
            remove(&mut value, pointer);
        }
        let canonical = canonical_json(&value);
        hashes.push(Sha256::digest(canonical.as_bytes()).into());
    }
    Ok(())
}

/// Removes the field at a JSON pointer, if there is one.
fn remove(value: &mut Value, pointer: &str) {
    if let Some((parent, key)) = pointer.rsplit_once('/')
        && let Some(Value::Object(map)) = value.pointer_mut(parent)
    {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::bench::{
        Settings, Watch, engine_work, job_text, loop_plan, parse_job, run_job, working_folder,
    };
    use vitalflow_engine::baseline::straight_line;

    /// The harness job at 4,000 events in batches of 500 run by the engine (two workers), then
    /// by the straight-line loop from the job text as `edit` leaves it: what each side's sinks
    /// hold, the loop's output folder and plan.
    fn engine_and_loop(
        dir: &Path,
        edit: impl Fn(String) -> String,
    ) -> (Vec<SinkWork>, Vec<SinkWork>, PathBuf, Plan) {
        let s = Settings {
            events: 4000,
            workers: 2,
            scales: vec![1],
            patients: 200,
            rate: 0,
            seconds: 1,
            no_kafka: true,
            rounds: 1,
            endpoint_rounds: 1,
            profile: false,
            out: dir.join("bench"),
        };
        let out = working_folder(&s).unwrap();
        let path = out.join("bench.toml");
        let text =
            || job_text(&s, &out, 2000, 0, "1m").replace("batch-size = 10000", "batch-size = 500");
        let job = parse_job(&path, text()).unwrap();
        let summary = run_job(&job, &s, Watch::plain()).unwrap();
        let (run_id, engine) = engine_work(&job, &out, &summary).unwrap();
        let job = parse_job(&path, edit(text())).unwrap();
        let straight = out.join("straight");
        let plan = loop_plan(&job, &straight, &run_id).unwrap();
        straight_line(&plan).unwrap();
        let baseline = digest_sinks(&plan, &straight).unwrap();
        (engine, baseline, straight, plan)
    }

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_files(dir, &mut files).unwrap();
        files.sort();
        files
    }

    #[test]
    fn the_straight_line_loop_writes_what_the_engine_writes_in_every_sink() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, baseline, straight, plan) = engine_and_loop(dir.path(), |t| t);
        let mut sinks: Vec<&str> = engine.iter().map(|w| w.sink.as_str()).collect();
        sinks.sort_unstable();
        assert_eq!(
            sinks,
            [
                "alert-events",
                "audit-log",
                "dead-letter",
                "fhir",
                "vitals-5m"
            ]
        );
        for w in engine.iter().filter(|w| w.sink != "dead-letter") {
            assert!(w.rows > 0, "{w:?}");
        }
        if let Err(e) = same_work(&engine, &baseline) {
            panic!("{e:#}\nengine: {engine:#?}\nloop: {baseline:#?}");
        }

        // One audit record fewer in the loop's log: refused.
        let audit = files(&straight.join("audit"));
        let text = std::fs::read_to_string(&audit[0]).unwrap();
        let kept: Vec<&str> = text.lines().skip(1).collect();
        std::fs::write(&audit[0], kept.join("\n") + "\n").unwrap();
        let err = same_work(&engine, &digest_sinks(&plan, &straight).unwrap()).unwrap_err();
        assert!(err.to_string().contains("`audit-log`"), "{err}");
        std::fs::write(&audit[0], &text).unwrap();

        // A dead letter the engine did not write: refused.
        std::fs::create_dir_all(straight.join("dead-letter")).unwrap();
        std::fs::write(
            straight.join("dead-letter/part-extra.jsonl"),
            "{\"stage\":\"ingest\",\"source\":\"ehr\",\"location\":\"generator#1\",\
             \"format\":\"json\",\"reason\":\"not JSON\",\"raw\":\"{\"}\n",
        )
        .unwrap();
        let err = same_work(&engine, &digest_sinks(&plan, &straight).unwrap()).unwrap_err();
        assert!(err.to_string().contains("`dead-letter`"), "{err}");
    }

    #[test]
    fn the_check_refuses_a_loop_that_wrote_as_many_rows_of_other_events() {
        // The EHR feed of another seed: as many events, rows and files, other content.
        let dir = tempfile::tempdir().unwrap();
        let (engine, baseline, ..) =
            engine_and_loop(dir.path(), |t| t.replacen("seed = 42", "seed = 43", 1));
        let rows = |w: &[SinkWork]| w.iter().find(|w| w.sink == "fhir").map(|w| w.rows);
        assert_eq!(rows(&engine), rows(&baseline));
        let err = same_work(&engine, &baseline).unwrap_err().to_string();
        assert!(err.contains("`fhir`"), "{err}");
        assert!(err.contains("no ratio"), "{err}");
    }

    #[test]
    fn per_run_fields_are_left_out_and_keys_sorted() {
        let mut a: Value = serde_json::from_str(
            r#"{"sequence":3,"recordedAt":"2026-01-01T00:00:00Z","hash":"ab","prevHash":"cd",
                "event":{"metadata":{"timestamp":"x","eventId":"e"},"payload":{"outputs":["f"],"batch":1}}}"#,
        )
        .unwrap();
        for p in AUDIT_PER_RUN {
            remove(&mut a, p);
        }
        let text = canonical_json(&a);
        assert_eq!(
            text,
            r#"{"event":{"metadata":{"eventId":"e"},"payload":{"batch":1}},"sequence":3}"#
        );
    }
}
