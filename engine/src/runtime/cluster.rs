//! Cluster mode: one job over several processes, on timely's own cluster runtime.
//!
//! Every process runs the same dataflow with the same number of worker threads; timely
//! exchanges records and progress between them over TCP, and worker indices are global (a
//! Kafka partition, a generator's sequence, a file are spread over all workers of all
//! processes). vitalflow adds, beside timely's data connections, one *control* connection
//! between every two processes:
//!
//! - **joining**: each process says which process it is, how many workers it runs and the
//!   digest of its job (the substituted job file): a process whose job or workers differ is
//!   refused, by name. Process 0 then prepares the run (output folder, checkpoint) and hands
//!   the others what they must share: the run id and the embedded broker's address;
//! - **while running**: a process whose run fails says why; a process whose control
//!   connection closes before it said it finished is gone (killed, or its machine lost). Either
//!   way every other process stops its workers and fails the run naming it, instead of waiting
//!   for progress that will never come;
//! - **finishing**: each process sends process 0 its counts, which it sums into the summary.
//!
//! Connections are made the way timely makes its own: process `i` connects to every process
//! before it and accepts from every process after it, on the address of its line in the hosts
//! list.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vitalflow_model::Time;

use super::NodeSummary;
use super::checkpoint::{PartitionResume, PositionLog};
use super::error::{Fault, RunFailure, System};
use super::metrics::Failure;
use crate::job::Job;

/// One process's place in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, from 0.
    pub process: usize,
    /// Every process's `host:port`, in process order (timely's hostfile, a line each).
    pub addresses: Vec<String>,
    /// How long to wait for the other processes to join.
    pub join_timeout: Duration,
}

impl Cluster {
    /// The processes of the cluster.
    #[must_use]
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Checks the process index against the addresses.
    ///
    /// # Errors
    /// No addresses, or an index past them.
    pub fn check(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err("a cluster needs at least one process address".to_owned());
        }
        if self.process >= self.addresses.len() {
            return Err(format!(
                "process {} of a cluster of {}: processes are numbered from 0 to {}",
                self.process,
                self.addresses.len(),
                self.addresses.len() - 1
            ));
        }
        Ok(())
    }
}

/// Reads a hosts file: one `host:port` a line, blank lines and `#` comments ignored.
///
/// # Errors
/// The file cannot be read, or a line is not `host:port`.
pub fn read_hosts(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the hosts file: {e}", path.display()))?;
    let mut hosts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!(
                "{}:{}: `{line}` is not `host:port`",
                path.display(),
                n + 1
            ));
        }
        hosts.push(line.to_owned());
    }
    if hosts.is_empty() {
        return Err(format!("{}: no `host:port` line", path.display()));
    }
    Ok(hosts)
}

/// The digest every process of a cluster must share: the job as substituted, and the workers.
#[must_use]
pub fn digest(job: &Job, workers: usize) -> String {
    let mut h = Sha256::new();
    h.update(job.text.text.as_bytes());
    h.update((workers as u64).to_le_bytes());
    vitalflow_model::ids::hex(&h.finalize())
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Purpose {
    Control,
    Data,
}

/// The first message on every connection, both ways.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    purpose: Purpose,
    process: usize,
    processes: usize,
    workers: usize,
    digest: String,
}

/// What process 0 hands the others once it has prepared the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// The run's id, one for the whole cluster.
    pub run_id: String,
    /// The embedded broker's address, when the job uses it (process 0 runs it).
    pub bootstrap: Option<String>,
    /// The files of each file source reading a folder, as process 0 listed them (names in
    /// the folder): every process reads these, so that all number the same records.
    #[serde(default)]
    pub files: BTreeMap<String, Vec<std::path::PathBuf>>,
}

/// What a process tells the others after joining.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Control {
    /// Process 0 has prepared the run.
    Welcome(Welcome),
    /// The sender's run failed.
    Failed { message: String },
    /// A graceful stop was asked of the sender: stop reading too.
    Stop,
    /// The sender's workers finished: its final counts.
    Finished { nodes: Vec<NodeSummary> },
    /// Process 0 is done with the run: the others may exit.
    Done,
    /// Process 0 is about to write a checkpoint at `time`: where the partitions this process
    /// reads resume.
    PositionsAt { time: Time },
    /// The answer to [`Control::PositionsAt`].
    Positions {
        time: Time,
        sources: BTreeMap<String, SourcePositions>,
    },
    /// Process 0 wrote a checkpoint at `time`: forget what it made durable.
    Prune { time: Time },
    /// A worker of the sender counted its chunks of the file source `source`, cut into
    /// `chunks` chunks: per chunk, its records and lines.
    Counted {
        source: String,
        chunks: usize,
        counts: BTreeMap<usize, (u64, u64)>,
    },
}

/// What the workers of one process counted of a file source's chunks (see
/// [`Links::share_counts`]).
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// The chunks the senders cut the source into, by process (each should be this one's).
    pub chunks: BTreeMap<usize, usize>,
    /// Per chunk, its records and lines.
    pub counts: BTreeMap<usize, (u64, u64)>,
}

/// What one process's log of one Kafka source says for a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcePositions {
    /// Whether its resumed partitions have been read past their replay ranges.
    pub replayed: bool,
    /// The latest timestamp it emitted.
    pub latest: Option<Time>,
    /// Where each of its partitions resumes.
    pub partitions: BTreeMap<i32, PartitionResume>,
}

impl SourcePositions {
    /// What `log` says of the partitions this process reads (it resumed every partition of
    /// the checkpoint, the others' too, which it never reads).
    fn of(log: &PositionLog, time: Time, ours: Ownership) -> Self {
        let mut partitions = log.resume_at(time);
        partitions.retain(|p, _| ours.owns(*p));
        Self {
            replayed: log.replayed_where(|p| ours.owns(p)),
            latest: log.latest(),
            partitions,
        }
    }
}

/// Which Kafka partitions a process reads: partition `p` is read by global worker
/// `p % (processes × workers)`, and worker `w` runs in process `w / workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    process: usize,
    processes: usize,
    workers: usize,
}

impl Ownership {
    /// Whether this process reads `partition`.
    #[must_use]
    pub fn owns(self, partition: i32) -> bool {
        super::kafka_source::reader_of(partition, self.processes * self.workers)
            .is_some_and(|w| w / self.workers.max(1) == self.process)
    }
}

/// One process's answer for a checkpoint: per source, what its log says.
type Answer = BTreeMap<String, SourcePositions>;

/// The position logs of this process's Kafka sources, by source name.
pub type Logs = Vec<(String, Arc<Mutex<PositionLog>>)>;

/// Writes one message: its length (4 bytes, little-endian), then its JSON.
fn send<T: Serialize>(stream: &mut TcpStream, message: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_le_bytes())?;
    stream.write_all(&bytes)?;
    stream.flush()
}

/// The largest message read (a summary of a large job is some kilobytes).
const MAX_MESSAGE: usize = 16 << 20;

/// Reads one message.
fn receive<T: for<'de> Deserialize<'de>>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes: not a vitalflow process"),
        ));
    }
    let mut bytes = vec![0u8; len];
    stream.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

fn failure(message: String) -> RunFailure {
    RunFailure::new(Fault::External(System::Cluster), message)
}

/// This process's connections to the others while they are being made.
pub struct Joining {
    cluster: Cluster,
    hello: Hello,
    listener: TcpListener,
    /// Connections accepted before they were waited for, by purpose and process.
    stash: HashMap<(Purpose, usize), TcpStream>,
    deadline: Instant,
}

impl Joining {
    /// Listens on this process's address.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn listen(cluster: &Cluster, workers: usize, digest: String) -> Result<Self, RunFailure> {
        cluster.check().map_err(failure)?;
        let address = &cluster.addresses[cluster.process];
        let listener = TcpListener::bind(address.as_str()).map_err(|e| {
            failure(format!(
                "process {}: cannot listen on {address}: {e}",
                cluster.process
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failure(format!("cannot set up the cluster listener: {e}")))?;
        Ok(Self {
            hello: Hello {
                purpose: Purpose::Control,
                process: cluster.process,
                processes: cluster.processes(),
                workers,
                digest,
            },
            cluster: cluster.clone(),
            listener,
            stash: HashMap::new(),
            deadline: Instant::now() + cluster.join_timeout,
        })
    }

    /// Connects to every other process for `purpose`: a stream per process, `None` for this
    /// one.
    fn connect_all(&mut self, purpose: Purpose) -> Result<Vec<Option<TcpStream>>, RunFailure> {
        let me = self.cluster.process;
        let mut streams: Vec<Option<TcpStream>> =
            (0..self.cluster.processes()).map(|_| None).collect();
        for (i, slot) in streams.iter_mut().enumerate().take(me) {
            *slot = Some(self.connect(i, purpose)?);
        }
        for (i, slot) in streams.iter_mut().enumerate().skip(me + 1) {
            *slot = Some(self.accept(i, purpose)?);
        }
        Ok(streams)
    }

    /// Connects to process `i` (before this one), retrying until the deadline.
    fn connect(&self, i: usize, purpose: Purpose) -> Result<TcpStream, RunFailure> {
        let address = &self.cluster.addresses[i];
        loop {
            let attempt = address
                .to_socket_addrs()
                .and_then(|mut a| {
                    a.next().ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
                    })
                })
                .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)));
            match attempt {
                Ok(mut stream) => {
                    let _ = stream.set_nodelay(true);
                    let hello = Hello {
                        purpose,
                        ..self.hello.clone()
                    };
                    send(&mut stream, &hello)
                        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(30))))
                        .map_err(|e| failure(format!("process {i} ({address}): {e}")))?;
                    let theirs: Hello = receive(&mut stream)
                        .map_err(|e| failure(format!("process {i} ({address}): {e}")))?;
                    self.agree(&theirs, i)?;
                    stream
                        .set_read_timeout(None)
                        .map_err(|e| failure(format!("process {i}: {e}")))?;
                    return Ok(stream);
                }
                Err(e) if Instant::now() >= self.deadline => {
                    return Err(failure(format!(
                        "process {i} at {address} did not answer within {} s ({e}): start every \
                         process of the cluster, each with its own --process",
                        self.cluster.join_timeout.as_secs()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Waits for process `i` (after this one) to connect for `purpose`.
    fn accept(&mut self, i: usize, purpose: Purpose) -> Result<TcpStream, RunFailure> {
        loop {
            if let Some(stream) = self.stash.remove(&(purpose, i)) {
                return Ok(stream);
            }
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let Ok(theirs) = receive::<Hello>(&mut stream) else {
                        tracing::warn!(%from, "cluster listener: a connection that is not a vitalflow process");
                        continue;
                    };
                    let mine = Hello {
                        purpose: theirs.purpose,
                        ..self.hello.clone()
                    };
                    send(&mut stream, &mine)
                        .map_err(|e| failure(format!("process {}: {e}", theirs.process)))?;
                    self.agree(&theirs, theirs.process)?;
                    let _ = stream.set_read_timeout(None);
                    self.stash.insert((theirs.purpose, theirs.process), stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= self.deadline {
                        return Err(failure(format!(
                            "process {i} ({}) did not join within {} s: start every process of \
                             the cluster, each with its own --process",
                            self.cluster.addresses[i],
                            self.cluster.join_timeout.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(failure(format!("cluster listener: {e}"))),
            }
        }
    }

    /// Whether process `i`'s hello matches this one's.
    fn agree(&self, theirs: &Hello, i: usize) -> Result<(), RunFailure> {
        let me = self.cluster.process;
        if theirs.process != i && i < me {
            return Err(failure(format!(
                "{} answers as process {}, not {i}: the hosts lists differ",
                self.cluster.addresses[i], theirs.process
            )));
        }
        if theirs.processes != self.hello.processes || theirs.process >= self.hello.processes {
            return Err(failure(format!(
                "process {} runs a cluster of {} processes, this one (process {me}) of {}: \
                 give every process the same hosts list",
                theirs.process, theirs.processes, self.hello.processes
            )));
        }
        if theirs.workers != self.hello.workers {
            return Err(failure(format!(
                "process {} runs {} workers, this one (process {me}) {}: every process must \
                 run as many",
                theirs.process, theirs.workers, self.hello.workers
            )));
        }
        if theirs.digest != self.hello.digest {
            return Err(failure(format!(
                "process {} runs another job (digest {}…) than this one (process {me}: {}…): \
                 every process must run the same job file, with the same substitutions",
                theirs.process,
                &theirs.digest[..12.min(theirs.digest.len())],
                &self.hello.digest[..12.min(self.hello.digest.len())]
            )));
        }
        Ok(())
    }

    /// Makes the control connections: every process has joined, with the same job.
    ///
    /// # Errors
    /// A process did not join in time, or runs another job or another number of workers.
    pub fn join(mut self) -> Result<Joined, RunFailure> {
        let control = self.connect_all(Purpose::Control)?;
        Ok(Joined {
            joining: self,
            control,
        })
    }
}

/// A cluster whose processes have all joined; timely's data connections not made yet.
pub struct Joined {
    joining: Joining,
    control: Vec<Option<TcpStream>>,
}

impl Joined {
    /// This process's index.
    #[must_use]
    pub const fn process(&self) -> usize {
        self.joining.cluster.process
    }

    /// Process 0: hands every other process what the run shares.
    ///
    /// # Errors
    /// A process cannot be written to.
    pub fn welcome(&mut self, welcome: &Welcome) -> Result<(), RunFailure> {
        for (i, stream) in self.control.iter_mut().enumerate() {
            if let Some(s) = stream {
                send(s, &Control::Welcome(welcome.clone()))
                    .map_err(|e| failure(format!("process {i}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Another process: waits for process 0's welcome.
    ///
    /// # Errors
    /// Process 0 failed, or closed its connection.
    pub fn welcomed(&mut self) -> Result<Welcome, RunFailure> {
        let Some(Some(zero)) = self.control.first_mut() else {
            return Err(failure("no connection to process 0".to_owned()));
        };
        match receive::<Control>(zero) {
            Ok(Control::Welcome(w)) => Ok(w),
            Ok(Control::Failed { message }) => Err(failure(format!(
                "process 0 could not start the run: {message}"
            ))),
            Ok(_) => Err(failure("process 0 sent no welcome".to_owned())),
            Err(e) => Err(failure(format!(
                "process 0 closed its connection before the run started: {e}"
            ))),
        }
    }

    /// Tells every other process that this one could not start: `message`.
    pub fn refuse(&mut self, message: &str) {
        for s in self.control.iter_mut().flatten() {
            let _ = send(
                s,
                &Control::Failed {
                    message: message.to_owned(),
                },
            );
        }
    }

    /// Makes timely's data connections, then watches the control connections: a process that
    /// fails or goes away fails the run through `failure`; a stop asked of another process sets
    /// `stop`.
    ///
    /// # Errors
    /// A process did not connect in time.
    pub fn connect(
        mut self,
        failure_flag: &Failure,
        stop: &Arc<AtomicBool>,
        logs: Logs,
    ) -> Result<(Vec<Option<TcpStream>>, Links), RunFailure> {
        let data = self.joining.connect_all(Purpose::Data)?;
        for s in data.iter().flatten() {
            s.set_nonblocking(false)
                .map_err(|e| failure(format!("cannot set up a data connection: {e}")))?;
        }
        let me = self.joining.cluster.process;
        let ours = Ownership {
            process: me,
            processes: self.joining.cluster.processes(),
            workers: self.joining.hello.workers,
        };
        let shared = Arc::new(Shared::default());
        PEER_LOST.store(false, Ordering::SeqCst);
        CONNECTION_BROKE.store(false, Ordering::SeqCst);
        let writers = Arc::new(Mutex::new(Vec::new()));
        let logs = Arc::new(logs);
        for (i, stream) in self.control.into_iter().enumerate() {
            let Some(stream) = stream else { continue };
            let reader = stream
                .try_clone()
                .map_err(|e| failure(format!("process {i}: {e}")))?;
            writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((i, stream));
            let watch = Watch {
                process: i,
                address: self.joining.cluster.addresses[i].clone(),
                failure: failure_flag.clone(),
                stop: Arc::clone(stop),
                shared: Arc::clone(&shared),
                writers: Arc::clone(&writers),
                logs: Arc::clone(&logs),
                ours,
            };
            std::thread::Builder::new()
                .name(format!("cluster-{i}"))
                .spawn(move || watch.run(reader))
                .map_err(|e| failure(format!("cannot start the cluster's threads: {e}")))?;
        }
        install_quiet_panics();
        Ok((
            data,
            Links {
                process: me,
                processes: self.joining.cluster.processes(),
                ours,
                writers,
                shared,
            },
        ))
    }
}

/// What the control threads learned.
#[derive(Default)]
struct Shared {
    /// Per process: its final counts, once it finished.
    finished: Mutex<BTreeMap<usize, Vec<NodeSummary>>>,
    changed: Condvar,
    /// Processes gone or failed.
    gone: Mutex<Vec<usize>>,
    /// This process is done with the run: a connection closing is no longer news.
    done: AtomicBool,
    /// Process 0 said the run is over.
    released: AtomicBool,
    /// Answers to the last positions request, by process.
    positions: Mutex<BTreeMap<usize, (Time, Answer)>>,
    /// What the other processes' workers counted of each file source's chunks.
    counted: Mutex<BTreeMap<String, Counted>>,
}

/// Reads one process's control connection for as long as it is open.
struct Watch {
    process: usize,
    address: String,
    failure: Failure,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    writers: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    logs: Arc<Logs>,
    ours: Ownership,
}

impl Watch {
    fn run(self, mut stream: TcpStream) {
        loop {
            match receive::<Control>(&mut stream) {
                Ok(Control::Finished { nodes }) => {
                    self.shared
                        .finished
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(self.process, nodes);
                    self.shared.changed.notify_all();
                    return;
                }
                Ok(Control::Done) => {
                    self.shared.done.store(true, Ordering::SeqCst);
                    self.shared.released.store(true, Ordering::SeqCst);
                    self.shared.changed.notify_all();
                    return;
                }
                Ok(Control::PositionsAt { time }) => self.answer(time),
                Ok(Control::Positions { time, sources }) => {
                    self.shared
                        .positions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(self.process, (time, sources));
                    self.shared.changed.notify_all();
                }
                Ok(Control::Prune { time }) => {
                    for (_, log) in self.logs.iter() {
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .prune(time);
                    }
                }
                Ok(Control::Failed { message }) => {
                    self.lost(format!("process {} failed: {message}", self.process));
                    return;
                }
                Ok(Control::Stop) => self.stop.store(true, Ordering::SeqCst),
                Ok(Control::Counted {
                    source,
                    chunks,
                    counts,
                }) => {
                    let mut counted = self
                        .shared
                        .counted
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    let entry = counted.entry(source).or_default();
                    entry.chunks.insert(self.process, chunks);
                    entry.counts.extend(counts);
                    drop(counted);
                    self.shared.changed.notify_all();
                }
                Ok(Control::Welcome(_)) => {}
                Err(e) => {
                    self.lost(format!(
                        "process {} ({}) is gone: its connection closed before it finished \
                         ({e}); restart the whole cluster, it resumes from its last checkpoint",
                        self.process, self.address
                    ));
                    return;
                }
            }
        }
    }

    /// Tells process 0 where this process's partitions resume for a checkpoint at `time`.
    fn answer(&self, time: Time) {
        let sources = self
            .logs
            .iter()
            .map(|(name, log)| {
                let log = log.lock().unwrap_or_else(PoisonError::into_inner);
                (name.clone(), SourcePositions::of(&log, time, self.ours))
            })
            .collect();
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, s)) = writers.iter_mut().find(|(i, _)| *i == self.process) {
            let _ = send(s, &Control::Positions { time, sources });
        }
    }

    fn lost(&self, message: String) {
        PEER_LOST.store(true, Ordering::SeqCst);
        if !self.shared.done.load(Ordering::SeqCst) {
            self.failure.fail(failure(message));
        }
        self.shared
            .gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.process);
        self.shared.changed.notify_all();
    }
}

/// This process's control connections while the run goes on.
pub struct Links {
    process: usize,
    processes: usize,
    ours: Ownership,
    writers: Arc<Mutex<Vec<(usize, TcpStream)>>>,
    shared: Arc<Shared>,
}

impl Links {
    fn broadcast(&self, message: &Control) {
        let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, s) in writers.iter_mut() {
            let _ = send(s, message);
        }
    }

    /// Asks every other process to stop gracefully.
    pub fn stop(&self) {
        self.broadcast(&Control::Stop);
    }

    /// Tells the others this process failed.
    pub fn failed(&self, message: &str) {
        self.broadcast(&Control::Failed {
            message: message.to_owned(),
        });
    }

    /// Tells the others this process finished, with its counts.
    pub fn finished(&self, nodes: &[NodeSummary]) {
        self.shared.done.store(true, Ordering::SeqCst);
        self.broadcast(&Control::Finished {
            nodes: nodes.to_vec(),
        });
    }

    /// Process 0, about to write a checkpoint at `time`: what every other process's logs say
    /// (by source, one entry per process), or why they cannot be had within `timeout`.
    ///
    /// # Errors
    /// A process did not answer in time, or has gone.
    pub fn positions(
        &self,
        time: Time,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Vec<SourcePositions>>, String> {
        self.shared
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.broadcast(&Control::PositionsAt { time });
        let (mut answers, settled) = self.wait(&self.shared.positions, timeout, |answers| {
            answers.values().filter(|(t, _)| *t == time).count() + 1 >= self.processes
        });
        if !settled {
            return Err(if self.lost() {
                "a process has gone".to_owned()
            } else {
                format!(
                    "the other processes did not say where their partitions resume within {} s",
                    timeout.as_secs()
                )
            });
        }
        let mut by_source: BTreeMap<String, Vec<SourcePositions>> = BTreeMap::new();
        for (_, sources) in std::mem::take(&mut *answers).into_values() {
            for (name, p) in sources {
                by_source.entry(name).or_default().push(p);
            }
        }
        Ok(by_source)
    }

    /// Tells the other processes what a worker of this one counted of the file source
    /// `source`, cut into `chunks` chunks: per chunk, its records and lines.
    pub fn share_counts(&self, source: &str, chunks: usize, counts: &BTreeMap<usize, (u64, u64)>) {
        self.broadcast(&Control::Counted {
            source: source.to_owned(),
            chunks,
            counts: counts.clone(),
        });
    }

    /// What the other processes' workers counted of the file source `source` so far.
    #[must_use]
    pub fn counted(&self, source: &str) -> Counted {
        self.shared
            .counted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(source)
            .cloned()
            .unwrap_or_default()
    }

    /// Which partitions this process reads.
    #[must_use]
    pub const fn ours(&self) -> Ownership {
        self.ours
    }

    /// Process 0 wrote a checkpoint at `time`: the others forget what it made durable.
    pub fn prune(&self, time: Time) {
        self.broadcast(&Control::Prune { time });
    }

    /// Process 0: the run is over for every process.
    pub fn release(&self) {
        self.shared.done.store(true, Ordering::SeqCst);
        self.broadcast(&Control::Done);
    }

    /// Another process: waits (at most `timeout`) until process 0 says the run is over, or has
    /// gone. Until then this process answers its checkpoint requests.
    pub fn wait_released(&self, timeout: Duration) {
        let released = || self.shared.released.load(Ordering::SeqCst);
        let _ = self.wait(&self.shared.finished, timeout, |_| released());
    }

    /// Waits (at most `timeout`) until `settled` holds for what `slot` holds, or another
    /// process has gone: the slot's guard, and whether it settled.
    fn wait<'a, T>(
        &self,
        slot: &'a Mutex<T>,
        timeout: Duration,
        settled: impl Fn(&T) -> bool,
    ) -> (std::sync::MutexGuard<'a, T>, bool) {
        let deadline = Instant::now() + timeout;
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if settled(&guard) {
                return (guard, true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.lost() {
                return (guard, false);
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Whether another process has gone or failed.
    #[must_use]
    pub fn lost(&self) -> bool {
        !self
            .shared
            .gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Process 0: waits (at most `timeout`) for every other process's final counts and adds
    /// them to `nodes`; the processes that did not report.
    pub fn gather(&self, nodes: &mut [NodeSummary], timeout: Duration) -> Vec<usize> {
        let (finished, _) = self.wait(&self.shared.finished, timeout, |finished| {
            finished.len() + 1 >= self.processes
        });
        self.shared.done.store(true, Ordering::SeqCst);
        for theirs in finished.values() {
            for n in nodes.iter_mut() {
                if let Some(t) = theirs.iter().find(|t| t.name == n.name) {
                    n.add(t);
                }
            }
        }
        (0..self.processes)
            .filter(|p| *p != self.process && !finished.contains_key(p))
            .collect()
    }
}

/// Runs `work` on `workers` threads of this process, connected to the other processes by
/// `sockets` (one per process, `None` for this one): timely's cluster runtime. When another
/// process has gone, this one's workers stop (they watch `failure`) and timely's connection
/// threads are not waited for: they may wait on a peer that will never answer.
pub fn execute<F>(
    sockets: Vec<Option<TcpStream>>,
    workers: usize,
    work: F,
    failure: &Failure,
) -> Vec<Result<(), String>>
where
    F: Fn(&mut timely::worker::Worker) + Send + Sync + 'static,
{
    use timely_communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
    use timely_communication::allocator::{AllocatorBuilder, ProcessBuilder};

    let me = sockets.iter().position(Option::is_none).unwrap_or(0);
    let hooks = timely_communication::Hooks::default();
    let process =
        ProcessBuilder::new_typed_vector(workers, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) =
        match initialize_networking_from_sockets(process, sockets, me, workers, hooks) {
            Ok(built) => built,
            Err(e) => return vec![Err(format!("cannot start the cluster's connections: {e}"))],
        };
    let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
    let guards = match timely::execute::execute_from(
        builders,
        Box::new(guard),
        timely::WorkerConfig::default(),
        work,
    ) {
        Ok(guards) => guards,
        Err(e) => return vec![Err(e)],
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let joiner = std::thread::Builder::new()
        .name("cluster-join".to_owned())
        .spawn(move || {
            let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()))
                .unwrap_or_else(|_| vec![Err("a cluster connection broke".to_owned())]);
            let _ = tx.send(joined);
        });
    if joiner.is_err() {
        return vec![Err("cannot start the cluster's join thread".to_owned())];
    }
    let mut failed_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(joined) => {
                // Once another process has gone, the workers and connections that broke with
                // it are not failures of their own: the run already fails, naming that
                // process. Its control connection may say so a moment after the data
                // connections broke.
                let broke = joined.iter().any(Result::is_err);
                let deadline = Instant::now() + Duration::from_secs(2);
                while broke && !PEER_LOST.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if PEER_LOST.load(Ordering::SeqCst) {
                    return Vec::new();
                }
                return joined;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Vec::new(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if failure.failed() {
                    // A thread held back from a second panic never ends: nothing is left to
                    // wait for.
                    if HELD.load(Ordering::SeqCst) > 0 && PEER_LOST.load(Ordering::SeqCst) {
                        return Vec::new();
                    }
                    let since = *failed_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > STOP_WAIT {
                        return Vec::new();
                    }
                }
            }
        }
    }
}

/// How long a process whose run failed waits for its workers and connections to wind down.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Set once a control connection has found another process gone or failed.
static PEER_LOST: AtomicBool = AtomicBool::new(false);

/// Set once one of timely's connection threads has panicked (a connection broke).
static CONNECTION_BROKE: AtomicBool = AtomicBool::new(false);

/// Threads held back from a second panic (see [`install_quiet_panics`]).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Timely's connection threads panic when a peer's connection breaks, and then so do this
/// process's workers and the thread that joins them (they find the broken connections'
/// queues poisoned). The control connections report that, naming the process; those panics'
/// own messages are left out of the output. A worker's panic while every connection holds (a
/// bug) is shown as ever.
///
/// A worker unwinding from such a panic may panic again in a destructor that flushes to a
/// broken connection, which would abort the whole process before the failure is reported.
/// Such a thread is held (parked for good) instead: the run then ends at once with the
/// failure the control connections report.
fn install_quiet_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    thread_local! {
        static PANICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            let timely_io = name.starts_with("timely:send") || name.starts_with("timely:recv");
            if timely_io {
                CONNECTION_BROKE.store(true, Ordering::SeqCst);
            }
            let broken =
                CONNECTION_BROKE.load(Ordering::SeqCst) || PEER_LOST.load(Ordering::SeqCst);
            let after_loss = broken && (name.starts_with("timely:work") || name == "cluster-join");
            if timely_io || after_loss {
                tracing::debug!(%info, "a cluster connection broke");
                if PANICKED.with(|p| p.replace(true)) {
                    HELD.fetch_add(1, Ordering::SeqCst);
                    loop {
                        std::thread::park();
                    }
                }
            } else {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_is_read_line_by_line_and_checked() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("hosts");
        std::fs::write(
            &path,
            "# the cluster\nnode-0:2101\n\nnode-1:2101 # second\n",
        )
        .expect("written");
        assert_eq!(
            read_hosts(&path).expect("read"),
            ["node-0:2101", "node-1:2101"]
        );
        std::fs::write(&path, "node-0:2101\nnode-1\n").expect("written");
        let e = read_hosts(&path).expect_err("a line without a port");
        assert!(e.ends_with("hosts:2: `node-1` is not `host:port`"), "{e}");
    }
}
