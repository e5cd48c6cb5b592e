//! Which run an output folder holds: a run writes `_vitalflow/run.json` (job, run id, whether
//! it finished), so that a later run does not silently replace the output of another job or of
//! a finished run.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The run file, relative to the output folder.
pub const RUN_FILE: &str = "_vitalflow/run.json";

/// What the run file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The job's name.
    pub job: String,
    /// The run's id.
    pub run_id: String,
    /// Whether the run completed.
    pub finished: bool,
}

/// Whether a run of `job` may write into `out`. An absent or empty folder, or the folder of an
/// interrupted run of the same job, may always be written; the output of another job, of a
/// finished run, or files of no run only with `overwrite`, except that a job with a checkpoint
/// (`resumes`) goes on from it in its own folder.
///
/// # Errors
/// Why not, naming the folder and what it holds, and what to pass.
pub fn may_write(out: &Path, job: &str, resumes: bool, overwrite: bool) -> Result<(), String> {
    if overwrite {
        return Ok(());
    }
    let empty = match std::fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(format!(
                "cannot read the output folder {}: {e}",
                out.display()
            ));
        }
    };
    if empty {
        return Ok(());
    }
    let record = std::fs::read(out.join(RUN_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
    match record {
        None => Err(format!(
            "the output folder {} is not empty and holds no vitalflow run: choose another \
             folder with --out, or pass --overwrite to write into it",
            out.display()
        )),
        Some(r) if r.job != job => Err(format!(
            "the output folder {} holds the output of job `{}`, not `{job}`: choose another \
             folder with --out, or pass --overwrite to replace it",
            out.display(),
            r.job
        )),
        Some(r) if r.finished && !resumes => Err(format!(
            "the output folder {} holds the output of a finished run of `{job}` (run {}): pass \
             --overwrite to replace it, or choose another folder with --out",
            out.display(),
            r.run_id
        )),
        Some(_) => Ok(()),
    }
}

/// Writes the run file (replacing it atomically).
///
/// # Errors
/// The file cannot be written.
pub fn record(out: &Path, run: &RunRecord) -> std::io::Result<()> {
    let path = out.join(RUN_FILE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(run).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{RunRecord, may_write, record};

    fn run(job: &str, finished: bool) -> RunRecord {
        RunRecord {
            job: job.to_owned(),
            run_id: "r1".to_owned(),
            finished,
        }
    }

    #[test]
    fn a_finished_run_or_another_job_is_not_replaced_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert_eq!(may_write(&out, "a", false, false), Ok(()), "absent");
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(may_write(&out, "a", false, false), Ok(()), "empty");
        std::fs::write(out.join("notes.txt"), "x").unwrap();
        let e = may_write(&out, "a", false, false).unwrap_err();
        assert!(e.contains("holds no vitalflow run"), "{e}");
        record(&out, &run("a", false)).unwrap();
        assert_eq!(may_write(&out, "a", false, false), Ok(()), "interrupted");
        let e = may_write(&out, "b", true, false).unwrap_err();
        assert!(
            e.contains("of job `a`, not `b`") && e.contains("--overwrite"),
            "{e}"
        );
        record(&out, &run("a", true)).unwrap();
        let e = may_write(&out, "a", false, false).unwrap_err();
        assert!(e.contains("a finished run of `a` (run r1)"), "{e}");
        assert_eq!(may_write(&out, "a", true, false), Ok(()), "resumes");
        assert_eq!(may_write(&out, "b", false, true), Ok(()), "overwrite");
    }
}
