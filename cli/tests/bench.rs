//! `vitalflow bench` (the throughput harness) on a small load, and the `blackhole` sink it
//! measures sources with.
#![allow(clippy::unwrap_used)]

use crate::support::{run_job, show, vitalflow};

#[test]
fn the_harness_measures_the_pipeline_and_its_baselines_on_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json, md) = (
        dir.path().join("bench"),
        dir.path().join("bench.json"),
        dir.path().join("bench.md"),
    );
    let o = vitalflow(
        &[
            "bench",
            "--events",
            "4000",
            "--scales",
            "1,2",
            "--patients",
            "200",
            "--rate",
            "4000",
            "--seconds",
            "1",
            "--profile",
            "--rounds",
            "2",
            "--endpoint-rounds",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--markdown",
            md.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();

    // Each scale ran its multiple of the events, and every generator byte was counted.
    let pipeline = v["pipeline"].as_array().unwrap();
    assert_eq!(pipeline.len(), 2, "{v:#}");
    for (run, events) in pipeline.iter().zip([4000, 8000]) {
        assert_eq!(run["events"], events, "{v:#}");
        assert!(run["bytes"].as_u64().unwrap() > 100 * events, "{v:#}");
        assert!(run["events_per_s"].as_f64().unwrap() > 0.0, "{v:#}");
        assert!(run["peak_rss_bytes"].as_u64().unwrap() > 0, "{v:#}");
    }
    assert!(pipeline[0]["alert_events"].as_u64().unwrap() > 0, "{v:#}");

    // Three baselines, the endpoint's cost (wall-clock and CPU time) and the cluster row, each
    // measured: the harness refuses a loop that did other work.
    let ratios = v["ratios"].as_array().unwrap();
    let names: Vec<&str> = ratios.iter().map(|r| r["what"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names[0].contains("straight-line"), "{names:?}");
    assert!(names[1].contains("Kafka"), "{names:?}");
    assert!(names[2].contains("ArrowWriter"), "{names:?}");
    assert!(names[3].contains("with --listen"), "{names:?}");
    assert!(names[4].contains("CPU time"), "{names:?}");
    assert!(names[5].contains("--spawn 2"), "{names:?}");
    for r in ratios {
        assert!(r["vitalflow"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["baseline"].as_f64().unwrap() > 0.0, "{r}");
    }
    // The Kafka source's workers against as many raw consumers, each on a thread, as the
    // table says.
    assert!(
        names[1].contains("2 workers, vs 2 raw rdkafka consumers on 2 threads"),
        "{names:?}"
    );
    // The loop was checked against the engine's 1× run on the content of every sink of the
    // job, dead letters and the audit log included.
    let same: Vec<(&str, u64)> = v["same_work"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["sink"].as_str().unwrap(), w["rows"].as_u64().unwrap()))
        .collect();
    let mut sinks: Vec<&str> = same.iter().map(|(s, _)| *s).collect();
    sinks.sort_unstable();
    assert_eq!(
        sinks,
        [
            "alert-events",
            "audit-log",
            "dead-letter",
            "fhir",
            "vitals-5m"
        ],
        "{v:#}"
    );
    assert!(
        same.iter()
            .all(|(sink, rows)| *rows > 0 || *sink == "dead-letter"),
        "{same:?}"
    );
    // Every baseline is each side's best of `--rounds` measurements, the endpoint's rows the
    // median of `--endpoint-rounds` paired ones, each printed as it is taken.
    let rounds: Vec<(u64, &str)> = ratios
        .iter()
        .map(|r| (r["rounds"].as_u64().unwrap(), r["taken"].as_str().unwrap()))
        .collect();
    let (best, median) = ((2, "best"), (3, "median pair"));
    assert_eq!(
        rounds,
        [best, best, best, median, median, best],
        "{ratios:?}"
    );
    let printed = String::from_utf8_lossy(&o.stdout);
    for line in [
        "engine round 2:",
        "Kafka round 2:",
        "Parquet round 2:",
        "endpoint round 3:",
        "cluster round 2:",
    ] {
        assert!(printed.contains(line), "{printed}");
    }
    // The runs with the endpoint were scraped while they ran, every scrape answered.
    let scrapes: u64 = printed
        .lines()
        .find_map(|l| l.strip_prefix("endpoint: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no endpoint line: {printed}"));
    assert!(scrapes >= 6, "{printed}");
    // Each endpoint round gives both runs' CPU time, and the server thread's share is printed.
    let cpu_rounds = printed
        .lines()
        .filter(|l| l.starts_with("endpoint round ") && l.matches("(CPU ").count() == 2)
        .count();
    assert_eq!(cpu_rounds, 3, "{printed}");
    assert!(printed.contains("the server's thread took "), "{printed}");
    // Where the Parquet sink writer's best round went: building Arrow batches from the rows,
    // then encoding and writing them, both measured and within its time.
    let parquet = &v["parquet"];
    let seconds = |k: &str| parquet[k].as_f64().unwrap();
    assert!(parquet["rows"].as_u64().unwrap() > 0, "{parquet:#}");
    assert!(seconds("sink_convert_seconds") > 0.0, "{parquet:#}");
    assert!(seconds("sink_encode_seconds") > 0.0, "{parquet:#}");
    assert!(
        seconds("sink_convert_seconds") + seconds("sink_encode_seconds") <= seconds("sink_seconds"),
        "{parquet:#}"
    );
    assert!(
        printed.contains("grouping the rows by file and building Arrow batches"),
        "{printed}"
    );
    // The least that building can cost: a bare loop copying every row's FHIR JSON (hundreds of
    // bytes each), timed.
    let rows = parquet["rows"].as_u64().unwrap();
    assert!(
        parquet["json_copy_bytes"].as_u64().unwrap() > 300 * rows,
        "{parquet:#}"
    );
    assert!(seconds("json_copy_seconds") > 0.0, "{parquet:#}");
    assert!(
        printed.contains("a bare loop copying the rows' FHIR JSON"),
        "{printed}"
    );

    // Every record of every source, the context table's included, completed exactly once.
    let latency = &v["latency"];
    assert_eq!(
        latency["end_to_end"]["count"], latency["source_records"],
        "{latency:#}"
    );
    assert!(latency["source_records"].as_u64().unwrap() > 4000);
    assert!(latency["arrival_to_alert"]["count"].as_u64().unwrap() > 0);

    // The paced run was profiled: its operators by busy time, the nodes among them, not the
    // dataflow that holds them.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("operator "))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(table.len() > 5, "{stdout}");
    for node in ["monitors", "context-at-reading", "alerts", "canonize"] {
        let row = table
            .iter()
            .find(|l| l.split_whitespace().next() == Some(node));
        let activations: u64 = row
            .and_then(|r| r.split_whitespace().nth(1))
            .map(|a| a.replace(',', "").parse().unwrap())
            .unwrap_or_else(|| panic!("no row for `{node}`: {stdout}"));
        assert!(activations > 0, "{stdout}");
    }
    assert!(!table.iter().any(|l| l.starts_with("Dataflow")), "{stdout}");

    // The README's table comes from the same figures.
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.contains("| pipeline 1× | 4,000 |"), "{table}");
    assert!(table.contains("| pipeline 2× | 8,000 |"), "{table}");
    assert!(table.contains("vitalflow bench --events 4000"), "{table}");
    assert!(table.contains("median of 3 paired rounds"), "{table}");
    assert!(
        table.contains("Same work: the straight-line loop's sinks"),
        "{table}"
    );
    assert!(table.contains("`audit-log`"), "{table}");
    // The job it ran is left for reading and rerunning.
    let job = std::fs::read_to_string(out.join("bench.toml")).unwrap();
    assert!(job.contains("kind = \"alert\""), "{job}");
}

#[test]
fn the_engine_baseline_runs_the_1x_job_when_no_scale_is_1x() {
    // The straight-line loop does the 1× run's work, so its rows are checked against a 1× run
    // of the pipeline even when the scales start elsewhere.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = vitalflow(
        &[
            "bench",
            "--events",
            "2000",
            "--scales",
            "2",
            "--patients",
            "100",
            "--rate",
            "0",
            "--no-kafka",
            "--rounds",
            "1",
            "--out",
            dir.path().join("bench").to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["pipeline"][0]["events"], 4000, "{v:#}");
    let engine = &v["ratios"][0];
    assert!(
        engine["what"].as_str().unwrap().contains("straight-line"),
        "{v:#}"
    );
    assert!(engine["vitalflow"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("engine round 1: pipeline at 1×"),
        "{}",
        show(&o)
    );
}

#[test]
fn a_blackhole_counts_what_reaches_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (out, o) = run_job(
        dir.path(),
        r#"
[job]
name = "discard"

[sources.generator]
kind = "generator"
patients = 20
count = 700

[sinks.discard]
kind = "blackhole"
inputs = ["generator"]
"#,
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("discard"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[1], "blackhole", "{line}");
    assert_eq!(cells[2], "700", "{line}");
    assert_eq!(cells[3], "0", "{line}");
    assert!(
        !out.join("discard").exists(),
        "a blackhole writes no files: {}",
        out.display()
    );
}

#[test]
fn a_blackhole_refuses_phi_bearing_records() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        r#"
[job]
name = "discard"

[sources.generator]
kind = "generator"

[operators.ingest]
kind = "ingest"
inputs = ["generator"]

[sinks.discard]
kind = "blackhole"
inputs = ["ingest"]
"#,
    )
    .unwrap();
    let o = vitalflow(&["validate", job.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("job.toml:"), "{err}");
    assert!(err.contains("discard"), "{err}");
}

/// Measured figures in a line of prose or a table: a number followed by a unit of measurement,
/// other than a target (`≤ 10 ms`), a load (`at 100,000 readings/s`) or a setting (`the newest
/// 5 MiB`).
fn measured_figures(line: &str) -> Vec<String> {
    const UNITS: [&str; 10] = [
        " ns/record",
        " ms",
        " MiB",
        " GiB",
        " MB",
        " GB",
        " records/s",
        " readings/s",
        " events/s",
        " rows/s",
    ];
    const NOT_MEASURED: [&str; 5] = ["≤ ", "at ", "Targets: ", "newest ", "target "];
    let mut found = Vec::new();
    for unit in UNITS {
        let mut from = 0;
        while let Some(i) = line[from..].find(unit) {
            let at = from + i;
            from = at + unit.len();
            if line[from..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric)
            {
                continue;
            }
            let head = &line[..at];
            let before =
                head.trim_end_matches(|c: char| c.is_ascii_digit() || c == ',' || c == '.');
            if before.len() == head.len() || NOT_MEASURED.iter().any(|p| before.ends_with(p)) {
                continue;
            }
            found.push(line[before.len()..from].to_owned());
        }
    }
    found
}

#[test]
fn the_readme_shows_only_figures_a_script_wrote() {
    // Every measured figure of the README is in the table `scripts/bench` writes, with the
    // command that made it; figures of other runs live in docs/benchmarks.md, each with its
    // command and date.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    // The quickstart's output is written by `scripts/quickstart`, with its command, too.
    let (head, rest) = readme.split_once("<!-- quickstart:begin -->").unwrap();
    let (quickstart, rest) = rest.split_once("<!-- quickstart:end -->").unwrap();
    assert!(
        quickstart.trim().is_empty()
            || quickstart
                .trim_start()
                .starts_with("Command: `scripts/quickstart`"),
        "{quickstart}"
    );
    let readme = format!("{head}{rest}");
    let (before, rest) = readme.split_once("<!-- bench:begin -->").unwrap();
    let (table, after) = rest.split_once("<!-- bench:end -->").unwrap();
    assert!(table.contains("Command: `vitalflow bench"), "{table}");
    let typed: Vec<String> = before
        .lines()
        .chain(after.lines())
        .filter(|l| !measured_figures(l).is_empty())
        .map(|l| format!("{:?}: {l}", measured_figures(l)))
        .collect();
    assert!(
        typed.is_empty(),
        "figures typed into README.md outside the harness's table:\n{}",
        typed.join("\n")
    );
    // The checker finds the figures it is meant to find.
    assert_eq!(
        measured_figures("| 1M | 181.1 MiB | 186.0 MiB | score 154 ns/record, p99 1.19 ms"),
        ["154 ns/record", "1.19 ms", "181.1 MiB", "186.0 MiB"]
    );
    assert!(measured_figures("p99 ≤ 10 ms at 100,000 readings/s").is_empty());
}
