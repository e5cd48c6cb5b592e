//! The audit trail: all eight domain events per batch, linked and hash-chained.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vitalflow_engine::audit_trail::{
    AuditKey, AuditLog, OutputFolder, Verifier, VerifyError, VerifyOptions, verify,
};
use vitalflow_model::envelope::AuditRecord;

use crate::support::{job_variant, output_files, show, vitalflow};

/// Reads the audit log under `out/audit` and checks it (see [`audit_chain`]); panics with what
/// is wrong. Returns the records in sequence order.
pub fn checked_chain(out: &Path) -> Vec<serde_json::Value> {
    audit_chain(out, out).unwrap_or_else(|e| panic!("{}: {e}", out.display()))
}

/// Reads the audit log under `out/audit` and verifies it as `vitalflow audit verify` does
/// (sequences dense from 0, each `prevHash` the hash before, each hash recomputed from the line
/// as written, every stage's events per batch, causation links, the listed files' digests). The
/// records are also read into the model's type and written back, and must come back as read,
/// so that the hash covers everything the line holds. Returns the records in sequence order, or
/// the first problem. The listed files are looked up in `files`.
fn audit_chain(out: &Path, files: &Path) -> Result<Vec<serde_json::Value>, String> {
    let options = VerifyOptions {
        key: None,
        out: Some(files.to_owned()),
    };
    let verified = verify(&out.join("audit"), &options).map_err(|e| e.to_string())?;
    if verified.first != 0 {
        return Err(format!("the trail starts at sequence {}", verified.first));
    }
    let mut records: Vec<(AuditRecord, serde_json::Value)> = Vec::new();
    for f in output_files(&out.join("audit")) {
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let at = format!("{}:{}", f.display(), i + 1);
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{at}: {e}"))?;
            let record: AuditRecord =
                serde_json::from_value(value.clone()).map_err(|e| format!("{at}: {e}"))?;
            if serde_json::to_value(&record).unwrap() != value {
                return Err(format!("{at}: the record does not survive a round trip"));
            }
            records.push((record, value));
        }
    }
    records.sort_by_key(|(r, _)| r.sequence);
    Ok(records.into_iter().map(|(_, v)| v).collect())
}

#[test]
fn audit_records_all_eight_domain_events_linked_by_correlation_and_causation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = job_variant(
        "dataflows/quickstart.toml",
        dir.path(),
        &[
            ("count = 200000", "count = 12000"),
            ("patients = 500", "patients = 100"),
            ("batch-size = 25000", "batch-size = 4000"),
        ],
    );
    let o = vitalflow(
        &[
            "run",
            job.to_str().unwrap(),
            "--workers",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));

    // The hash chain is unbroken, starts at zero, and every hash matches its record.
    let records = checked_chain(&out);
    // 3 batches × 8 events.
    assert_eq!(records.len(), 24, "{records:#?}");
    // The check sees a record changed after it was written: one count more.
    let tampered = dir.path().join("tampered");
    std::fs::create_dir_all(tampered.join("audit")).unwrap();
    for (n, f) in output_files(&out.join("audit")).iter().enumerate() {
        let lines: Vec<String> = std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .map(|line| {
                let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
                if r["sequence"] == 10 {
                    let counts = &mut r["event"]["payload"]["counts"];
                    counts["recordsIn"] = (counts["recordsIn"].as_u64().unwrap() + 1).into();
                }
                r.to_string()
            })
            .collect();
        std::fs::write(
            tampered.join(format!("audit/part-{n}.jsonl")),
            lines.join("\n") + "\n",
        )
        .unwrap();
    }
    let err = audit_chain(&tampered, &out).unwrap_err();
    assert!(err.starts_with("record 10: hash does not match"), "{err}");

    let ids: BTreeMap<&str, &serde_json::Value> = records
        .iter()
        .map(|r| {
            (
                r["event"]["metadata"]["eventId"].as_str().unwrap(),
                &r["event"],
            )
        })
        .collect();
    assert_eq!(ids.len(), 24, "event ids are unique");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_vitalflow/run.json")).unwrap()).unwrap();
    let run_id = run["run_id"].clone();
    assert!(run_id.is_string(), "{run}");
    let mut by_batch: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for r in &records {
        let e = &r["event"];
        let m = &e["metadata"];
        let batch = e["payload"]["batch"].as_u64().unwrap();
        by_batch
            .entry(batch)
            .or_default()
            .insert(m["eventType"].as_str().unwrap());
        let kind = m["eventType"].as_str().unwrap();
        // The platform envelope: the run is the trace.
        assert_eq!(m["traceId"], run_id, "{e}");
        assert!(
            m["eventSource"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(m["version"].is_string() || m["version"].is_number(), "{e}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(m["timestamp"].as_str().unwrap()).is_ok(),
            "{e}"
        );
        match m["causationId"].as_str() {
            None => assert_eq!(
                kind, "DataIngestionCreated",
                "only the saga's first event has no cause"
            ),
            Some(cause) => {
                let cause = ids
                    .get(cause)
                    .unwrap_or_else(|| panic!("{kind}: causation id not in the audit"));
                assert_eq!(
                    cause["metadata"]["correlationId"], m["correlationId"],
                    "{kind} and its cause share the batch"
                );
                // The stage's previous event, or for a stage's first event the event of the
                // stage before it that started the batch flowing.
                let expected = match kind {
                    "DataIngestionStarted" => "DataIngestionCreated",
                    "DataIngestionFinished" | "EventoAnonimizacionIniciada" => {
                        "DataIngestionStarted"
                    }
                    "EventoAnonimizacionFinalizada" | "EventDataCanonizationCreated" => {
                        "EventoAnonimizacionIniciada"
                    }
                    "EventDataCanonizationStarted" => "EventDataCanonizationCreated",
                    "EventDataCanonizationCompleted" => "EventDataCanonizationStarted",
                    other => panic!("unexpected event type {other}"),
                };
                assert_eq!(cause["metadata"]["eventType"], expected, "{kind}'s cause");
                // Recorded before it.
                let sequence_of = |id: &serde_json::Value| {
                    records
                        .iter()
                        .find(|r| r["event"]["metadata"]["eventId"] == *id)
                        .map(|r| r["sequence"].as_u64().unwrap())
                        .unwrap()
                };
                assert!(
                    sequence_of(&cause["metadata"]["eventId"]) < r["sequence"].as_u64().unwrap(),
                    "{kind} recorded before its cause"
                );
            }
        }
        if kind.ends_with("Finished") || kind.ends_with("Finalizada") || kind.ends_with("Completed")
        {
            let counts = &e["payload"]["counts"];
            assert!(counts["recordsIn"].as_u64().unwrap() > 0, "{e}");
        }
        if kind == "EventDataCanonizationCompleted" {
            let outputs = e["payload"]["outputs"].as_array().unwrap();
            assert!(
                !outputs.is_empty(),
                "Completed names its durable outputs: {e}"
            );
            for o in outputs {
                assert!(out.join(o.as_str().unwrap()).is_file(), "{o} is not a file");
            }
        }
        if kind == "EventoAnonimizacionFinalizada" {
            assert!(
                e["payload"]["detail"].is_object(),
                "Finalizada carries the de-identification report: {e}"
            );
        }
    }
    let all: BTreeSet<&str> = [
        "DataIngestionCreated",
        "DataIngestionStarted",
        "DataIngestionFinished",
        "EventoAnonimizacionIniciada",
        "EventoAnonimizacionFinalizada",
        "EventDataCanonizationCreated",
        "EventDataCanonizationStarted",
        "EventDataCanonizationCompleted",
    ]
    .into_iter()
    .collect();
    assert_eq!(by_batch.len(), 3);
    for (batch, kinds) in by_batch {
        assert_eq!(kinds, all, "batch {batch}");
    }
    // Per batch, ingestion counted every event in, and canonization wrote every one out.
    let finished: u64 = records
        .iter()
        .filter(|r| r["event"]["metadata"]["eventType"] == "DataIngestionFinished")
        .map(|r| {
            r["event"]["payload"]["counts"]["recordsIn"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(finished, 12_000);
}

/// Runs the quickstart pipeline (generator → ingest → anonymize → canonize → audit, one worker)
/// over 2,600 readings in batches of 100: 26 batches, 208 audit records. The FHIR resources go to
/// JSON lines (one file: the closing events stay short). With `audit_key`, the audit node keys
/// its chain with that key file. Returns the output folder.
fn audited_run(dir: &Path, audit_key: Option<&str>) -> std::path::PathBuf {
    let out = dir.join("out");
    let audit_inputs = r#"inputs = ["ingest.events", "anonymize.events", "canonize.events"]"#;
    let keyed = match audit_key {
        Some(key) => {
            std::fs::write(dir.join("audit.key"), key).unwrap();
            format!("{audit_inputs}\nkey = \"file:audit.key\"")
        }
        None => audit_inputs.to_owned(),
    };
    let job = job_variant(
        "dataflows/quickstart.toml",
        dir,
        &[
            ("count = 200000", "count = 2600"),
            ("patients = 500", "patients = 50"),
            ("batch-size = 25000", "batch-size = 100"),
            ("kind = \"parquet\"", "kind = \"jsonl\""),
            (audit_inputs, &keyed),
        ],
    );
    let o = vitalflow(
        &[
            "run",
            job.to_str().unwrap(),
            "--workers",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    out
}

/// `vitalflow audit verify` with `args` after the path; its output.
fn verify_cli(path: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec!["audit", "verify", path.to_str().unwrap()];
    all.extend_from_slice(args);
    vitalflow(&all, envs)
}

/// The log's one file, and its lines (each with its line break).
fn log_lines(out: &Path) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let files = output_files(&out.join("audit"));
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let lines = bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    (files[0].clone(), lines)
}

/// Goes on with a verification from line `number` of file `name`, over `rest` (that line and
/// those after it, each with its line break), as [`AuditLog::verify`] does.
fn go_on(mut v: Verifier<'_>, rest: &[u8], name: &str, number: usize) -> Result<(), VerifyError> {
    let mut parts: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let last = parts.pop();
    for (i, line) in parts.into_iter().enumerate() {
        v.line(line, name, number + i)?;
    }
    if last.is_some_and(|l| !l.is_empty()) {
        return Err(VerifyError::Invalid {
            record: 0,
            at: String::new(),
            problem: vitalflow_engine::audit_trail::Problem::NotUtf8,
        });
    }
    v.finish().map(|_| ())
}

/// The in-process verifier over one file's content; `Ok` when it verifies.
fn verify_bytes(name: &str, bytes: Vec<u8>, out: &OutputFolder) -> Result<(), VerifyError> {
    let log = AuditLog {
        files: vec![vitalflow_engine::audit_trail::LogFile {
            name: name.to_owned(),
            bytes,
        }],
    };
    log.verify(None, out).map(|_| ())
}

#[test]
fn audit_verify_detects_every_changed_byte_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = audited_run(dir.path(), None);

    // (a) The untouched log verifies.
    let o = verify_cli(&out.join("audit"), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("ok: 208 records, chain sha256, ") && stdout.contains(" files verified"),
        "{stdout}"
    );

    // (b) Every byte of the log changed in turn (its lowest bit flipped), in process: each is
    // detected. Verification is sequential, so the records before the changed line are
    // verified once and the verifier's state there is reused for each byte of the line: the
    // changed line and everything after it are verified for each byte, as a verification of
    // the whole changed file would (checked below for a sample, against `AuditLog::verify`).
    // The files the records list are digested once for all of them.
    let (file, lines) = log_lines(&out);
    let name = file.display().to_string();
    let original: Vec<u8> = lines.concat();
    let folder = OutputFolder::new(out.clone());
    let started = std::time::Instant::now();
    let (flipped, missed) = std::thread::scope(|s| {
        let threads = 2;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lines, name, out) = (&lines, &name, &out);
                s.spawn(move || {
                    let folder = OutputFolder::new(out.clone());
                    let mut prefix = Verifier::new(None, &folder);
                    let total: usize = lines.iter().map(Vec::len).sum();
                    let (mut flipped, mut missed) = (0usize, Vec::new());
                    let mut offset = 0;
                    for (k, line) in lines.iter().enumerate() {
                        let mut rest: Vec<u8> = lines[k..].concat();
                        for i in 0..line.len() {
                            if (offset + i) % threads != t {
                                continue;
                            }
                            rest[i] ^= 1;
                            let changed = &rest;
                            flipped += 1;
                            let result = go_on(prefix.clone(), changed, name, k + 1);
                            match result {
                                Err(e) => assert_eq!(e.exit_code(), 1, "byte {}: {e}", offset + i),
                                Ok(()) => missed.push(offset + i),
                            }
                            if (offset + i) % 4001 == 0 && offset + i + 1 != total {
                                let mut whole = lines.concat();
                                whole[offset + i] ^= 1;
                                let full = verify_bytes(name, whole, &folder);
                                assert_eq!(
                                    full.map_err(|e| e.to_string()),
                                    go_on(prefix.clone(), changed, name, k + 1)
                                        .map_err(|e| e.to_string()),
                                    "byte {}",
                                    offset + i
                                );
                            }
                            rest[i] ^= 1;
                        }
                        let body = &line[..line.len() - 1];
                        prefix.line(body, name, k + 1).unwrap();
                        offset += line.len();
                    }
                    (flipped, missed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(
            (0, Vec::new()),
            |(f, mut m), (f2, m2)| {
                m.extend(m2);
                (f + f2, m)
            },
        )
    });
    assert_eq!(flipped, original.len());
    eprintln!(
        "bytes flipped: {flipped}, detected: {} ({:?})",
        flipped - missed.len(),
        started.elapsed()
    );
    assert!(missed.is_empty(), "flips not detected at bytes {missed:?}");
    assert!(verify_bytes(&name, original.clone(), &folder).is_ok());

    // Every record deleted, duplicated, or swapped with the next, in turn: each detected.
    let n = lines.len();
    let mut detected = [0usize; 3];
    for k in 0..n {
        let mut deleted = lines.clone();
        deleted.remove(k);
        let mut duplicated = lines.clone();
        duplicated.insert(k, lines[k].clone());
        for (j, changed) in [deleted, duplicated].into_iter().enumerate() {
            let e = verify_bytes(&name, changed.concat(), &folder).unwrap_err();
            assert_eq!(e.exit_code(), 1, "record {k}: {e}");
            detected[j] += 1;
        }
        if k + 1 < n {
            let mut swapped = lines.clone();
            swapped.swap(k, k + 1);
            let e = verify_bytes(&name, swapped.concat(), &folder).unwrap_err();
            assert_eq!(e.exit_code(), 1, "records {k} and {}: {e}", k + 1);
            detected[2] += 1;
        }
    }
    eprintln!(
        "records: {n}; deleted {n}, detected {}; duplicated {n}, detected {}; swapped {}, \
         detected {}",
        detected[0],
        detected[1],
        n - 1,
        detected[2]
    );

    // The command on copies: a sample of flipped bytes, a deleted, a duplicated and a swapped
    // record; each exits 1 naming a record.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let copied = copy.join(file.file_name().unwrap());
    let out_arg = ["--out", out.to_str().unwrap()];
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&copied, bytes).unwrap();
        let o = verify_cli(&copy, &out_arg, &[]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", show(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("record "),
            "{what}: {}",
            show(&o)
        );
    };
    let step = original.len() / 24;
    let mut sampled = 0;
    for i in (0..original.len()).step_by(step) {
        let mut bytes = original.clone();
        bytes[i] ^= 1;
        check(&bytes, &format!("byte {i}"));
        sampled += 1;
    }
    let mut deleted = lines.clone();
    deleted.remove(100);
    check(&deleted.concat(), "record 100 deleted");
    let mut duplicated = lines.clone();
    duplicated.insert(100, lines[100].clone());
    check(&duplicated.concat(), "record 100 duplicated");
    let mut swapped = lines.clone();
    swapped.swap(100, 101);
    check(&swapped.concat(), "records 100 and 101 swapped");
    eprintln!("the command: {sampled} flipped bytes and 3 changed records, all detected");
    let o = verify_cli(&copy, &out_arg, &[]);
    eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim_end());
    std::fs::write(&copied, &original).unwrap();
    let o = verify_cli(&copy, &out_arg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

#[test]
fn audit_verify_names_an_output_file_changed_after_its_completed_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = audited_run(dir.path(), None);
    let o = verify_cli(&out.join("audit"), &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    // One byte of canonize's output.
    let target = output_files(&out.join("canonical"))
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let mut bytes = std::fs::read(&target).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&target, &bytes).unwrap();
    let o = verify_cli(&out.join("audit"), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let rel = target.strip_prefix(&out).unwrap().display().to_string();
    assert!(
        stdout.starts_with("record 7: EventDataCanonizationCompleted: file ")
            && stdout.contains(&rel)
            && stdout.contains("does not match its recorded SHA-256"),
        "{stdout}"
    );
    // A removed file is named as missing.
    std::fs::remove_file(&target).unwrap();
    let o = verify_cli(&out.join("audit"), &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!("file {rel} is missing")),
        "{stdout}"
    );
}

#[test]
fn audit_verify_of_a_keyed_chain_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "audit-key-0123456789abcdef-not-a-secret\n";
    let out = audited_run(dir.path(), Some(key));
    let audit = out.join("audit");
    let (_, lines) = log_lines(&out);
    let first: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
    assert_eq!(first["chain"], "hmac-sha256");

    // The right key: verified.
    let key_file = dir.path().join("audit.key");
    let key_arg = format!("file:{}", key_file.display());
    let o = verify_cli(&audit, &["--key", &key_arg], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("ok: 208 records, chain hmac-sha256, "),
        "{}",
        show(&o)
    );
    // No key: cannot be verified.
    let o = verify_cli(&audit, &[], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--key"),
        "{}",
        show(&o)
    );
    // A wrong key: the first record does not match.
    let o = verify_cli(
        &audit,
        &["--key", "env:WRONG_AUDIT_KEY"],
        &[("WRONG_AUDIT_KEY", "another-key-0123456789abcdef")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("record 0: hash does not match"),
        "{}",
        show(&o)
    );
    // The log re-chained without the key (plain SHA-256, every hash recomputed): verifies
    // without a key, but not against it.
    let unkeyed = dir.path().join("unkeyed");
    std::fs::create_dir_all(&unkeyed).unwrap();
    let mut prev = vitalflow_engine::audit_trail::GENESIS.to_owned();
    let mut text = String::new();
    for line in &lines {
        let mut r: serde_json::Value = serde_json::from_slice(line).unwrap();
        r["chain"] = "sha256".into();
        r["prevHash"] = prev.clone().into();
        let canonical = vitalflow_engine::audit_trail::canonical_record(
            vitalflow_model::envelope::ChainScheme::Sha256,
            &r["event"],
            &r["recordedAt"],
            r["sequence"].as_u64().unwrap(),
        );
        prev = vitalflow_engine::audit_trail::record_hash(None, &prev, &canonical);
        r["hash"] = prev.clone().into();
        text.push_str(&vitalflow_engine::audit_trail::canonical_json(&r));
        text.push('\n');
    }
    std::fs::write(unkeyed.join("part.jsonl"), text).unwrap();
    let out_arg = ["--out", out.to_str().unwrap()];
    let o = verify_cli(&unkeyed, &out_arg, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let mut args = out_arg.to_vec();
    args.extend(["--key", &key_arg]);
    let o = verify_cli(&unkeyed, &args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("record 0: the chain is sha256"),
        "{}",
        show(&o)
    );
    // The key loads as the job loaded it.
    assert!(AuditKey::from_bytes(key.as_bytes().to_vec()).is_ok());
}
