//! What serving `--listen` costs: the pipeline at 1× without the HTTP endpoint and with it as
//! `run --listen` has it (its snapshots four times a second, records timed from arrival to
//! durable, and a client scraping `/metrics` and `/api/job` ten times a second, ten times what a
//! Prometheus server at its usual interval asks), in paired rounds.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, bail};
use vitalflow_engine::{Job, RunObserver};

use super::baselines::settle_disk;
use super::report::{Ratio, per_second};
use super::{Settings, Watch, run_job};
use crate::log::{Log, LogFormat};
use crate::progress::{Display, Stderr};
use crate::serve;

/// How often the scraping client asks for each of `/metrics` and `/api/job`.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// The endpoint's cost at 1×: throughput with it against throughput without it, per second of
/// wall-clock time and per second of the process's CPU time (where `/proc` tells it), each from
/// the median of `s.endpoint_rounds` paired rounds. `job` is the harness job at 1×.
///
/// # Errors
/// If a run fails, the endpoint cannot be opened, or a scrape does not answer 200.
pub fn endpoint(s: &Settings, job: &Job, out: &std::path::Path) -> anyhow::Result<Vec<Ratio>> {
    let listener = serve::bind("127.0.0.1:0", false)?;
    let addr = listener
        .local_addr()
        .context("the bench endpoint's address")?;
    let status = Arc::new(serve::Status::new(job));
    serve::start(listener, Arc::clone(&status))?;
    let server = thread_stat(serve::THREAD);
    // The server thread's CPU time and the process's, over the runs with the endpoint.
    let (mut server_cpu, mut served_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut rounds = Vec::with_capacity(s.endpoint_rounds);
    let mut events = 0;
    let mut scrapes = 0;
    for round in 0..s.endpoint_rounds {
        // Each side first in every other round: neither gains from coming second.
        let mut sides = [Side::default(); 2];
        for served in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            settle_disk(out)?;
            let server_before = server.as_deref().and_then(cpu_of);
            let cpu_before = process_cpu();
            let (summary, scraper_cpu) = if served {
                let scraper = Scraper::start(addr);
                let observer: Arc<dyn RunObserver> = Arc::new(serve::Observer::new(
                    Stderr::new(Display::Off, Log::new(LogFormat::Text)),
                    None,
                    Arc::clone(&status),
                ));
                let watch = Watch::served(observer, serve::SNAPSHOT_INTERVAL, serve::TIMED_EVERY);
                let run = run_job(job, s, watch);
                let (scraped, scraper_cpu) = scraper.stop()?;
                let run = run?;
                if scraped == 0 {
                    bail!("the bench endpoint: no scrape was answered during the run");
                }
                scrapes += scraped;
                (run, scraper_cpu)
            } else {
                (run_job(job, s, Watch::plain())?, Some(Duration::ZERO))
            };
            // The scraper stands for a Prometheus server, another process: its CPU time is not
            // the endpoint's.
            let cpu = process_cpu()
                .zip(cpu_before)
                .zip(scraper_cpu)
                .map(|((after, before), scraper)| after.saturating_sub(before + scraper));
            if let (true, Some(cpu), Some(before), Some(after)) = (
                served,
                cpu,
                server_before,
                server.as_deref().and_then(cpu_of),
            ) {
                server_cpu += after.saturating_sub(before);
                served_cpu += cpu;
            }
            events = summary.source_records();
            sides[usize::from(served)] = Side {
                wall: summary.elapsed,
                cpu,
            };
        }
        println!(
            "endpoint round {}: without {}, with --listen {}",
            round + 1,
            sides[0].line(),
            sides[1].line()
        );
        rounds.push(sides);
    }
    println!(
        "endpoint: {scrapes} scrapes of /metrics and /api/job answered during the runs with it; \
         the server's thread took {:.2} s of the process's {:.2} s of CPU time in those runs ({:.2}%)",
        server_cpu.as_secs_f64(),
        served_cpu.as_secs_f64(),
        100.0 * server_cpu.as_secs_f64() / served_cpu.as_secs_f64().max(1e-9)
    );
    let n = rounds.len();
    let ratio = |what: &str, [without, with]: [Duration; 2]| {
        Ratio::new(
            what,
            per_second(events, with),
            per_second(events, without),
            0.98,
        )
        .median_pair_of(n)
    };
    Ok([
        median_pair(&rounds, |side| Some(side.wall))
            .map(|pair| ratio("pipeline with --listen (scraped 10×/s) vs without", pair)),
        median_pair(&rounds, |side| side.cpu).map(|pair| {
            ratio(
                "the same, events per second of the process's CPU time",
                pair,
            )
        }),
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// One run's times.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    wall: Duration,
    /// The process's CPU time (user and system, every thread), the scraper's left out.
    cpu: Option<Duration>,
}

impl Side {
    fn line(&self) -> String {
        match self.cpu {
            Some(cpu) => format!(
                "{:.3} s (CPU {:.2} s)",
                self.wall.as_secs_f64(),
                cpu.as_secs_f64()
            ),
            None => format!("{:.3} s", self.wall.as_secs_f64()),
        }
    }
}

/// The `[without, with]` times of the round whose throughput ratio (with over without) is the
/// median of the rounds' (the lower of the middle two for an even count), each time read by
/// `time`; `None` when a round has no such time.
fn median_pair(
    rounds: &[[Side; 2]],
    time: impl Fn(&Side) -> Option<Duration>,
) -> Option<[Duration; 2]> {
    let mut pairs = rounds
        .iter()
        .map(|[without, with]| Some([time(without)?, time(with)?]))
        .collect::<Option<Vec<_>>>()?;
    // Throughput with over without is time without over time with.
    let ratio =
        |[without, with]: &[Duration; 2]| without.as_secs_f64() / with.as_secs_f64().max(1e-9);
    pairs.sort_by(|a, b| ratio(a).total_cmp(&ratio(b)));
    pairs.get(pairs.len().checked_sub(1)? / 2).copied()
}

/// CPU time (user and system) from a `/proc/<...>/stat` file: the process's (`/proc/self/stat`,
/// every thread's, ended ones included) or the calling thread's (`/proc/thread-self/stat`).
/// Linux counts it in ticks of 1/100 s; `None` where there is no such file.
fn cpu_of(stat: impl AsRef<std::path::Path>) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The fields after the command's closing parenthesis start at the third, the state; user
    // time is the 14th, system time the 15th.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

fn process_cpu() -> Option<Duration> {
    cpu_of("/proc/self/stat")
}

/// The `stat` file of this process's thread named `name`, if there is one.
fn thread_stat(name: &str) -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(Result::ok)
        .map(|task| task.path())
        .find(|task| {
            std::fs::read_to_string(task.join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .map(|task| task.join("stat"))
}

/// A client asking the endpoint for `/metrics` and `/api/job` every [`SCRAPE_EVERY`] until
/// stopped.
struct Scraper {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<Option<Duration>>>,
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
                        return Ok(cpu_of("/proc/thread-self/stat"));
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

    /// Stops scraping: the scrapes answered, and the scraper's CPU time.
    fn stop(self) -> anyhow::Result<(u64, Option<Duration>)> {
        self.stop.store(true, Ordering::Relaxed);
        let cpu = match self.thread.join() {
            Ok(result) => result?,
            Err(_) => bail!("the bench endpoint's scraper panicked"),
        };
        Ok((self.answered.load(Ordering::Relaxed), cpu))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn side(wall_ms: u64) -> Side {
        Side {
            wall: Duration::from_millis(wall_ms),
            cpu: None,
        }
    }

    #[test]
    fn the_median_pair_is_the_round_of_the_median_ratio() {
        // Ratios (without over with): 1.25, 0.5, 1.0, 0.8.
        let rounds = [
            [side(1000), side(800)],
            [side(500), side(1000)],
            [side(900), side(900)],
            [side(800), side(1000)],
        ];
        let wall = |s: &Side| Some(s.wall);
        // Sorted 0.5, 0.8, 1.0, 1.25: the lower of the middle two.
        assert_eq!(
            median_pair(&rounds, wall),
            Some([Duration::from_millis(800), Duration::from_millis(1000)])
        );
        assert_eq!(
            median_pair(&rounds[..3], wall),
            Some([Duration::from_millis(900), Duration::from_millis(900)])
        );
        // A round without the time: no figure.
        assert_eq!(median_pair(&rounds, |s| s.cpu), None);
        assert_eq!(median_pair(&[], wall), None);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let dir = tempfile::tempdir().unwrap();
        let stat = dir.path().join("stat");
        // A command name with a parenthesis and spaces in it; user 250 ticks, system 30.
        std::fs::write(
            &stat,
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 1 2 3\n",
        )
        .unwrap();
        assert_eq!(cpu_of(&stat), Some(Duration::from_millis(2800)));
        assert_eq!(cpu_of(dir.path().join("none")), None);
    }
}
