//! `vitalflow run` in cluster mode: which process this is (`--process`, `--hosts`, or their
//! environment variables), and `--spawn N`, which starts N processes of the job on this
//! machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use vitalflow_engine::runtime::cluster::{Cluster, read_hosts};

/// Set in the processes `--spawn` starts: their index.
pub const SPAWNED: &str = "VITALFLOW_SPAWNED";

/// `--process`'s value: a number, or a name ending in `-N` (a Kubernetes StatefulSet pod's
/// name, `vitalflow-2`), whose `N` it is.
///
/// # Errors
/// Neither.
pub fn process_index(s: &str) -> Result<usize, String> {
    let digits = s.rsplit('-').next().unwrap_or(s);
    digits.parse().map_err(|_| {
        format!("`{s}` is not a process index (a number, or a pod name ending in `-N`)")
    })
}

/// This process's place in a cluster, from `--process`/`--hosts`/`--processes`; `None` when
/// it runs alone.
///
/// # Errors
/// A hosts file that cannot be read, a process past its lines, or `--processes` disagreeing
/// with it.
pub fn from_args(
    process: Option<usize>,
    hosts: Option<&Path>,
    processes: Option<usize>,
    join_timeout: Duration,
) -> anyhow::Result<Option<Cluster>> {
    let (process, hosts) = match (process, hosts) {
        (None, None) => {
            if processes.is_some_and(|n| n > 1) {
                bail!("--processes needs --hosts (the processes' addresses) and --process");
            }
            return Ok(None);
        }
        (Some(p), Some(h)) => (p, h),
        (None, Some(_)) => bail!("--hosts needs --process (this process's index, from 0)"),
        (Some(_), None) => bail!("--process needs --hosts (the processes' addresses)"),
    };
    let addresses = read_hosts(hosts).map_err(anyhow::Error::msg)?;
    if let Some(n) = processes
        && n != addresses.len()
    {
        bail!(
            "--processes {n}, but {} lists {} process address(es)",
            hosts.display(),
            addresses.len()
        );
    }
    let cluster = Cluster {
        process,
        addresses,
        join_timeout,
    };
    cluster.check().map_err(anyhow::Error::msg)?;
    Ok(Some(cluster))
}

/// Free loopback addresses for `n` processes.
fn loopback_addresses(n: usize) -> anyhow::Result<Vec<String>> {
    // Bound all at once, so that no two are the same port; released just before the
    // processes bind them.
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("--spawn: cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.to_string()))
        .collect()
}

/// `--spawn N`: runs this command's job as N processes on loopback ports, each with the same
/// arguments (but `--spawn`), and waits for them: process 0 prints the summary. If one fails,
/// the others stop on their own (their cluster connections tell them); those still running a
/// while later are killed. The exit code is the first failing process's, else 0.
pub fn spawn(n: usize, args: &[String]) -> u8 {
    match spawn_all(n, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error (configuration or input): {e:#}");
            2
        }
    }
}

fn spawn_all(n: usize, args: &[String]) -> anyhow::Result<u8> {
    if n == 0 {
        bail!("--spawn needs at least 1 process");
    }
    let addresses = loopback_addresses(n)?;
    let hosts = hosts_file(&addresses)?;
    let exe = std::env::current_exe().context("--spawn: cannot find this program")?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for i in 0..n {
        let child = Command::new(&exe)
            .args(args)
            .env(SPAWNED, i.to_string())
            .env("VITALFLOW_PROCESS", i.to_string())
            .env("VITALFLOW_PROCESSES", n.to_string())
            .env("VITALFLOW_HOSTS", &hosts)
            .spawn()
            .with_context(|| format!("--spawn: cannot start process {i}"))?;
        children.push((i, child));
    }
    let code = wait_all(&mut children);
    let _ = std::fs::remove_file(&hosts);
    Ok(code)
}

/// Writes the processes' addresses to a hosts file of this run's own.
fn hosts_file(addresses: &[String]) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("vitalflow-hosts-{}", std::process::id()));
    std::fs::write(&path, addresses.join("\n") + "\n")
        .with_context(|| format!("--spawn: cannot write {}", path.display()))?;
    Ok(path)
}

/// How long the other processes have to stop once one has failed.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Waits for every child: the first failing one's exit code, else 0.
fn wait_all(children: &mut Vec<(usize, Child)>) -> u8 {
    let mut first_failure: Option<(usize, i32)> = None;
    let mut failed_at: Option<Instant> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            let (index, child) = &mut children[i];
            match child.try_wait() {
                Ok(Some(status)) => {
                    let code = exit_code(status);
                    if code != 0 && first_failure.is_none() {
                        first_failure = Some((*index, code));
                        failed_at = Some(Instant::now());
                    }
                    children.swap_remove(i);
                }
                Ok(None) => i += 1,
                Err(_) => {
                    children.swap_remove(i);
                }
            }
        }
        if failed_at.is_some_and(|t| t.elapsed() > AFTER_FAILURE) {
            for (index, child) in children.iter_mut() {
                eprintln!("--spawn: process {index} did not stop after another failed: killed");
                let _ = child.kill();
                let _ = child.wait();
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        Some((_, code)) => u8::try_from(code).unwrap_or(1),
        None => 0,
    }
}

/// A process's exit code; a signal's as a shell gives it (128 + the signal).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return 128 + signal;
        }
    }
    status.code().unwrap_or(1)
}

/// The arguments to hand the spawned processes: this command's, without `--spawn N`.
#[must_use]
pub fn without_spawn(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a == "--spawn" {
            skip = true;
        } else if !a.starts_with("--spawn=") {
            out.push(a.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_name_gives_its_ordinal() {
        assert_eq!(process_index("2"), Ok(2));
        assert_eq!(process_index("vitalflow-12"), Ok(12));
        assert!(process_index("vitalflow").is_err());
    }

    #[test]
    fn spawned_processes_get_every_argument_but_spawn() {
        let args: Vec<String> = ["run", "job.toml", "--spawn", "2", "-w", "1", "--spawn=3"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(without_spawn(&args), ["run", "job.toml", "-w", "1"]);
    }
}
