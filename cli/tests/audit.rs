//! The audit trail: all eight domain events per batch, linked and hash-chained.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{job_variant, output_files, show, vitalflow};

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

    let mut records: Vec<serde_json::Value> = Vec::new();
    for f in output_files(&out.join("audit")) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            records.push(serde_json::from_str(line).unwrap());
        }
    }
    records.sort_by_key(|r| r["sequence"].as_u64().unwrap());
    // 3 batches × 8 events.
    assert_eq!(records.len(), 24, "{records:#?}");

    // The hash chain is unbroken and starts at zero.
    let mut prev = "0".repeat(64);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["sequence"].as_u64(), Some(i as u64));
        assert_eq!(r["prevHash"].as_str(), Some(prev.as_str()));
        prev = r["hash"].as_str().unwrap().to_owned();
    }

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
