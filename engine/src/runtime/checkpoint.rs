//! Checkpoints: what makes a job with Kafka or MLLP sources exactly-once into its files.
//!
//! An MLLP source is checkpointed as a Kafka topic of one partition (0) would be: its log's
//! offsets are the partition's, its timestamps the records' arrival times, which never go back.
//!
//! Dataflow timestamps are event times. A sink writes the rows of completed timestamps into
//! files renamed into place, and reports each file with the range of timestamps it holds. When
//! the frontier of every sink (and of the sources) has passed a timestamp `T`, every record
//! stamped before `T` is in a file. The coordinator (worker 0) then writes a **checkpoint**
//! (`_vitalflow/checkpoint.json` under the output folder, replaced atomically):
//!
//! * `T`, chosen so that no file holds timestamps on both sides of it;
//! * the files holding the timestamps before `T`;
//! * per source partition, where to resume: `from` (the first offset that may hold a record
//!   stamped at or after `T`) and `replay-below` (records before it were emitted before the
//!   watermark reached `T`: they are emitted again only if their own event time is at or after
//!   `T`; the others are in the files already), and `kept`, the ranges earlier checkpoints found
//!   in the kept files that reach past `replay-below` (a resumed run skips those records without
//!   emitting them, so it cannot place them by its watermark; they stay skipped).
//!
//! Then it commits `from` to the Kafka consumer group (monitoring and lag). On restart, files not
//! in the checkpoint are deleted (they hold timestamps at or after `T`), the audit chain goes on
//! from its last committed record, and every partition resumes as the checkpoint says: the
//! records stamped at or after `T` are read and written again, and no other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use vitalflow_connectors::kafka::PartitionReader;
use vitalflow_model::Time;

use super::error::{Fault, RunFailure, System};
use super::metrics::Failure;
use super::ops::{SinkCommit, VecStream};
use super::transactions::{PENDING, Transactions, marker_of, promote};

/// The checkpoint file, relative to the output folder.
pub const CHECKPOINT: &str = "_vitalflow/checkpoint.json";

/// Where one partition resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionResume {
    /// The offset to read from.
    pub from: i64,
    /// Records before this offset are emitted only if stamped at or after the checkpoint.
    pub replay_below: i64,
    /// What earlier checkpoints found in the kept files beyond `replay_below`: a resumed run
    /// skipped those records, so where its watermark was when it read them says nothing about
    /// them, and they stay skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
}

/// Records of a partition in the kept files, as an earlier checkpoint said: those before
/// offset `below` stamped before `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kept {
    /// The offset the records are before.
    pub below: i64,
    /// The time they are stamped before.
    pub time: Time,
}

impl PartitionResume {
    /// Whether the record at `offset` with event time `event` (`None`: it has none, and was
    /// stamped with the watermark) is in the files kept by a checkpoint at `time` that resumes
    /// here: a resumed source skips it.
    #[must_use]
    pub fn durable(&self, time: Time, offset: i64, event: Option<Time>) -> bool {
        let kept = |below: i64, before: Time| offset < below && event.is_none_or(|e| e < before);
        kept(self.replay_below, time) || self.kept.iter().any(|k| kept(k.below, k.time))
    }
}

/// Where one source resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SourceResume {
    /// The checkpoint's timestamp: the source starts its watermark there.
    pub time: Time,
    /// The topic (a checkpoint of another topic is refused).
    pub topic: String,
    /// Per partition.
    pub partitions: BTreeMap<i32, PartitionResume>,
}

/// A checkpoint as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Checkpoint {
    /// The job.
    pub job: String,
    /// The run that wrote it.
    pub run_id: String,
    /// Every record stamped before this is in `files`.
    pub time: Time,
    /// Files, relative to the output folder.
    pub files: BTreeSet<String>,
    /// Per Kafka or MLLP source.
    pub sources: BTreeMap<String, SourceResume>,
    /// With exactly-once Kafka sinks: the marker of the transaction committed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<i64>,
    /// The topic whose partition 0 holds that marker (the run's first exactly-once sink's): a
    /// restarted run reads the marker there, whatever its own sinks are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_topic: Option<String>,
}

impl Checkpoint {
    /// Reads the checkpoint of `out`, if there is one.
    ///
    /// # Errors
    /// If it exists and cannot be read or parsed.
    pub fn load(out: &Path) -> Result<Option<Self>, String> {
        let path = out.join(CHECKPOINT);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes it atomically (temporary file, fsync, rename, fsync of the folder).
    ///
    /// # Errors
    /// A message naming the file.
    pub fn store(&self, out: &Path) -> Result<(), String> {
        self.store_as(out, CHECKPOINT)
    }

    /// Writes it atomically to `rel` under `out` (the checkpoint, or a pending one).
    ///
    /// # Errors
    /// A message naming the file.
    pub fn store_as(&self, out: &Path, rel: &str) -> Result<(), String> {
        let path = out.join(rel);
        let dir = path
            .parent()
            .map_or_else(|| out.to_owned(), Path::to_path_buf);
        let tmp = dir.join(".checkpoint.json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
            }
            rename_durably(&tmp, &path)
        };
        write().map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Renames `from` to `to` and syncs `to`'s folder, so that the rename survives a crash.
///
/// # Errors
/// The rename or the sync failed.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    match to.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Deletes every file under `dirs` that `keep` (paths relative to `out`) does not list: the
/// files of an interrupted run that no checkpoint covers, and temporary files. Returns how many.
///
/// # Errors
/// A message naming the file or folder that could not be read or removed.
pub fn remove_uncommitted(
    out: &Path,
    dirs: &[PathBuf],
    keep: &BTreeSet<String>,
) -> Result<u64, String> {
    remove_where(out, dirs, |rel| !keep.contains(rel)).map(|removed| removed.len() as u64)
}

/// Deletes every file under `dirs` whose path relative to `out` `remove` selects (a file
/// outside `out` has the path `""`). Returns those paths.
///
/// # Errors
/// A message naming the file or folder that could not be read or removed.
pub fn remove_where(
    out: &Path,
    dirs: &[PathBuf],
    remove: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    for path in files_below(dirs)? {
        let rel = relative(out, &path);
        if remove(&rel) {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            removed.push(rel);
        }
    }
    Ok(removed)
}

/// Every file under `dirs` (those that are folders), in no particular order.
///
/// # Errors
/// A message naming the folder that could not be read.
pub fn files_below(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().filter(|d| d.is_dir()).cloned().collect();
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// `path` relative to `out` (`""` for a path outside it).
#[must_use]
pub fn relative(out: &Path, path: &Path) -> String {
    path.strip_prefix(out)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A run of consecutive records of one partition emitted with one timestamp under one
/// watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    first: i64,
    time: Time,
    watermark: Time,
}

/// What the workers of this process emitted from one source, per partition, since the last
/// checkpoint.
#[derive(Debug, Default)]
pub struct PositionLog {
    runs: BTreeMap<i32, Vec<Run>>,
    next: BTreeMap<i32, i64>,
    /// Per partition, the lowest offset this run read.
    first: BTreeMap<i32, i64>,
    replay_below: BTreeMap<i32, i64>,
    /// Per partition, what the checkpoint this run resumed from says is in the kept files.
    kept: BTreeMap<i32, Vec<Kept>>,
}

impl PositionLog {
    /// A log that starts where `resume` says.
    #[must_use]
    pub fn resuming(resume: Option<&SourceResume>) -> Self {
        let mut log = Self::default();
        if let Some(r) = resume {
            for (p, at) in &r.partitions {
                log.next.insert(*p, at.from);
                log.replay_below.insert(*p, at.replay_below);
                let mut kept = at.kept.clone();
                kept.push(Kept {
                    below: at.replay_below,
                    time: r.time,
                });
                log.kept.insert(*p, kept);
            }
        }
        log
    }

    /// A record at `offset` was read (emitted or skipped as already durable).
    pub fn seen(&mut self, partition: i32, offset: i64) {
        let next = self.next.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        let first = self.first.entry(partition).or_insert(offset);
        *first = (*first).min(offset);
    }

    /// A record at `offset` was emitted at `time` while the watermark was `watermark`.
    pub fn record(&mut self, partition: i32, offset: i64, time: Time, watermark: Time) {
        let runs = self.runs.entry(partition).or_default();
        if runs
            .last()
            .is_some_and(|r| r.time == time && r.watermark == watermark)
        {
            return;
        }
        runs.push(Run {
            first: offset,
            time,
            watermark,
        });
    }

    /// Whether every resumed partition has been read past its replay range (until then a new
    /// checkpoint could not say which replayed records are durable).
    #[must_use]
    pub fn replayed(&self) -> bool {
        self.replayed_where(|_| true)
    }

    /// [`Self::replayed`], of the partitions `keep` says.
    #[must_use]
    pub fn replayed_where(&self, keep: impl Fn(i32) -> bool) -> bool {
        self.replay_below
            .iter()
            .filter(|(p, _)| keep(**p))
            .all(|(p, below)| self.next.get(p).is_some_and(|n| n >= below))
    }

    /// Where each partition resumes for a checkpoint at `t` (the watermark of every worker has
    /// reached `t`). Records this run skipped as kept by the checkpoint it resumed from may lie
    /// past the first record it emitted with its watermark at `t` (`replay_below`): what that
    /// checkpoint kept beyond it is carried on, so that `replay_below` moving back never makes
    /// a later run write a kept record again.
    #[must_use]
    pub fn resume_at(&self, t: Time) -> BTreeMap<i32, PartitionResume> {
        self.next
            .iter()
            .map(|(p, next)| {
                let runs = self.runs.get(p).map_or(&[][..], Vec::as_slice);
                let replay_below = runs
                    .iter()
                    .find(|r| r.watermark >= t)
                    .map_or(*next, |r| r.first);
                let from = runs
                    .iter()
                    .filter(|r| r.watermark < t && r.time >= t)
                    .map(|r| r.first)
                    .min()
                    .map_or(replay_below, |f| f.min(replay_below));
                // Ranges not read again (before `from`), or within the new one (which is at a
                // later time), say nothing more.
                let kept = self.kept.get(p).map_or_else(Vec::new, |kept| {
                    kept.iter()
                        .filter(|k| k.below > from && !(k.below <= replay_below && k.time <= t))
                        .copied()
                        .collect()
                });
                (
                    *p,
                    PartitionResume {
                        from,
                        replay_below,
                        kept,
                    },
                )
            })
            .collect()
    }

    /// Forgets what a checkpoint at `t` made durable.
    pub fn prune(&mut self, t: Time) {
        for runs in self.runs.values_mut() {
            runs.retain(|r| r.time >= t);
        }
        self.replay_below.clear();
    }

    /// Per partition, the offset after the last record read.
    #[must_use]
    pub fn read_to(&self) -> &BTreeMap<i32, i64> {
        &self.next
    }

    /// The lowest offset of `partition` this run read, if it read one.
    #[must_use]
    pub fn first_read(&self, partition: i32) -> Option<i64> {
        self.first.get(&partition).copied()
    }

    /// The latest timestamp emitted.
    #[must_use]
    pub fn latest(&self) -> Option<Time> {
        self.runs.values().flatten().map(|r| r.time).max()
    }
}

/// A checkpointed source (Kafka or MLLP) as the coordinator sees it.
pub struct CheckpointSource {
    /// The source node.
    pub name: String,
    /// Its topic.
    pub topic: String,
    /// Its log.
    pub log: Arc<Mutex<PositionLog>>,
    /// A client that commits offsets under the source's group.
    pub committer: Option<Arc<Mutex<PartitionReader>>>,
    /// Told where each checkpoint resumes the source, once the checkpoint is stored.
    pub checkpointed: Option<OnCheckpoint>,
}

/// What a source is told when a checkpoint is stored: where it resumes the source.
pub type OnCheckpoint = Arc<dyn Fn(&SourceResume) + Send + Sync>;

/// The largest `t <= bound` that no file straddles (holds timestamps both before and at or
/// after it).
fn clean_cut(bound: Time, files: &[(Time, Time, String)]) -> Time {
    let mut t = bound;
    loop {
        let straddling = files
            .iter()
            .filter(|(first, last, _)| *first < t && t <= *last)
            .map(|(first, _, _)| *first)
            .min();
        match straddling {
            Some(first) => t = first,
            None => return t,
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// The coordinator: on worker 0, writes a checkpoint whenever the sinks' frontier has moved
/// (at most every `interval`, and once at the end).
pub fn coordinator<'s>(
    commits: VecStream<'s, SinkCommit>,
    job: String,
    run_id: String,
    out: PathBuf,
    base: Checkpoint,
    sources: Vec<CheckpointSource>,
    interval: Duration,
    failure: Failure,
    stats: Arc<super::progress::CheckpointStats>,
    others: Option<Arc<super::cluster::Links>>,
    transactions: Option<Arc<Transactions>>,
) {
    let worker = commits.scope().index();
    let scope = commits.scope();
    commits.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_: &SinkCommit| 0),
        "checkpoint",
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut files: Vec<(Time, Time, String)> = Vec::new();
            let mut last = base;
            let mut last_write = Instant::now();
            // Whether the offsets of the last checkpoint were committed waiting for the answer.
            let mut settled = false;
            move |(input, frontier), _output| {
                input.for_each(|_, data| {
                    for commit in data.drain(..) {
                        for f in commit.files {
                            files.push((commit.first, commit.last, f));
                        }
                    }
                });
                if worker != 0 {
                    return;
                }
                let done = frontier.is_empty();
                if !done && last_write.elapsed() < interval {
                    activator.activate_after(interval.saturating_sub(last_write.elapsed()));
                    return;
                }
                'write: {
                    let bound = match frontier.frontier().iter().min() {
                        Some(f) => *f,
                        None => {
                            let Some(theirs) = elsewhere(others.as_deref(), last.time, &failure)
                            else {
                                return;
                            };
                            let latest = sources
                                .iter()
                                .filter_map(|s| s.log.lock().ok().and_then(|l| l.latest()))
                                .chain(theirs.values().flatten().filter_map(|p| p.latest))
                                .chain(files.iter().map(|(_, last, _)| *last))
                                .max();
                            latest.map_or(last.time, |t| t + 1).max(last.time)
                        }
                    };
                    let t = clean_cut(bound, &files);
                    if t <= last.time {
                        break 'write;
                    }
                    // The other processes' partitions (asked before this process's logs are
                    // locked, so that its sources go on meanwhile).
                    let Some(theirs) = elsewhere(others.as_deref(), t, &failure) else {
                        return;
                    };
                    if !theirs.values().flatten().all(|p| p.replayed) {
                        break 'write;
                    }
                    let logs: Vec<_> = sources
                        .iter()
                        .map(|s| {
                            s.log
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                        })
                        .collect();
                    let ours = |p: i32| others.as_ref().is_none_or(|o| o.ours().owns(p));
                    if !logs.iter().all(|l| l.replayed_where(ours)) {
                        break 'write;
                    }
                    let mut next = Checkpoint {
                        job: job.clone(),
                        run_id: run_id.clone(),
                        time: t,
                        files: last.files.clone(),
                        sources: BTreeMap::new(),
                        transaction: None,
                        transaction_topic: None,
                    };
                    files.retain(|(_, last_t, f)| {
                        let durable = *last_t < t;
                        if durable {
                            next.files.insert(f.clone());
                        }
                        !durable
                    });
                    for (s, log) in sources.iter().zip(&logs) {
                        let mut partitions = log.resume_at(t);
                        partitions.retain(|p, _| ours(*p));
                        for p in theirs.get(&s.name).into_iter().flatten() {
                            partitions.extend(p.partitions.clone());
                        }
                        next.sources.insert(
                            s.name.clone(),
                            SourceResume {
                                time: t,
                                topic: s.topic.clone(),
                                partitions,
                            },
                        );
                    }
                    drop(logs);
                    let writing = Instant::now();
                    if let Err(f) = store(&next, &out, transactions.as_deref()) {
                        failure.fail(f);
                        return;
                    }
                    for s in &sources {
                        if let Ok(mut log) = s.log.lock() {
                            log.prune(t);
                        }
                        if let (Some(tell), Some(resume)) =
                            (&s.checkpointed, next.sources.get(&s.name))
                        {
                            tell(resume);
                        }
                    }
                    if let Some(others) = &others {
                        others.prune(t);
                    }
                    commit_offsets(&sources, &next, done);
                    stats.written(writing.elapsed());
                    settled = done;
                    tracing::debug!(time = t, files = next.files.len(), "checkpoint");
                    last = next;
                    last_write = Instant::now();
                }
                // The run ends once its offsets are committed: a reader is closed without
                // waiting for commits under way (see `PartitionReader`).
                if done && !settled {
                    commit_offsets(&sources, &last, true);
                    settled = true;
                }
            }
        },
    );
}

/// Stores `next`; with exactly-once Kafka sinks, as a pending checkpoint that becomes the
/// checkpoint once the transaction of the records it covers is committed (see
/// [`super::transactions`]).
fn store(next: &Checkpoint, out: &Path, tx: Option<&Transactions>) -> Result<(), RunFailure> {
    let disk = |e: String| {
        RunFailure::new(
            Fault::External(System::FileSystem),
            format!("checkpoint: {e}"),
        )
    };
    let Some(tx) = tx else {
        return next.store(out).map_err(disk);
    };
    let marker = marker_of(&next.run_id, next.time);
    let pending = Checkpoint {
        transaction: Some(marker),
        transaction_topic: Some(tx.marker_topic().to_owned()),
        ..next.clone()
    };
    pending.store_as(out, PENDING).map_err(disk)?;
    let records = tx
        .commit_below(next.time, marker)
        .map_err(|e| RunFailure::new(tx.fault(), format!("checkpoint: {e}")))?;
    promote(out).map_err(disk)?;
    tracing::debug!(time = next.time, records, "transaction committed");
    Ok(())
}

/// In a cluster, what the other processes' position logs say for a checkpoint at `time`, by
/// source (empty for a process alone); `None` after failing the run if they cannot say.
fn elsewhere(
    others: Option<&super::cluster::Links>,
    time: Time,
    failure: &Failure,
) -> Option<BTreeMap<String, Vec<super::cluster::SourcePositions>>> {
    let Some(others) = others else {
        return Some(BTreeMap::new());
    };
    match others.positions(time, Duration::from_secs(30)) {
        Ok(theirs) => Some(theirs),
        Err(e) => {
            failure.fail(RunFailure::new(
                Fault::External(System::Cluster),
                format!("checkpoint: {e}"),
            ));
            None
        }
    }
}

/// Commits each Kafka source's offsets of `checkpoint` under its group (where it has a
/// committer); with `wait`, until the group coordinator has taken them. A failure is a warning:
/// the checkpoint file, not the group, is where a run resumes.
fn commit_offsets(sources: &[CheckpointSource], checkpoint: &Checkpoint, wait: bool) {
    for s in sources {
        let Some(resume) = checkpoint.sources.get(&s.name) else {
            continue;
        };
        let offsets: Vec<(i32, i64)> = resume
            .partitions
            .iter()
            .map(|(p, r)| (*p, r.from))
            .collect();
        if let Some(c) = &s.committer
            && let Ok(c) = c.lock()
            && let Err(e) = c.commit(&offsets, wait)
        {
            tracing::warn!(source = %s.name, error = %e, "offset commit failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_never_splits_a_file() {
        let files = vec![
            (0, 4, "a".to_owned()),
            (5, 9, "b".to_owned()),
            (7, 12, "c".to_owned()),
        ];
        assert_eq!(clean_cut(20, &files), 20);
        // 10 splits c (7..=12); 7 splits b (5..=9); 5 splits nothing.
        assert_eq!(clean_cut(10, &files), 5);
        assert_eq!(clean_cut(6, &files), 5);
        assert_eq!(clean_cut(5, &files), 5);
        // 3 splits a.
        assert_eq!(clean_cut(3, &files), 0);
    }

    #[test]
    fn the_first_offset_read_is_the_lowest_seen() {
        let mut log = PositionLog::default();
        // A partition whose log starts at 40 (older records deleted); a repeated batch.
        for o in [40, 41, 42, 40, 41, 43] {
            log.seen(3, o);
        }
        assert_eq!(log.first_read(3), Some(40));
        assert_eq!(log.read_to()[&3], 44);
        assert_eq!(log.first_read(0), None);
    }

    #[test]
    fn resume_points_cover_early_records_and_skip_durable_ones() {
        let mut log = PositionLog::default();
        // Watermark 0: offsets 0..3 stamped 5, 1, 7.
        for (o, t) in [(0, 5), (1, 1), (2, 7)] {
            log.seen(0, o);
            log.record(0, o, t, 0);
        }
        // Watermark 6: offsets 3..5 stamped 6, 8.
        for (o, t) in [(3, 6), (4, 8)] {
            log.seen(0, o);
            log.record(0, o, t, 6);
        }
        // At 6: offset 2 (stamped 7) is the first not durable; from offset 3 on, all are.
        let r = log.resume_at(6)[&0].clone();
        assert_eq!(
            r,
            PartitionResume {
                from: 2,
                replay_below: 3,
                kept: Vec::new(),
            }
        );
        // At 2: offset 0 (stamped 5) is not durable.
        let r = log.resume_at(2)[&0].clone();
        assert_eq!(
            r,
            PartitionResume {
                from: 0,
                replay_below: 3,
                kept: Vec::new(),
            }
        );
        // At 9: everything read is durable.
        let r = log.resume_at(9)[&0].clone();
        assert_eq!(
            r,
            PartitionResume {
                from: 5,
                replay_below: 5,
                kept: Vec::new(),
            }
        );
    }

    /// The source's rule for a record read again after a resume: whether it is in the kept
    /// files already (then it is skipped).
    fn durable(resume: &SourceResume, partition: i32, offset: i64, event: Time) -> bool {
        resume
            .partitions
            .get(&partition)
            .is_some_and(|r| r.durable(resume.time, offset, Some(event)))
    }

    /// One run of a source over partition 0 of `events` (event time by offset), as the source
    /// does it: from the resume point, records the resume says are durable skipped, the others
    /// stamped with `max(event, watermark)`, `watermark(offset)` being the worker's watermark
    /// when it read the record. The run reads up to `read_to`, writes a checkpoint at `t` and
    /// is killed: the records it wrote that stay are those stamped before `t`, pushed onto
    /// `written` (`t` = `Time::MAX`: the run read to the end and finished). Returns the
    /// checkpoint's resume.
    fn run(
        events: &[Time],
        resume: Option<&SourceResume>,
        read_to: i64,
        watermark: impl Fn(i64) -> Time,
        t: Time,
        written: &mut Vec<i64>,
    ) -> SourceResume {
        let start = resume.map_or(0, |r| r.time);
        let mut log = PositionLog::resuming(resume);
        let from = resume.map_or(0, |r| r.partitions[&0].from);
        let mut last_watermark = start;
        for offset in from..read_to {
            let event = events[offset as usize];
            log.seen(0, offset);
            if resume.is_some_and(|r| durable(r, 0, offset, event)) {
                continue;
            }
            let w = watermark(offset).max(start);
            assert!(w >= last_watermark, "a watermark never goes back");
            last_watermark = w;
            let time = event.max(w);
            log.record(0, offset, time, w);
            if time < t {
                written.push(offset);
            }
        }
        assert!(
            last_watermark >= t || t == Time::MAX,
            "a checkpoint at {t} waits for the watermark"
        );
        assert!(log.replayed());
        SourceResume {
            time: t,
            topic: "t".to_owned(),
            partitions: log.resume_at(t),
        }
    }

    /// Two resumes in a row with late records: the second run skips a record of the first
    /// run's kept files that lies behind a record it emitted after its watermark passed the
    /// next checkpoint; the third run must skip it too (and replay the late record the second
    /// run emitted but did not keep).
    #[test]
    fn a_record_kept_before_two_resumes_is_not_written_again() {
        // Offsets 0..60 of one partition: mostly at 90; a few ahead (10, 20, 40) or late
        // (42, behind the second run's watermark); 50.. after them.
        let mut events: Vec<Time> = vec![90; 60];
        for (o, t) in [(10, 110), (20, 110), (40, 130), (42, 105)] {
            events[o] = t;
        }
        for (o, e) in events.iter_mut().enumerate().skip(50) {
            *e = 130 + o as Time - 50;
        }
        let mut written = Vec::new();
        // Run 1: watermark 50 up to offset 50, then 100; checkpoint at 100, killed.
        let r1 = run(
            &events,
            None,
            60,
            |o| if o < 50 { 50 } else { 100 },
            100,
            &mut written,
        );
        assert_eq!(r1.partitions[&0].from, 10);
        assert_eq!(r1.partitions[&0].replay_below, 50);
        // Run 2: its watermark reaches 125 at offset 38 (another partition's records moved it
        // on earlier than in run 1); checkpoint at 120, killed.
        let r2 = run(
            &events,
            Some(&r1),
            60,
            |o| if o < 38 { 100 } else { 125 },
            120,
            &mut written,
        );
        // Run 3 reads to the end.
        run(&events, Some(&r2), 60, |_| 200, Time::MAX, &mut written);
        let mut times: BTreeMap<i64, usize> = BTreeMap::new();
        for o in &written {
            *times.entry(*o).or_default() += 1;
        }
        let wrong: Vec<_> = (0..60)
            .map(|o| (o, times.get(&o).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 1)
            .collect();
        assert!(
            wrong.is_empty(),
            "(offset, times written) not once: {wrong:?}; resume after run 2: {r2:?}"
        );
    }
}
