//! The audit trail: all eight domain events per batch, linked and hash-chained.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sha2::{Digest, Sha256};
use vitalflow_model::envelope::AuditRecord;

use crate::support::{job_variant, output_files, show, vitalflow};

/// Reads the audit log under `out/audit` and checks its hash chain (see [`audit_chain`]);
/// panics with what is wrong. Returns the records in sequence order.
pub fn checked_chain(out: &Path) -> Vec<serde_json::Value> {
    audit_chain(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()))
}

/// Reads the audit log under `out/audit` and checks its hash chain: sequences run 0, 1, ...
/// without gaps or repeats, each record's `prevHash` is the previous record's `hash` (64 zeros
/// for the first), and each `hash` is recomputed here from the record's content as documented:
/// SHA-256 over `prevHash`, the sequence (8 bytes, little-endian), the JSON of `recordedAt` and
/// the JSON of `event`. The records are read into the model's type and written back, and must
/// come back as read, so that the hash covers everything the line holds. Returns the records
/// in sequence order, or the first problem.
fn audit_chain(out: &Path) -> Result<Vec<serde_json::Value>, String> {
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
    let mut prev = "0".repeat(64);
    for (i, (r, _)) in records.iter().enumerate() {
        if r.sequence != i as u64 {
            return Err(format!("sequence {i} missing or repeated"));
        }
        if r.prev_hash != prev {
            return Err(format!("record {i}: prevHash is not the hash before"));
        }
        let mut h = Sha256::new();
        h.update(r.prev_hash.as_bytes());
        h.update(r.sequence.to_le_bytes());
        h.update(serde_json::to_string(&r.recorded_at).unwrap().as_bytes());
        h.update(serde_json::to_string(&r.event).unwrap().as_bytes());
        let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if r.hash != hash {
            return Err(format!("record {i}: hash does not match its content"));
        }
        prev.clone_from(&r.hash);
    }
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
            lines.join("\n"),
        )
        .unwrap();
    }
    assert_eq!(
        audit_chain(&tampered).err().as_deref(),
        Some("record 10: hash does not match its content")
    );

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
