//! `vitalflow run --listen`: the HTTP endpoint beside a running job. Metrics scraped while the
//! job runs and after it ended (`--linger`), read by the Python `prometheus_client` parsers;
//! Kafka partitions' offsets and lag; health checks; the job's graph as JSON; a refused
//! non-loopback address.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    free_port, output_files, python, python_check, root, send_signal, show, vitalflow,
};

/// With the endpoint on, one record in this many of each source on each worker is timed from
/// arrival to durability, as docs/operations.md says.
const TIMED_EVERY: f64 = 16.0;

/// `GET path`: the status code and the body, or `None` if nothing answers.
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// The metric families docs/operations.md lists in its metrics table, as served (counters
/// with their `_total`, histograms by their family's name).
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let table = doc.split("## Metrics").nth(1).unwrap();
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect()
}

/// Sample values by name and labels, of one scrape.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn samples(parsed: &Value) -> Samples {
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                (s["name"].as_str().unwrap().to_owned(), labels),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The metrics a scrape serves: its samples' names, except that a histogram's `_bucket`,
/// `_count` and `_sum` samples stand for their family.
fn served(parsed: &Value) -> BTreeSet<String> {
    parsed["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = if s["type"] == "histogram" {
                "family"
            } else {
                "name"
            };
            s[key].as_str().unwrap().to_owned()
        })
        .collect()
}

/// One histogram of a scrape, by its family's name and labels (`le` aside): its buckets in the
/// order of their bounds (bound, cumulative count), its count and its sum.
fn histogram(
    samples: &Samples,
    name: &str,
    labels: &[(&str, &str)],
) -> (Vec<(f64, f64)>, f64, f64) {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|((n, l), _)| {
            n == &format!("{name}_bucket")
                && l.len() == labels.len() + 1
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|((_, l), v)| (l["le"].parse::<f64>().unwrap(), *v))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = value(samples, &format!("{name}_count"), labels);
    let sum = value(samples, &format!("{name}_sum"), labels);
    (buckets, count, sum)
}

/// A histogram's buckets are cumulative: counts that never fall, up to the `+Inf` bucket,
/// which holds every value; and its mean lies within the buckets that hold its values.
fn check_histogram(what: &str, (buckets, count, sum): &(Vec<(f64, f64)>, f64, f64)) {
    assert!(buckets.len() > 1, "{what}: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, *count), "{what}");
    for pair in buckets.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{what}: buckets fall: {buckets:?}");
    }
    if *count > 0.0 {
        let mean = sum / count;
        let above = buckets
            .iter()
            .rev()
            .find(|(_, n)| *n == 0.0)
            .map_or(0.0, |(le, _)| *le);
        let below = buckets.iter().find(|(_, n)| n == count).unwrap().0;
        assert!(
            mean >= above * 0.999 && mean <= below * 1.001,
            "{what}: mean {mean} outside the buckets of its values: {buckets:?}"
        );
    }
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    *samples
        .get(&key)
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {samples:?}"))
}

/// The live-alerting job on the embedded broker's paced feed (a few seconds): scraped while it
/// runs and after; every documented metric present, counters growing, the final counts the
/// summary's, every partition's lag 0 at the end of the input; readiness 503 until the first
/// checkpoint, then 200.
#[test]
fn a_running_job_serves_metrics_health_and_its_graph() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("out");
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args(["run", "dataflows/icu-alerting.toml", "--out"])
        .arg(&out)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--linger", "5s"])
        .env("VITALFLOW_FEED_COUNT", "30000")
        .env("VITALFLOW_FEED_RATE", "6000")
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let stderr_text = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    // Readiness: 503 with a reason until the first checkpoint, then 200.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut not_ready = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "never ready: {}", stderr_text());
        match get(port, "/health/ready") {
            Some((200, body)) => {
                assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);
                break;
            }
            Some((503, body)) => not_ready.push(serde_json::from_str::<Value>(&body).unwrap()),
            Some(other) => panic!("/health/ready answered {other:?}"),
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!not_ready.is_empty(), "ready at the first answer");
    for r in &not_ready {
        assert_eq!(r["ready"], false);
        assert!(r["reason"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    }
    assert_eq!(get(port, "/health/live").unwrap().0, 200);

    // Two scrapes a second apart while the feed goes on.
    let mut scrapes = Vec::new();
    for _ in 0..2 {
        let (code, text) = get(port, "/metrics").unwrap();
        assert_eq!(code, 200);
        scrapes.push(text);
        std::thread::sleep(Duration::from_secs(1));
    }
    let (code, running_job) = get(port, "/api/job").unwrap();
    assert_eq!(code, 200);
    let running_job: Value = serde_json::from_str(&running_job).unwrap();
    assert_eq!(running_job["phase"], "running", "{running_job}");

    // The summary is printed; the endpoint lingers with the final counts.
    let mut summary = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no summary: {}", stderr_text()));
        let done = line.starts_with("output: ");
        summary.push(line);
        if done {
            break;
        }
    }
    let (code, text) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    scrapes.push(text);
    let (code, body) = get(port, "/api/job").unwrap();
    assert_eq!(code, 200);
    let job: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(get(port, "/health/live").unwrap().0, 503);
    assert_eq!(get(port, "/health/ready").unwrap().0, 503);
    assert_eq!(get(port, "/nowhere").unwrap().0, 404);
    let (code, page) = get(port, "/").unwrap();
    assert_eq!(code, 200);
    // Self-contained: no address but the SVG namespace, no script or style fetched.
    let page = page.replace("http://www.w3.org/2000/svg", "");
    assert!(page.contains("/api/job"));
    for fetched in ["http://", "https://", "<script src", "<link", "@import"] {
        assert!(!page.contains(fetched), "the page fetches {fetched}");
    }

    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "{status:?}: {}", stderr_text());

    let mut files = Vec::new();
    for (i, text) in scrapes.iter().enumerate() {
        let path = dir.path().join(format!("metrics-{i}.txt"));
        std::fs::write(&path, text).unwrap();
        files.push(path.to_str().unwrap().to_owned());
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let parsed = python_check(&py, "metrics_parse.py", &args);
    let parsed = parsed.as_array().unwrap();
    let [first, second, last] = [0, 1, 2].map(|i| samples(&parsed[i]));

    // Every documented metric is served, and every one served is documented.
    assert_eq!(
        served(&parsed[2]),
        documented_metrics(),
        "served (left) vs docs/operations.md (right)"
    );

    // Counters grow while the job runs.
    let processed = |s: &Samples| value(s, "events_processed_total", &[]);
    assert!(processed(&first) > 0.0);
    assert!(
        processed(&second) > processed(&first),
        "{} then {}",
        processed(&first),
        processed(&second)
    );
    assert!(processed(&last) >= processed(&second));
    for ((name, labels), v) in &first {
        if name.ends_with("_total") {
            assert!(
                last[&(name.clone(), labels.clone())] >= *v,
                "{name} {labels:?} fell"
            );
        }
    }

    // The final counts are the summary's.
    let summary = summary.join("\n");
    let read: f64 = summary
        .lines()
        .find_map(|l| {
            l.split_once(" source records in ")
                .map(|(n, _)| n.parse().unwrap())
        })
        .unwrap();
    assert_eq!(processed(&last), read);
    for line in summary
        .lines()
        .skip_while(|l| !l.starts_with("node "))
        .skip(1)
    {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() != 7 {
            break;
        }
        let labels = [("node", cells[0]), ("kind", cells[1])];
        assert_eq!(
            value(&last, "vitalflow_node_records_in_total", &labels).to_string(),
            cells[2]
        );
        assert_eq!(
            value(&last, "vitalflow_node_records_out_total", &labels).to_string(),
            cells[3]
        );
        assert_eq!(
            value(&last, "vitalflow_node_records_rejected_total", &labels).to_string(),
            cells[4]
        );
    }
    assert_eq!(value(&last, "vitalflow_run_running", &[]), 0.0);
    assert!(value(&last, "vitalflow_checkpoints_total", &[]) >= 1.0);
    assert!(
        value(
            &last,
            "vitalflow_source_watermark_seconds",
            &[("source", "vitals")]
        ) > 1.0e9
    );

    // Every Kafka partition read to its end: lag 0, and the offsets of a source's partitions
    // add up to the records it read.
    for source in ["vitals", "patient-context"] {
        let of = |name: &str| -> Vec<f64> {
            last.iter()
                .filter(|((n, l), _)| {
                    n == name && l.get("source").map(String::as_str) == Some(source)
                })
                .map(|(_, v)| *v)
                .collect()
        };
        let (offsets, lags) = (
            of("vitalflow_kafka_partition_offset"),
            of("kafka_consumergroup_lag"),
        );
        let partitions = if source == "vitals" { 8 } else { 4 };
        assert_eq!(offsets.len(), partitions, "{source}");
        assert_eq!(lags, vec![0.0; partitions], "{source}");
        assert_eq!(
            offsets.iter().sum::<f64>(),
            value(
                &last,
                "vitalflow_node_records_in_total",
                &[("node", source), ("kind", "kafka")]
            ),
            "{source}"
        );
    }

    // Arrival → alert: in every scrape, one value for each alert event counted (every reading
    // comes from a source, with its arrival), in cumulative buckets.
    for (i, scrape) in [&first, &second, &last].into_iter().enumerate() {
        let alerted: f64 = scrape
            .iter()
            .filter(|((name, l), _)| {
                name == "vitalflow_alerts_total" && l.get("node").is_some_and(|n| n == "icu-alerts")
            })
            .map(|(_, v)| v)
            .sum();
        let latency = histogram(
            scrape,
            "vitalflow_alert_latency_seconds",
            &[("node", "icu-alerts")],
        );
        check_histogram(&format!("scrape {i}: alert latency"), &latency);
        assert_eq!(latency.1, alerted, "scrape {i}");
    }
    assert!(
        histogram(
            &last,
            "vitalflow_alert_latency_seconds",
            &[("node", "icu-alerts")]
        )
        .1 > 0.0
    );

    // Arrival → durable in every sink that writes: one record in TIMED_EVERY of each of the two
    // sources on each of the two workers is timed. The count grows while the job runs and, at
    // the end, holds every record timed.
    let processing: Vec<_> = [&first, &second, &last]
        .into_iter()
        .map(|s| histogram(s, "event_processing_duration_seconds", &[]))
        .collect();
    for (i, h) in processing.iter().enumerate() {
        check_histogram(&format!("scrape {i}: processing"), h);
    }
    let counts: Vec<f64> = processing.iter().map(|h| h.1).collect();
    assert!(
        counts[0] <= counts[1] && counts[1] < counts[2],
        "{counts:?}"
    );
    let read = ["vitals", "patient-context"]
        .map(|source| {
            value(
                &last,
                "vitalflow_node_records_in_total",
                &[("node", source), ("kind", "kafka")],
            )
        })
        .iter()
        .sum::<f64>();
    assert!(
        counts[2] >= read / TIMED_EVERY && counts[2] <= read / TIMED_EVERY + 4.0,
        "{} timed of {read} read",
        counts[2]
    );
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    assert!(doc.contains(&format!("One record in {TIMED_EVERY} of each source")));

    // Bytes written: a file sink's are the size of its folder's files; the Kafka sink's are its
    // records' keys and values, the same alert events as the JSON lines, each line the record's
    // value and a line break, its key the patient's pseudonym.
    let written = |node: &str, kind: &str| {
        value(
            &last,
            "vitalflow_node_written_bytes_total",
            &[("node", node), ("kind", kind)],
        )
    };
    let size = |dir: &str| -> u64 {
        let files = if dir == "dead-letter" {
            std::fs::read_dir(out.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            output_files(&out.join(dir))
        };
        files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    assert!(size("alerts") > 0);
    assert_eq!(written("alerts", "jsonl"), size("alerts") as f64);
    assert_eq!(
        written("dead-letter", "dead-letter"),
        size("dead-letter") as f64
    );
    let records: u64 = output_files(&out.join("alerts"))
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .map(|line| {
                    let event: Value = serde_json::from_str(line).unwrap();
                    (line.len() + event["payload"]["patient"].as_str().unwrap().len()) as u64
                })
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(written("alert-events", "kafka"), records as f64);
    for (node, kind) in [
        ("vitals", "kafka"),
        ("icu-alerts", "alert"),
        ("live", "console"),
    ] {
        assert_eq!(written(node, kind), 0.0, "{node}");
    }

    // The graph: every node with its kind and inputs, and its final counts.
    assert_eq!(job["job"], "icu-alerting");
    assert_eq!(job["phase"], "finished");
    let nodes = job["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"vitals") && names.contains(&"icu-alerts"),
        "{names:?}"
    );
    let alerts = nodes.iter().find(|n| n["name"] == "icu-alerts").unwrap();
    assert_eq!(alerts["kind"], "alert");
    assert_eq!(alerts["inputs"], serde_json::json!(["context-at-reading"]));
    assert_eq!(
        alerts["records_in"].as_f64().unwrap(),
        value(
            &last,
            "vitalflow_node_records_in_total",
            &[("node", "icu-alerts"), ("kind", "alert")]
        )
    );
    let jsonl = nodes.iter().find(|n| n["name"] == "alerts").unwrap();
    assert_eq!(
        jsonl["bytes_written"].as_f64().unwrap(),
        written("alerts", "jsonl")
    );
    assert_eq!(job["watermarks"].as_array().unwrap().len(), 2, "{job}");
    assert!(
        job["checkpoints"]["written"].as_u64().unwrap() >= 1,
        "{job}"
    );
    assert!(!job["alerts"].as_array().unwrap().is_empty(), "{job}");
}

/// A non-loopback `--listen` is refused without `--listen-any`.
#[test]
fn listening_beyond_loopback_needs_listen_any() {
    let o = vitalflow(
        &["run", "dataflows/quickstart.toml", "--listen", "0.0.0.0:0"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a loopback address") && err.contains("--listen-any"),
        "{err}"
    );
}

/// Chromium for the status page test: `chromium` on the path (scripts/test installs it), else a
/// loud skip, an error when `VITALFLOW_REQUIRE_BROWSER` is set.
fn chromium() -> Option<String> {
    let found = std::env::var("PATH").ok().and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    });
    if found.is_none() {
        assert!(
            std::env::var("VITALFLOW_REQUIRE_BROWSER").is_err(),
            "VITALFLOW_REQUIRE_BROWSER is set but there is no chromium on the path"
        );
        eprintln!(
            "!!! SKIPPED the status page in a browser: no chromium (scripts/test installs it)"
        );
    }
    found
}

/// Runs headless Chromium on `url` for a few seconds of the page's time: the page as its script
/// left it (`--dump-dom`), or a screenshot into `png`.
fn browse(chromium: &str, url: &str, png: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1400,900",
        "--virtual-time-budget=4000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match png {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let o = cmd.arg(url).output().unwrap();
    assert!(o.status.success(), "chromium: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A count as the page shows it (`987`, `12.3k`, `1.23M`), and how far off the shown figure may be.
fn shown(text: &str) -> (f64, f64) {
    let t = text.trim();
    if let Some(k) = t.strip_suffix('k') {
        (k.parse::<f64>().unwrap() * 1e3, 50.0)
    } else if let Some(m) = t.strip_suffix('M') {
        (m.parse::<f64>().unwrap() * 1e6, 5_000.0)
    } else {
        (t.parse().unwrap(), 0.0)
    }
}

/// The `in` count the page shows for each node card (`<div class="node" data-node="NAME">`).
fn page_counts(dom: &str) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for card in dom.split("data-node=\"").skip(1) {
        let name = card.split('"').next().unwrap().to_owned();
        let count = card
            .split("class=\"n in\">")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .map_or(-1.0, |t| shown(t).0);
        counts.insert(name, count);
    }
    counts
}

/// The status page in a real browser: it shows every node of the graph, and a node's count
/// grows from one look to the next and lies between what `/api/job` said just before and just
/// after. A screenshot is saved in the test output.
#[test]
fn the_status_page_shows_the_graph_and_live_counts_in_a_browser() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("paced.toml");
    std::fs::write(
        &job,
        r#"[job]
name = "paced"
workers = 2

[sources.monitors]
kind = "generator"
count = 100000000
patients = 200
rate = 3000

[operators.ingest]
kind = "ingest"
inputs = ["monitors"]

[operators.anonymize]
kind = "anonymize"
inputs = ["ingest"]
key = "ephemeral"

[operators.canonize]
kind = "canonize"
inputs = ["anonymize"]

[sinks.fhir]
kind = "parquet"
inputs = ["canonize"]
"#,
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitalflow"))
        .args(["run", job.to_str().unwrap(), "--no-progress", "--out"])
        .arg(dir.path().join("out"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/health/ready").map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let api = || -> Value { serde_json::from_str(&get(port, "/api/job").unwrap().1).unwrap() };
    let read = |job: &Value| {
        job["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "monitors")
            .map(|n| n["records_in"].as_f64().unwrap())
            .unwrap()
    };
    let url = format!("http://127.0.0.1:{port}/");
    let mut looks = Vec::new();
    for _ in 0..2 {
        let before = read(&api());
        let dom = browse(&chromium, &url, None);
        let after = read(&api());
        looks.push((before, page_counts(&dom), after));
        std::thread::sleep(Duration::from_secs(1));
    }
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browse(&chromium, &url, Some(&png));
    send_signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    let nodes: BTreeSet<String> = ["monitors", "ingest", "anonymize", "canonize", "fhir"]
        .map(str::to_owned)
        .into();
    for (before, counts, after) in &looks {
        assert_eq!(
            counts.keys().cloned().collect::<BTreeSet<_>>(),
            nodes,
            "{counts:?}"
        );
        let shown = counts["monitors"];
        assert!(
            shown >= before - 50.0 && shown <= after + 50.0,
            "the page shows {shown} read; /api/job said {before} before and {after} after"
        );
    }
    assert!(
        looks[1].1["monitors"] > looks[0].1["monitors"],
        "the count did not grow: {looks:?}"
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot of {size} bytes");
    eprintln!("status page screenshot: {}", png.display());
}

/// A Kafka partition: its topic and number.
type TopicPartition = (String, i32);

/// A partition's figures in one scrape: offset, end offset and lag, where served.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Served {
    offset: Option<f64>,
    end: Option<f64>,
    lag: Option<f64>,
}

/// The Kafka partition samples of a scrape, by (topic, partition). Every sample must carry the
/// source that reads its topic (`sources`: topic → source) and the lag the job's group.
fn partitions_served(
    s: &Samples,
    sources: &BTreeMap<String, String>,
    group: &str,
) -> BTreeMap<TopicPartition, Served> {
    let mut served: BTreeMap<TopicPartition, Served> = BTreeMap::new();
    for ((name, labels), v) in s {
        let field: fn(&mut Served) -> &mut Option<f64> = match name.as_str() {
            "vitalflow_kafka_partition_offset" => |p| &mut p.offset,
            "vitalflow_kafka_partition_end_offset" => |p| &mut p.end,
            "kafka_consumergroup_lag" => {
                assert_eq!(labels["consumergroup"], group, "{labels:?}");
                |p| &mut p.lag
            }
            _ => continue,
        };
        let topic = labels["topic"].clone();
        assert_eq!(
            sources.get(&topic),
            Some(&labels["source"]),
            "{name} {labels:?}"
        );
        let partition = labels["partition"].parse().unwrap();
        *field(served.entry((topic, partition)).or_default()) = Some(*v);
    }
    served
}

/// Where each partition of `topics` ends, read back by an independent client: every record
/// from the first offset, until it has the number given per topic (each offset counted once),
/// the offsets of each partition running from 0 without a gap. (The standalone broker answers
/// a query of the end offsets with figures of its own, so they are read, not asked for.)
fn produced_ends(bootstrap: &str, topics: &[(&str, usize)]) -> BTreeMap<TopicPartition, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vitalflow-lag-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut offsets: BTreeMap<TopicPartition, BTreeSet<i64>> = BTreeMap::new();
    for (topic, _) in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout).unwrap();
        for p in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap();
            offsets.insert(((*topic).to_owned(), p.id()), BTreeSet::new());
        }
    }
    consumer.assign(&assignment).unwrap();
    let count = |offsets: &BTreeMap<TopicPartition, BTreeSet<i64>>, topic: &str| -> usize {
        offsets
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, o)| o.len())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while topics.iter().any(|(t, n)| count(&offsets, t) < *n) {
        assert!(Instant::now() < deadline, "read back only {offsets:?}");
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            offsets
                .entry((m.topic().to_owned(), m.partition()))
                .or_default()
                .insert(m.offset());
        }
    }
    for (t, n) in topics {
        assert_eq!(count(&offsets, t), *n, "{t}: more records than produced");
    }
    offsets
        .into_iter()
        .map(|(k, o)| {
            let end = i64::try_from(o.len()).unwrap();
            assert!(o.last().is_none_or(|l| l + 1 == end), "{k:?}: {o:?}");
            (k, end)
        })
        .collect()
}

/// Scrapes `/metrics` and parses it with the Python parsers (the text kept in `dir` as
/// `metrics-N.txt`).
fn scrape(py: &str, port: u16, dir: &std::path::Path, n: usize) -> Samples {
    let (code, text) = get(port, "/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    let path = dir.join(format!("metrics-{n}.txt"));
    std::fs::write(&path, text).unwrap();
    let parsed = python_check(py, "metrics_parse.py", &[path.to_str().unwrap()]);
    samples(&parsed[0])
}

/// A job run by a test: killed if the test fails before it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Acceptance: a never-ending job reads two topics (2 and 3 partitions) fed in two rounds, on the
/// embedded broker and on the standalone one when given. `/metrics`, scraped while it runs and
/// parsed by the Python parsers, serves every partition's offset, end offset and lag; once a
/// round is read, every end offset is what the broker holds (the partitions of a topic add up
/// to what was produced), every offset equals it and every lag is 0; from one round to the next
/// each offset grew by what its partition was given. `/api/job` and the status page agree.
#[test]
fn kafka_offsets_and_lag_are_served_and_the_lag_reaches_zero() {
    let Some(py) = python() else { return };
    for broker in crate::kafka::brokers() {
        kafka_offsets_and_lag(&py, &broker);
    }
}

fn kafka_offsets_and_lag(py: &str, broker: &crate::kafka::Broker) {
    let name = broker.name;
    let dir = tempfile::tempdir().unwrap();
    let topics = crate::kafka::Topics::new(broker, 3);
    let job = dir.path().join("lag.toml");
    let source = |name: &str, topic: &str| {
        format!(
            "[sources.{name}]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\n\
             format = \"envelope\"\ngranularity = \"1m\"\nidle-timeout = \"1s\"\n\n",
            broker.bootstrap
        )
    };
    let text = format!(
        "[job]\nname = \"lag\"\nworkers = 2\n\n{}{}[sinks.none]\nkind = \"blackhole\"\n\
         inputs = [\"patients\", \"vitals\"]\n",
        source("patients", &topics.patients),
        source("vitals", &topics.vitals),
    );
    std::fs::write(&job, text).unwrap();
    let sources: BTreeMap<String, String> = [
        (topics.patients.clone(), "patients".to_owned()),
        (topics.vitals.clone(), "vitals".to_owned()),
    ]
    .into();

    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_vitalflow"))
            .args(["run", job.to_str().unwrap(), "--no-progress", "--out"])
            .arg(dir.path().join("out"))
            .args(["--listen", "127.0.0.1:0"])
            .env("VITALFLOW_LOG", "warn")
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut said = Vec::new();
    let port: u16 = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("[{name}] no address: {said:?}"));
        if let Some(rest) = line.strip_prefix("listening on http://127.0.0.1:") {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
        said.push(line);
    };

    // Two rounds: the patients and the first half of the readings, then the rest.
    let g = crate::kafka::generator(200, 6_000);
    let rounds = [0..3_100, 3_100..g.count()];
    let mut scrapes = 0;
    let mut read: Vec<(
        BTreeMap<TopicPartition, i64>,
        BTreeMap<TopicPartition, Served>,
    )> = Vec::new();
    for round in rounds {
        crate::kafka::feed(broker, &g, &topics, round.clone());
        let patients = (0..round.end).filter(|i| g.is_patient_event(*i)).count();
        let readings = usize::try_from(round.end).unwrap() - patients;
        let ends = produced_ends(
            &broker.bootstrap,
            &[(&topics.patients, patients), (&topics.vitals, readings)],
        );
        assert_eq!(ends.len(), 5, "[{name}] {ends:?}");
        // Read to the end: every partition at the broker's end, with lag 0.
        let caught_up: BTreeMap<TopicPartition, Served> = ends
            .iter()
            .map(|(k, e)| {
                let e = *e as f64;
                let at = Served {
                    offset: Some(e),
                    end: Some(e),
                    lag: Some(0.0),
                };
                (k.clone(), at)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let served = loop {
            let s = scrape(py, port, dir.path(), scrapes);
            scrapes += 1;
            let served = partitions_served(&s, &sources, "vitalflow-lag");
            if served == caught_up {
                break served;
            }
            assert!(
                Instant::now() < deadline,
                "[{name}] the served partitions never reached the broker's ends with lag 0 \
                 (round {round:?}):\nserved {served:?}\nwanted {caught_up:?}"
            );
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("[{name}] the job ended by itself ({status})");
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        read.push((ends, served));
    }

    // From one round to the next every offset grew by what its partition was given, and the
    // readings' partitions were all given some.
    let [(ends_1, served_1), (ends_2, served_2)] = [&read[0], &read[1]];
    for (k, s) in served_2 {
        let grew = s.offset.unwrap() - served_1[k].offset.unwrap();
        assert_eq!(grew, (ends_2[k] - ends_1[k]) as f64, "[{name}] {k:?}");
        if k.0 == topics.vitals {
            assert!(grew > 0.0, "[{name}] {k:?} did not grow");
        }
    }

    // `/api/job` says the same.
    let job: Value = serde_json::from_str(&get(port, "/api/job").unwrap().1).unwrap();
    let partitions = job["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 5, "[{name}] {job}");
    for p in partitions {
        let k = (
            p["topic"].as_str().unwrap().to_owned(),
            i32::try_from(p["partition"].as_i64().unwrap()).unwrap(),
        );
        assert_eq!(p["source"].as_str(), sources.get(&k.0).map(String::as_str));
        assert_eq!(p["group"], "vitalflow-lag");
        assert_eq!(p["offset"].as_i64(), Some(ends_2[&k]), "[{name}] {p}");
        assert_eq!(p["end_offset"].as_i64(), Some(ends_2[&k]), "[{name}] {p}");
        assert_eq!(p["lag"].as_i64(), Some(0), "[{name}] {p}");
    }

    // The status page lists each source's lag.
    if let Some(chromium) = chromium() {
        let dom = browse(&chromium, &format!("http://127.0.0.1:{port}/"), None);
        for source in ["patients", "vitals"] {
            let row = dom
                .split(&format!("data-lag-source=\"{source}\""))
                .nth(1)
                .unwrap_or_else(|| panic!("[{name}] no lag row for {source}: {dom}"));
            let lag = row
                .split("class=\"lag\">")
                .nth(1)
                .and_then(|r| r.split('<').next());
            assert_eq!(lag, Some("0"), "[{name}] {source}");
        }
    }

    send_signal(&child.0, "TERM");
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    let said: Vec<String> = said.into_iter().chain(lines.try_iter()).collect();
    assert!(status.success(), "[{name}] {status}: {said:?}");
}
