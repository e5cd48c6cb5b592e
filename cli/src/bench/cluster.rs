//! The cluster row: the harness job at 1× as two processes of one worker each (`run --spawn 2
//! --workers 1`) against one process of two workers (`run --workers 2`), both started as this
//! program's own `run` command, alternately. On a 2-core machine this is the cost of timely's
//! TCP exchange between processes (and of encoding the records that cross it), not a speed-up.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Settings;
use super::baselines::{Best, settle_disk};
use super::report::{Ratio, per_second};

/// Throughput of `--spawn 2 --workers 1` against `--workers 2` on the job at `job` (its 1×
/// run, `events` generator events), each side's best of `s.rounds`.
///
/// # Errors
/// A run fails, or the two read different numbers of records.
pub fn cluster(s: &Settings, job: &Path, out: &Path, events: u64) -> anyhow::Result<Ratio> {
    let exe = std::env::current_exe().context("the cluster row: cannot find this program")?;
    let mut best = Best::new(
        "cluster",
        ["1 process × 2 workers", "2 processes × 1 worker"],
    );
    for round in 0..s.rounds {
        // Each side first in every other round: neither gains from coming second.
        let mut runs = [(Duration::ZERO, 0); 2];
        for two in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            settle_disk(out)?;
            runs[usize::from(two)] = if two {
                timed(
                    &exe,
                    job,
                    &out.join("run-two"),
                    &["--workers", "1", "--spawn", "2"],
                )?
            } else {
                timed(&exe, job, &out.join("run-one"), &["--workers", "2"])?
            };
        }
        let [(one, read_one), (two, read_two)] = runs;
        if read_one != read_two {
            bail!("the cluster row: one process read {read_one} records, two read {read_two}");
        }
        best.record(round, [one, two]);
    }
    Ok(Ratio::new(
        "2 processes × 1 worker (--spawn 2) vs 1 process × 2 workers",
        per_second(events, best.best[1]),
        per_second(events, best.best[0]),
        0.5,
    )
    .best_of(s.rounds))
}

/// Runs `vitalflow run JOB --out OUT --overwrite ARGS` to its end: its wall time and the
/// source records its summary counts.
fn timed(exe: &Path, job: &Path, out: &Path, args: &[&str]) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let o = Command::new(exe)
        .arg("run")
        .arg(job)
        .arg("--out")
        .arg(out)
        .args(["--overwrite", "--no-progress"])
        .args(args)
        .output()
        .with_context(|| format!("the cluster row: cannot start `run {}`", args.join(" ")))?;
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout);
    if !o.status.success() {
        bail!(
            "the cluster row: `run {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let read = stdout
        .lines()
        .find_map(|l| l.split_once(" source records in "))
        .and_then(|(n, _)| n.trim().parse::<u64>().ok());
    match read {
        Some(read) => Ok((took, read)),
        None => bail!(
            "the cluster row: `run {}` printed no summary: {stdout}",
            args.join(" ")
        ),
    }
}
