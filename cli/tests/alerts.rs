//! Alerting end to end: the real ICU record replayed against a reviewed golden timeline, the
//! alert lifecycle on crafted streams, and the shipped live job on the embedded broker with its
//! alert topic read back and its alerts scanned for the generator's PHI.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;

use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_connectors::kafka::embedded::{FlatTopics, feed_context, feed_flat};

use crate::support::{
    BrokerProcess, PhiScan, key_file, output_files, read_jsonl, root, run_job, sample_data,
    scannable_text, show, vitalflow,
};

/// The alert events of a run, ordered by event time, rule and event type.
fn alerts(out: &std::path::Path) -> Vec<serde_json::Value> {
    let mut rows = read_jsonl(&out.join("alerts"));
    rows.sort_by_key(|e| {
        let p = &e["payload"];
        (
            p["eventTime"].as_str().unwrap().to_owned(),
            p["rule"].as_str().unwrap().to_owned(),
            e["metadata"]["eventType"].as_str().unwrap().to_owned(),
        )
    });
    rows
}

fn list(v: &serde_json::Value) -> String {
    v.as_array().map_or_else(String::new, |a| {
        a.iter()
            .map(|s| s.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// One line per alert event: what a reviewer reads.
fn timeline(events: &[serde_json::Value]) -> String {
    let mut text = String::new();
    for e in events {
        let p = &e["payload"];
        let kind = e["metadata"]["eventType"].as_str().unwrap();
        let _ = write!(
            text,
            "{} {:<9} {:<11} {:>10} -> {:<10}",
            p["eventTime"].as_str().unwrap(),
            kind.rsplit('.').next().unwrap(),
            p["rule"].as_str().unwrap(),
            p["previousLevel"].as_str().unwrap(),
            p["level"].as_str().unwrap(),
        );
        if let Some(score) = p["score"].as_u64() {
            let subs: Vec<String> = p["subScores"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| v.as_u64() != Some(0))
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(text, " NEWS2 {score} ({})", subs.join(", "));
        }
        if !p["stale"].is_null() {
            let _ = write!(text, " stale {}", list(&p["stale"]));
        }
        // The triggering readings, by their minute in the record.
        let _ = writeln!(
            text,
            " | minutes {}",
            list(&p["observations"]).replace("s00001-numerics.csv#minute-", "")
        );
    }
    text
}

#[test]
fn the_icu_record_replays_to_the_reviewed_alert_timeline() {
    let Some(data) = sample_data(&["vitals/s00001-numerics.csv"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path());
    let key_source = format!("file:{}", key.display());
    let mut timelines = Vec::new();
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("out-{workers}"));
        let o = vitalflow(
            &[
                "run",
                "dataflows/icu-replay.toml",
                "--out",
                out.to_str().unwrap(),
                "--workers",
                workers,
            ],
            &[
                ("VITALFLOW_SAMPLE_DATA", data.to_str().unwrap()),
                ("VITALFLOW_KEY_SOURCE", &key_source),
            ],
        );
        assert!(o.status.success(), "{}", show(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("alert icu-alerts · news2:") && stdout.contains("arrival → alert"),
            "the summary prints each rule's alerts and latencies: {}",
            show(&o)
        );
        // Each latency line: p50, p99, p99.9 and max, in order and not decreasing, and the
        // alerts timed.
        let latencies: Vec<&str> = stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("arrival → alert"))
            .collect();
        assert!(!latencies.is_empty(), "{stdout}");
        for line in latencies {
            let to_ms = |v: &str| -> f64 {
                let (n, unit) = v.trim().split_once(' ').unwrap();
                let n: f64 = n.parse().unwrap();
                match unit {
                    "ms" => n,
                    "min" => n * 60_000.0,
                    "h" => n * 3_600_000.0,
                    other => panic!("unit {other} in {line}"),
                }
            };
            let (figures, timed) = line.rsplit_once(" (").unwrap();
            let figures: Vec<(&str, f64)> = figures
                .trim_start()
                .trim_start_matches("arrival → alert")
                .split(" · ")
                .map(|f| {
                    let (name, value) = f.trim().split_once(' ').unwrap();
                    (name, to_ms(value))
                })
                .collect();
            let names: Vec<&str> = figures.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["p50", "p99", "p99.9", "max"], "{line}");
            assert!(
                figures.windows(2).all(|w| w[0].1 <= w[1].1),
                "percentiles decrease: {line}"
            );
            let timed: u64 = timed.trim_end_matches(" alerts)").parse().unwrap();
            assert!(timed > 0, "{line}");
        }
        let events = alerts(&out);
        // Every alert event is complete, and resolves only what was raised.
        for e in &events {
            let (m, p) = (&e["metadata"], &e["payload"]);
            assert_eq!(m["correlationId"], p["alertId"]);
            assert_eq!(m["causationId"], p["observations"][0]);
            assert!(p["emittedAt"].is_string() && p["raisedAt"].is_string());
            assert!(p["latencyMs"].as_f64().unwrap() >= 0.0);
            if p["rule"] == "news2" {
                assert_eq!(
                    list(&p["missing"]),
                    "air-or-oxygen,consciousness,temperature",
                    "the record has no oxygen, consciousness or temperature"
                );
            }
        }
        timelines.push(timeline(&events));
    }
    assert_eq!(
        timelines[0], timelines[1],
        "1 and 2 workers give the same timeline"
    );
    let golden = root().join("cli/tests/golden/icu-replay-alerts.txt");
    if std::env::var("VITALFLOW_BLESS").is_ok() {
        std::fs::write(&golden, &timelines[0]).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(
        timelines[0],
        expected,
        "the timeline differs from {}; review the difference, then VITALFLOW_BLESS=1 rewrites it",
        golden.display()
    );
}

const CRAFTED_FIELDS: &str = r#"fields = [
  { name = "patient_id", type = "string", phi = "hash" },
  { name = "bed", type = "string" },
  { name = "minute", type = "integer" },
  { name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" },
  { name = "rr", type = "integer" },
  { name = "spo2", type = "integer" },
  { name = "sbp", type = "integer" },
  { name = "hr", type = "integer" },
  { name = "temp", type = "float" },
]"#;

#[test]
fn crafted_streams_raise_escalate_suppress_repeat_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    let mut reading = |p: &str, minute: i64, rr: i64, spo2: i64, hr: i64| {
        let ts = 1_767_225_600_000 + minute * 60_000;
        let _ = writeln!(
            lines,
            r#"{{"patient_id":"{p}","bed":"{p}","minute":{minute},"ts":{ts},"rr":{rr},"spo2":{spo2},"sbp":120,"hr":{hr},"temp":37.0}}"#
        );
    };
    // A: normal, NEWS2 5 (medium: raised), 7 (high: escalated), 7 again (suppressed), then
    // normal from minute 4: resolved at minute 10 (6 minutes normal, 5 needed).
    reading("A", 0, 16, 97, 80);
    reading("A", 1, 22, 95, 115);
    reading("A", 2, 25, 93, 115);
    reading("A", 3, 25, 93, 115);
    reading("A", 4, 16, 97, 80);
    reading("A", 8, 16, 97, 80);
    reading("A", 10, 16, 97, 80);
    // B: heart rate 135 every 5 minutes: raised at 0, repeated at 30 (suppressed before).
    for m in (0..=40).step_by(5) {
        reading("B", m, 16, 97, 135);
    }
    // C: SpO2 88 from minute 0: the 2-minute desaturation rule raises at minute 2.
    for m in 0..=2 {
        reading("C", m, 16, 88, 80);
    }
    std::fs::write(dir.path().join("readings.jsonl"), &lines).unwrap();
    let key = key_file(dir.path());
    let job = format!(
        r#"[job]
name = "crafted"
workers = 2
batch-size = 4

[sources.readings]
kind = "file"
path = "readings.jsonl"
format = "json"
event-time = "ts"
key = "patient_id"
{CRAFTED_FIELDS}

[operators.alerts]
kind = "alert"
inputs = ["readings"]
observation-id = "concat(bed, '-', minute)"
freshness = "10m"
resolve-after = "5m"
suppress-for = "30m"
key = "file:{key}"

[operators.alerts.news2]
respiration-rate = "rr"
spo2 = "spo2"
systolic = "sbp"
pulse = "hr"
temperature = "temp"
oxygen = "false"
raise-at = "medium"

[operators.alerts.rules.tachycardia]
when = "hr > 130"
level = "medium"

[operators.alerts.rules.desaturation]
when = "spo2 < 90"
for = "2m"
level = "high"

[sinks.alert-log]
kind = "jsonl"
inputs = ["alerts"]
path = "alerts"

[sinks.dead-letter]
kind = "dead-letter"
inputs = ["readings.dead-letter", "alerts.dead-letter"]
"#,
        key = key.display()
    );
    // A sink named like the operator is refused, at its line, without a crash.
    let clash = dir.path().join("clash.toml");
    std::fs::write(&clash, job.replace("[sinks.alert-log]", "[sinks.alerts]")).unwrap();
    let o = vitalflow(&["validate", clash.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("clash.toml:51:8: node name `alerts` is already used"),
        "{}",
        show(&o)
    );
    let (out, o) = run_job(dir.path(), &job, &[]);
    let events = alerts(&out);
    // Which patient an event is about, by its observations (ids are `bed-minute`, and each
    // patient has a bed of the same name; an id read from the PHI patient id is refused).
    let of = |e: &serde_json::Value| {
        let obs = e["payload"]["observations"][0].as_str().unwrap().to_owned();
        obs.split('-').next().unwrap().to_owned()
    };
    let minute = |e: &serde_json::Value| {
        // Event times are date-shifted by whole days: the time of day is the reading's.
        let t = e["payload"]["eventTime"].as_str().unwrap();
        let hm = &t[11..16];
        let (h, m) = hm.split_once(':').unwrap();
        h.parse::<i64>().unwrap() * 60 + m.parse::<i64>().unwrap()
    };
    let story = |patient: &str, rule: &str| -> Vec<(String, String, i64)> {
        events
            .iter()
            .filter(|e| of(e) == patient && e["payload"]["rule"] == rule)
            .map(|e| {
                (
                    e["metadata"]["eventType"].as_str().unwrap().to_owned(),
                    e["payload"]["level"].as_str().unwrap().to_owned(),
                    minute(e),
                )
            })
            .collect()
    };
    let s = |t: &str, l: &str, m: i64| (format!("clinical.alert.{t}"), l.to_owned(), m);
    assert_eq!(
        story("A", "news2"),
        vec![
            s("raised", "medium", 1),
            s("escalated", "high", 2),
            s("resolved", "none", 10)
        ],
        "{}",
        show(&o)
    );
    assert_eq!(
        story("B", "tachycardia"),
        vec![s("raised", "medium", 0), s("repeated", "medium", 30)]
    );
    assert_eq!(story("C", "desaturation"), vec![s("raised", "high", 2)]);
    let c = events
        .iter()
        .find(|e| of(e) == "C" && e["payload"]["rule"] == "desaturation")
        .unwrap();
    assert_eq!(list(&c["payload"]["observations"]), "C-0,C-1,C-2");
    let a = events
        .iter()
        .find(|e| of(e) == "A" && e["metadata"]["eventType"] == "clinical.alert.escalated")
        .unwrap();
    assert_eq!(a["payload"]["score"], 7);
    assert_eq!(
        a["payload"]["subScores"],
        serde_json::json!({"air-or-oxygen": 0, "pulse": 2, "respiration-rate": 3, "spo2": 2, "systolic-bp": 0, "temperature": 0})
    );
    assert_eq!(list(&a["payload"]["missing"]), "consciousness");
    // One alert id from raise to resolution; patients are pseudonyms.
    let ids: BTreeSet<&str> = events
        .iter()
        .filter(|e| of(e) == "A" && e["payload"]["rule"] == "news2")
        .map(|e| e["payload"]["alertId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    for e in &events {
        let patient = e["payload"]["patient"].as_str().unwrap();
        assert!(patient.len() == 32 && patient.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

#[test]
fn the_live_icu_job_alerts_through_kafka_without_phi() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The broker in a process of its own, so that the alert topic can be read after the run; fed
    // as the job's `[embedded]` section feeds its own: the context, then live readings stamped
    // with the wall clock.
    let broker = BrokerProcess::start(&["vitals:8", "patient-context:4", "alert-events:2"]);
    let (patients, count, interval_secs) = (1000, 6000, 60);
    let generator = Generator::new(GeneratorConfig {
        seed: 42,
        patients,
        count,
        interval_secs,
        start: chrono::Utc::now()
            - chrono::Duration::seconds(
                i64::try_from(count.div_ceil(patients) * u64::from(interval_secs)).unwrap(),
            ),
        ..GeneratorConfig::default()
    });
    let topics = FlatTopics {
        vitals: "vitals".into(),
        context: "patient-context".into(),
    };
    let timeout = std::time::Duration::from_secs(60);
    feed_context(&broker.bootstrap, &generator, &topics, timeout).unwrap();
    let fed = feed_flat(
        &broker.bootstrap,
        &generator,
        &topics,
        6000,
        timeout,
        || false,
    )
    .unwrap();
    assert_eq!(fed, count);
    let o = vitalflow(
        &[
            "run",
            "dataflows/icu-alerting.toml",
            "--out",
            out.to_str().unwrap(),
        ],
        &[("KAFKA_BROKERS", &broker.bootstrap)],
    );
    assert!(o.status.success(), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let events = alerts(&out);
    assert!(
        events.len() > 10,
        "{} alert events: {}",
        events.len(),
        show(&o)
    );
    // The topic holds the same alert events as the JSON-lines output, each once.
    let mut in_topic: Vec<String> = broker
        .read_topic("alert-events")
        .iter()
        .map(|p| {
            serde_json::from_slice::<serde_json::Value>(p)
                .unwrap()
                .to_string()
        })
        .collect();
    let mut in_files: Vec<String> = events.iter().map(ToString::to_string).collect();
    in_topic.sort();
    in_files.sort();
    assert_eq!(
        in_topic.len(),
        in_files.len(),
        "alert events in the topic and in alerts/"
    );
    assert!(
        in_topic == in_files,
        "the topic's alert events differ from alerts/"
    );
    assert!(stdout.contains("arrival → alert"), "{}", show(&o));
    assert!(
        stdout.contains("RAISED"),
        "the console sink prints alerts: {}",
        show(&o)
    );
    let wards: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["payload"]["ward"].as_str())
        .collect();
    assert!(wards.contains("ICU"), "wards come from the join: {wards:?}");
    assert!(
        events.iter().all(|e| e["payload"]["observations"][0]
            .as_str()
            .unwrap()
            .starts_with("vitals/")),
        "observations are named by their Kafka record"
    );
    // No PHI in the alerts, the topic, on standard output, or anywhere in the output folder.
    let phi = generator.phi_values();
    let patient_ids: Vec<&String> = phi.iter().filter(|v| v.starts_with('P')).collect();
    assert!(
        patient_ids.len() >= 1000,
        "{} patient ids",
        patient_ids.len()
    );
    let mut haystack = stdout.clone();
    for e in &in_topic {
        haystack.push_str(e);
    }
    for f in output_files(&out) {
        haystack.push_str(&scannable_text(&f));
    }
    let hits: Vec<&String> = PhiScan::new(&phi)
        .found(&haystack)
        .into_iter()
        .map(|i| &phi[i])
        .collect();
    assert!(hits.is_empty(), "PHI in the alerts' output: {hits:?}");
}

#[test]
fn missing_patient_context_is_reported_not_scored_as_air_on_scale_1() {
    // The shipped live job's join and alert node, fed from files: patient A has a context row,
    // patient B none.
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(root().join("dataflows/icu-alerting.toml")).unwrap();
    let from = shipped.find("[operators.context-at-reading]").unwrap();
    let to = shipped
        .find("[operators.icu-alerts.rules.desaturation]")
        .unwrap();
    let nodes = &shipped[from..to];
    let mut readings = String::new();
    for p in ["A", "B"] {
        for minute in 0..3 {
            let _ = writeln!(
                readings,
                r#"{{"patient_id":"{p}","ts":{},"ward":"ED","hr":120,"spo2":91,"rr":25,"temp":37.0,"sbp":120,"dbp":80}}"#,
                1_767_225_600_000i64 + minute * 60_000
            );
        }
    }
    std::fs::write(dir.path().join("vitals.jsonl"), readings).unwrap();
    std::fs::write(
        dir.path().join("context.jsonl"),
        r#"{"patient_id":"A","since":1767222000000,"ward":"ICU","on_oxygen":false,"spo2_scale":1}
"#,
    )
    .unwrap();
    let job = format!(
        r#"[job]
name = "context"
workers = 2

[sources.vitals]
kind = "file"
path = "vitals.jsonl"
format = "json"
event-time = "ts"
key = "patient_id"
fields = [
  {{ name = "patient_id", type = "string", phi = "hash" }},
  {{ name = "ts", type = "timestamp", format = "epoch-ms", phi = "date" }},
  {{ name = "ward", type = "string" }},
  {{ name = "hr", type = "integer" }},
  {{ name = "spo2", type = "integer" }},
  {{ name = "rr", type = "integer" }},
  {{ name = "temp", type = "float", nullable = true }},
  {{ name = "sbp", type = "integer" }},
  {{ name = "dbp", type = "integer" }},
]

[sources.patient-context]
kind = "file"
path = "context.jsonl"
format = "json"
event-time = "since"
key = "patient_id"
fields = [
  {{ name = "patient_id", type = "string", phi = "hash" }},
  {{ name = "since", type = "timestamp", format = "epoch-ms", phi = "date" }},
  {{ name = "ward", type = "string" }},
  {{ name = "on_oxygen", type = "boolean" }},
  {{ name = "spo2_scale", type = "integer" }},
]

{nodes}
[sinks.alerts]
kind = "jsonl"
inputs = ["icu-alerts"]
path = "alerts"
"#
    );
    let (out, o) = run_job(dir.path(), &job, &[]);
    let events = alerts(&out);
    let news2 = |ward: &str| {
        events
            .iter()
            .find(|e| e["payload"]["rule"] == "news2" && e["payload"]["ward"] == ward)
            .unwrap_or_else(|| panic!("no NEWS2 alert on ward {ward}: {}", show(&o)))
    };
    // A: on air, scale 1, from its context row; B: neither is known, and the alert says so.
    let a = &news2("ICU")["payload"];
    assert_eq!(list(&a["missing"]), "consciousness", "{a}");
    assert_eq!(a["subScores"]["air-or-oxygen"], 0, "{a}");
    let b = &news2("ED")["payload"];
    assert_eq!(
        list(&b["missing"]),
        "air-or-oxygen,consciousness,spo2-scale",
        "{b}"
    );
    assert!(b["subScores"]["air-or-oxygen"].is_null(), "{b}");
    assert_eq!(
        b["score"], 8,
        "respiration 3, SpO2 3 on scale 1, pulse 2: {b}"
    );
    // The run summary counts the readings scored without their context.
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(
            "alert icu-alerts · missing context: air-or-oxygen in 3 reading(s), spo2-scale in 3 reading(s)"
        ),
        "{}",
        show(&o)
    );
}
