//! `vitalflow run --listen ADDR`: an HTTP endpoint beside the dataflow, served on a runtime of
//! its own in a thread of its own.
//!
//! - `GET /metrics`: Prometheus metrics (see [`metrics`] and docs/operations.md);
//! - `GET /health/live`: 200 while the run goes on;
//! - `GET /health/ready`: 200 once the sources have started and, for a job that checkpoints,
//!   the first checkpoint is written; 503 with a JSON reason otherwise;
//! - `GET /api/job`: the job's graph with every node's counts, the watermarks, the Kafka
//!   partitions' offsets and lag, and the checkpoints, as JSON;
//! - `GET /`: a status page that polls `/api/job`.
//!
//! Everything served is node, topic and group names, kinds, counts and offsets: no record, and so
//! no PHI, ever reaches it.

pub mod metrics;

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use vitalflow_engine::{Job, Progress, RunObserver};

use crate::progress::Stderr;

/// How often the engine hands the endpoint a snapshot.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(250);

/// With the endpoint on, the run times one source record in this many, of each source on each
/// worker, from its arrival to its durability in every sink that writes
/// (`event_processing_duration_seconds`). A timed record's arrival is kept until its sinks
/// commit it (8 bytes): timing one in 16 keeps half a byte per record read during the slowest
/// sink's roll interval (at 100,000 records/s and a 1-minute roll, 3 MB).
pub const TIMED_EVERY: u64 = 16;

/// The status page: HTML, CSS and script in one file, nothing fetched from elsewhere.
const PAGE: &str = include_str!("page.html");

/// A node of the job's graph, as served.
#[derive(Debug, Clone)]
pub struct GraphNode {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `sources`, `operators` or `sinks`.
    pub section: &'static str,
    /// Its inputs: `node` or `node.port`.
    pub inputs: Vec<String>,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The workers have not handed over a snapshot yet.
    Starting,
    /// The workers run.
    Running,
    /// The workers have stopped.
    Finished,
}

impl Phase {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Finished => "finished",
        }
    }
}

/// What the endpoint serves: the job's graph and the run's latest snapshot.
pub struct Status {
    job: String,
    graph: Vec<GraphNode>,
    latest: Mutex<(Phase, Option<Progress>)>,
}

impl Status {
    /// The status of a run of `job`, not started yet.
    pub fn new(job: &Job) -> Self {
        let graph = job
            .nodes
            .iter()
            .map(|n| GraphNode {
                name: n.name.clone(),
                kind: n.kind.name().to_owned(),
                section: n.section.as_str(),
                inputs: n
                    .inputs
                    .iter()
                    .map(|i| {
                        if i.port == "out" {
                            i.node.clone()
                        } else {
                            format!("{}.{}", i.node, i.port)
                        }
                    })
                    .collect(),
            })
            .collect();
        Self {
            job: job.name.clone(),
            graph,
            latest: Mutex::new((Phase::Starting, None)),
        }
    }

    fn set(&self, phase: Phase, snapshot: &Progress) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) =
            (phase, Some(snapshot.clone()));
    }

    /// The phase and the latest snapshot.
    pub fn latest(&self) -> (Phase, Option<Progress>) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the run is ready, or why not.
    pub fn ready(&self) -> Result<(), String> {
        let (phase, latest) = self.latest();
        let snapshot = match (phase, latest) {
            (Phase::Finished, _) => return Err("the run has finished".to_owned()),
            (_, None) | (Phase::Starting, _) => {
                return Err("the workers have not started".to_owned());
            }
            (Phase::Running, Some(s)) => s,
        };
        let kafka: Vec<&str> = snapshot
            .watermarks
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        if let Some(idle) = snapshot.nodes.iter().find(|n| {
            n.source && !kafka.contains(&n.name.as_str()) && n.records_out == 0 && n.files == 0
        }) {
            return Err(format!("source `{}` has not read anything yet", idle.name));
        }
        if let Some(failing) = snapshot.nodes.iter().find(|n| n.failing_for_ms > 0) {
            return Err(format!(
                "`{}`: its deliveries have been failing for {:.1} s (its broker is away); they are \
                 retried",
                failing.name,
                failing.failing_for_ms as f64 / 1000.0
            ));
        }
        match snapshot.checkpoints {
            Some(c) if c.written == 0 => Err("no checkpoint has been written yet".to_owned()),
            _ => Ok(()),
        }
    }

    /// `/api/job`.
    pub fn job_json(&self) -> Value {
        let (phase, latest) = self.latest();
        let now = SystemTime::now();
        let counts = |name: &str| {
            latest
                .as_ref()
                .and_then(|s| s.nodes.iter().find(|n| n.name == name))
        };
        let nodes: Vec<Value> = self
            .graph
            .iter()
            .map(|g| {
                let c = counts(&g.name);
                let get = |f: fn(&vitalflow_engine::runtime::NodeSummary) -> u64| c.map_or(0, f);
                json!({
                    "name": g.name,
                    "kind": g.kind,
                    "section": g.section,
                    "inputs": g.inputs,
                    "records_in": get(|n| n.records_in),
                    "records_out": get(|n| n.records_out),
                    "rejected": get(|n| n.rejected),
                    "dropped": get(|n| n.dropped),
                    "dead_letters": get(|n| n.dead_letters),
                    "late": get(|n| n.late),
                    "bytes_in": get(|n| n.bytes_in),
                    "files": get(|n| n.files),
                    "bytes_written": get(|n| n.bytes_written),
                })
            })
            .collect();
        let watermarks: Vec<Value> = latest
            .as_ref()
            .map(|s| {
                s.watermarks
                    .iter()
                    .map(|(source, ms)| {
                        let at = ms.and_then(chrono::DateTime::from_timestamp_millis);
                        json!({
                            "source": source,
                            "event_time": at.map(|t| t.to_rfc3339()),
                            "delay_seconds": ms.map(|ms| metrics::delay_seconds(ms, now)),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let partitions: Vec<Value> = latest
            .as_ref()
            .map(|s| {
                s.partitions
                    .iter()
                    .map(|p| {
                        json!({
                            "source": p.source,
                            "topic": p.topic,
                            "group": p.group,
                            "partition": p.partition,
                            "offset": p.position,
                            "end_offset": p.end,
                            "lag": p.lag(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let checkpoints = latest.as_ref().and_then(|s| s.checkpoints).map(|c| {
            json!({
                "written": c.written,
                "last_duration_seconds": c.last_duration.map(|d| d.as_secs_f64()),
                "age_seconds": c.last_written
                    .map(|t| now.duration_since(t).unwrap_or_default().as_secs_f64()),
            })
        });
        let alerts: Vec<Value> = latest
            .as_ref()
            .map(|s| {
                s.alerts
                    .iter()
                    .map(|a| {
                        json!({
                            "node": a.node,
                            "rule": a.rule,
                            "level": metrics::level(&a.event),
                            "count": a.count,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "job": self.job,
            "phase": phase.as_str(),
            "elapsed_seconds": latest.as_ref().map_or(0.0, |s| s.elapsed.as_secs_f64()),
            "source_rate": latest.as_ref().map_or(0.0, |s| s.rate),
            "nodes": nodes,
            "watermarks": watermarks,
            "partitions": partitions,
            "checkpoints": checkpoints,
            "alerts": alerts,
        })
    }
}

/// The run's observer when the endpoint listens: every snapshot goes to the endpoint, and to
/// the progress display only as often as the display asked for.
pub struct Observer {
    display: Stderr,
    every: Option<Duration>,
    shown: Mutex<Option<Duration>>,
    status: Arc<Status>,
}

impl Observer {
    /// Hands snapshots to `status` and, every `every`, to `display`.
    pub const fn new(display: Stderr, every: Option<Duration>, status: Arc<Status>) -> Self {
        Self {
            display,
            every,
            shown: Mutex::new(Some(Duration::ZERO)),
            status,
        }
    }
}

impl RunObserver for Observer {
    fn progress(&self, snapshot: &Progress) {
        self.status.set(Phase::Running, snapshot);
        let Some(every) = self.every else { return };
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        // Snapshots come every SNAPSHOT_INTERVAL: show the first at or after each `every`.
        let due = shown.is_none_or(|last| {
            snapshot.elapsed + SNAPSHOT_INTERVAL / 2 >= last.saturating_add(every)
        });
        if due {
            *shown = Some(snapshot.elapsed);
            drop(shown);
            self.display.progress(snapshot);
        }
    }

    fn finished(&self, snapshot: &Progress) {
        self.status.set(Phase::Finished, snapshot);
        self.display.finished(snapshot);
    }

    fn message(&self, message: &str) {
        self.display.message(message);
    }
}

/// Parses `--listen`'s address and binds it: a loopback address unless `any`.
///
/// # Errors
/// An address that does not parse or resolve, a non-loopback one without `any`, or one that
/// cannot be bound.
pub fn bind(addr: &str, any: bool) -> anyhow::Result<TcpListener> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("--listen {addr}: not an address (expected HOST:PORT)"))?
        .collect();
    anyhow::ensure!(!addrs.is_empty(), "--listen {addr}: resolves to no address");
    if !any && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "--listen {addr}: {} is not a loopback address; the endpoint has no authentication, \
             so it listens on other interfaces only with --listen-any",
            open.ip()
        );
    }
    TcpListener::bind(&addrs[..]).with_context(|| format!("--listen {addr}: cannot listen"))
}

/// The name of the endpoint's thread.
pub const THREAD: &str = "http";

/// Serves `status` on `listener` from a thread of its own until the process exits.
///
/// # Errors
/// If the runtime or its thread cannot be started.
pub fn start(listener: TcpListener, status: Arc<Status>) -> anyhow::Result<()> {
    listener
        .set_nonblocking(true)
        .context("the HTTP endpoint: cannot set up its socket")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("the HTTP endpoint: cannot start its runtime")?;
    std::thread::Builder::new()
        .name(THREAD.to_owned())
        .spawn(move || runtime.block_on(serve(listener, status)))
        .context("the HTTP endpoint: cannot start its thread")?;
    Ok(())
}

async fn serve(listener: TcpListener, status: Arc<Status>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP endpoint cannot listen");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "the HTTP endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = Arc::clone(&status);
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let status = Arc::clone(&status);
                async move { Ok::<_, Infallible>(respond(&req, &status)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "the HTTP endpoint: connection ended");
            }
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

const JSON: &str = "application/json";

/// The answer to one request.
pub fn respond<B>(req: &Request<B>, status: &Status) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            JSON,
            json!({"error": "only GET"}).to_string(),
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/metrics" => match metrics::encode(status) {
            Ok(text) => reply(StatusCode::OK, metrics::CONTENT_TYPE, text),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("cannot encode the metrics: {e}\n"),
            ),
        },
        "/health/live" => {
            let (phase, _) = status.latest();
            let code = if phase == Phase::Finished {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            reply(code, JSON, json!({"status": phase.as_str()}).to_string())
        }
        "/health/ready" => match status.ready() {
            Ok(()) => reply(StatusCode::OK, JSON, json!({"ready": true}).to_string()),
            Err(reason) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                JSON,
                json!({"ready": false, "reason": reason}).to_string(),
            ),
        },
        "/api/job" => reply(StatusCode::OK, JSON, status.job_json().to_string()),
        _ => reply(
            StatusCode::NOT_FOUND,
            JSON,
            json!({"error": "not found"}).to_string(),
        ),
    }
}
