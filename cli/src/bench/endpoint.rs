//! What serving `--listen` costs: the pipeline at 1× without the HTTP endpoint and with it as
//! `run --listen` has it (its snapshots four times a second, records timed from arrival to
//! durable, and a client scraping `/metrics` and `/api/job` ten times a second, ten times what a
//! Prometheus server at its usual interval asks), alternately.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, bail};
use vitalflow_engine::{Job, RunObserver};

use super::baselines::{Best, settle_disk};
use super::report::{Ratio, per_second};
use super::{Settings, Watch, run_job};
use crate::log::{Log, LogFormat};
use crate::progress::{Display, Stderr};
use crate::serve;

/// How often the scraping client asks for each of `/metrics` and `/api/job`.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// The endpoint's cost at 1×: throughput with it against throughput without it, each side's
/// best of `s.rounds` runs, alternating. `job` is the harness job at 1×.
///
/// # Errors
/// If a run fails, the endpoint cannot be opened, or a scrape does not answer 200.
pub fn endpoint(s: &Settings, job: &Job, out: &std::path::Path) -> anyhow::Result<Ratio> {
    let listener = serve::bind("127.0.0.1:0", false)?;
    let addr = listener
        .local_addr()
        .context("the bench endpoint's address")?;
    let status = Arc::new(serve::Status::new(job));
    serve::start(listener, Arc::clone(&status))?;
    let mut best = Best::new("endpoint", ["without", "with --listen"]);
    let mut events = 0;
    let mut scrapes = 0;
    for round in 0..s.rounds {
        // Each side first in every other round: neither gains from coming second.
        let mut times = [std::time::Duration::ZERO; 2];
        for served in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            settle_disk(out)?;
            let summary = if served {
                let scraper = Scraper::start(addr);
                let observer: Arc<dyn RunObserver> = Arc::new(serve::Observer::new(
                    Stderr::new(Display::Off, Log::new(LogFormat::Text)),
                    None,
                    Arc::clone(&status),
                ));
                let watch = Watch::served(observer, serve::SNAPSHOT_INTERVAL, serve::TIMED_EVERY);
                let run = run_job(job, s, watch);
                let scraped = scraper.stop()?;
                let run = run?;
                if scraped == 0 {
                    bail!("the bench endpoint: no scrape was answered during the run");
                }
                scrapes += scraped;
                run
            } else {
                run_job(job, s, Watch::plain())?
            };
            events = summary.source_records();
            times[usize::from(served)] = summary.elapsed;
        }
        best.record(round, times);
    }
    println!(
        "endpoint: {scrapes} scrapes of /metrics and /api/job answered during the runs with it"
    );
    Ok(Ratio::new(
        "pipeline with --listen (scraped 10×/s) vs without",
        per_second(events, best.best[1]),
        per_second(events, best.best[0]),
        0.98,
    )
    .best_of(s.rounds))
}

/// A client asking the endpoint for `/metrics` and `/api/job` every [`SCRAPE_EVERY`] until
/// stopped.
struct Scraper {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<()>>,
}

impl Scraper {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            std::thread::spawn(move || {
                // At least one round, however short the run.
                loop {
                    for path in ["/metrics", "/api/job"] {
                        get(addr, path)?;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::thread::sleep(SCRAPE_EVERY);
                }
            })
        };
        Self {
            stop,
            answered,
            thread,
        }
    }

    /// Stops scraping: the scrapes answered.
    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result?,
            Err(_) => bail!("the bench endpoint's scraper panicked"),
        }
        Ok(self.answered.load(Ordering::Relaxed))
    }
}

/// One HTTP/1.1 GET of `path`, read to its end; an error unless it answered 200.
fn get(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("the bench endpoint: cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .with_context(|| format!("the bench endpoint: reading {path}"))?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        let line = String::from_utf8_lossy(&answer);
        bail!(
            "the bench endpoint: GET {path} answered {}",
            line.lines().next().unwrap_or("nothing")
        );
    }
    Ok(())
}
