//! The MLLP listener and the log's writer.
//!
//! The listener runs a single-threaded tokio runtime on a thread of its own. Each connection is
//! a task that reads frames, hands each message to the writer and waits for the answer before
//! it acknowledges the message and reads the next one: a connection has at most one message in
//! the writer's hands, so what waits there is bounded by `max-connections`, and a sender that
//! does not wait for its acknowledgements meets TCP's own flow control.
//!
//! The writer, a thread of its own, takes the messages waiting, appends them to the log, syncs
//! once for all of them, then answers each (group commit). It is where back-pressure happens:
//! while the log holds `max-backlog` records not yet durable downstream (the last checkpoint's
//! resume point, which [`Shared::checkpointed`] follows), it takes no more, and the
//! acknowledgements wait. It also decides duplicates: a message identical to one of the last
//! `duplicate-window` messages stored is acknowledged again (`AA`) without being stored twice,
//! once the original is durable.
//!
//! Connections are bounded: at `max-connections`, a new connection closes the one idle the
//! longest (no message under way), or is closed itself when none is idle. A message must arrive
//! in full within `read-timeout` of its start; a connection with no message under way is closed
//! after `idle-timeout`; an acknowledgement the sender does not take within `write-timeout`
//! closes the connection. Bytes outside frames are discarded. Nothing a client sends stops the
//! listener: every failure ends one connection at most. Logs name the peer, offsets and counts,
//! never a value of a message.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use super::ack::{Ack, Code, Header, Problem};
use super::frame::{CR, Decoder, END, Event, START};
use super::log::{Entry, Kind, Log, Opened};

/// How the listener behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The source's name (in logs).
    pub name: String,
    /// The longest message taken, in bytes.
    pub max_message_size: usize,
    /// Connections open at once.
    pub max_connections: usize,
    /// A connection with no message under way is closed after this (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A message must arrive in full within this of its first byte.
    pub read_timeout: Duration,
    /// An acknowledgement must be taken by the sender within this.
    pub write_timeout: Duration,
    /// Records the log may hold that are not yet durable downstream before new messages wait.
    pub max_backlog: u64,
    /// How many of the last messages stored a new one is compared with (0: none).
    pub duplicate_window: usize,
    /// TLS (see [`super::tls::server_config`]); `None`: plain TCP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

/// Counts of the listener's work, since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed at once: `max-connections` were open, none idle.
    pub refused: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Messages answered `AA` (duplicates included).
    pub accepted: AtomicU64,
    /// Messages answered `AA` that were duplicates of one stored before.
    pub duplicates: AtomicU64,
    /// Messages answered `AR`.
    pub rejected: AtomicU64,
    /// Messages answered `AE`.
    pub errors: AtomicU64,
    /// Bytes outside frames, discarded.
    pub garbage: AtomicU64,
    /// Messages discarded unfinished: cut short by a new frame, the connection's end or the
    /// read timeout.
    pub incomplete: AtomicU64,
    /// Connections closed by a timeout (read, idle or write).
    pub timeouts: AtomicU64,
}

/// What the listener, its writer and the reader of the log share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Records before this offset are durable: a reader may read them.
    pub durable: AtomicU64,
    /// No record stored from now on has an arrival time before this (ms since the epoch);
    /// published after [`Self::durable`].
    pub floor_ms: AtomicI64,
    /// The first offset not yet durable downstream: where the last checkpoint resumes.
    pub checkpointed: AtomicU64,
    /// Why the log failed, once it has: nothing more is stored.
    pub failed: Mutex<Option<String>>,
    /// The listener's counts.
    pub stats: Stats,
    /// Set when no one reads the log any more (the run ended): the writer stops waiting for
    /// the backlog to shrink.
    pub closed: AtomicBool,
    /// Set when the listener is told to stop: a message waiting for room in the backlog is
    /// answered `AE` rather than holding the stop up.
    pub stopping: AtomicBool,
}

impl Shared {
    /// Shared state for a log whose records before `durable` are durable and whose last record
    /// arrived at `last_ms`; `checkpointed` is where the last checkpoint resumes.
    #[must_use]
    pub fn new(durable: u64, last_ms: i64, checkpointed: u64) -> Self {
        Self {
            durable: AtomicU64::new(durable),
            floor_ms: AtomicI64::new(last_ms.max(now_ms())),
            checkpointed: AtomicU64::new(checkpointed),
            ..Self::default()
        }
    }

    /// Why the log failed, if it has.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A message handed to the writer.
struct Request {
    kind: Kind,
    digest: [u8; 16],
    size: u64,
    peer: String,
    reason: String,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// The writer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// Stored, durable, at this offset.
    Stored(u64),
    /// Identical to the message at this offset, which is durable: not stored again.
    Duplicate(u64),
    /// Not stored.
    Failed,
}

/// The digests of the last messages stored, for duplicate detection.
struct Recent {
    window: usize,
    order: VecDeque<[u8; 16]>,
    offsets: HashMap<[u8; 16], u64>,
}

impl Recent {
    fn new(window: usize, digests: Vec<([u8; 16], u64)>) -> Self {
        let mut recent = Self {
            window,
            order: VecDeque::new(),
            offsets: HashMap::new(),
        };
        let skip = digests.len().saturating_sub(window);
        for (d, offset) in digests.into_iter().skip(skip) {
            recent.insert(d, offset);
        }
        recent
    }

    fn get(&self, digest: &[u8; 16]) -> Option<u64> {
        self.offsets.get(digest).copied()
    }

    fn insert(&mut self, digest: [u8; 16], offset: u64) {
        if self.window == 0 {
            return;
        }
        if self.offsets.insert(digest, offset).is_none() {
            self.order.push_back(digest);
        }
        while self.order.len() > self.window {
            if let Some(old) = self.order.pop_front() {
                self.offsets.remove(&old);
            }
        }
    }
}

/// A message's digest: the first 16 bytes of its SHA-256.
fn digest(bytes: &[u8]) -> [u8; 16] {
    let full = Sha256::digest(bytes);
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

/// The listener and its writer, running.
pub struct Running {
    stop: Arc<Notify>,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl Running {
    /// Stops the listener: it accepts no more connections, finishes answering the messages it
    /// handed to the writer, and closes every connection; then the writer syncs and ends.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// Whether the listener and the writer have both ended (every record is durable).
    #[must_use]
    pub fn finished(&self) -> bool {
        self.listener.as_ref().is_none_or(JoinHandle::is_finished)
            && self.writer.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The address it listens on.
    #[must_use]
    pub const fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

/// Starts serving `listener` (bound already) into the log `opened`, with `wake` called whenever
/// records become durable.
///
/// # Errors
/// The listener's runtime or one of the two threads could not be started.
pub fn start(
    listener: std::net::TcpListener,
    opened: Opened,
    settings: Settings,
    shared: Arc<Shared>,
    wake: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<Running> {
    let address = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (tx, rx) = std::sync::mpsc::channel::<Request>();
    let recent = Recent::new(settings.duplicate_window, opened.digests);
    let writer = {
        let (shared, settings, wake) = (Arc::clone(&shared), settings.clone(), Arc::clone(&wake));
        let log = opened.log;
        std::thread::Builder::new()
            .name(format!("mllp-log-{}", settings.name))
            .spawn(move || write_loop(log, recent, &rx, &shared, &settings, &*wake))?
    };
    let stop = Arc::new(Notify::new());
    let ctx = Arc::new(Ctx {
        start_secs: u64::try_from(now_ms() / 1000).unwrap_or_default(),
        settings: settings.clone(),
        shared: Arc::clone(&shared),
        writer: tx,
        connections: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        closing: AtomicBool::new(false),
        warned: Throttle::default(),
    });
    let listener_thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name(format!("mllp-{}", settings.name))
            .spawn(move || {
                runtime.block_on(serve(listener, ctx, stop));
            })?
    };
    tracing::info!(source = %settings.name, %address, "listening for MLLP");
    Ok(Running {
        stop,
        shared,
        listener: Some(listener_thread),
        writer: Some(writer),
        address,
    })
}

/// Largest batch of records the writer syncs at once.
const BATCH: usize = 1024;
/// Largest batch, in bytes.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How often the idle writer moves the arrival-time floor on (and looks at the backlog).
const TICK: Duration = Duration::from_millis(20);

/// The writer's loop: until every sender is gone.
fn write_loop(
    mut log: Log,
    mut recent: Recent,
    rx: &Receiver<Request>,
    shared: &Shared,
    settings: &Settings,
    wake: &(dyn Fn() + Send + Sync),
) {
    let mut floor = log.last_ms().max(now_ms());
    let mut removed_before = 0u64;
    let mut broken = false;
    let publish_floor = |floor: i64| {
        shared.floor_ms.fetch_max(floor, Ordering::SeqCst);
        wake();
    };
    loop {
        let checkpointed = shared.checkpointed.load(Ordering::SeqCst);
        // What the last checkpoint made durable, except what duplicate detection still needs.
        let keep = checkpointed.min(log.next().saturating_sub(settings.duplicate_window as u64));
        if !broken && keep > removed_before {
            match log.remove_before(keep) {
                Ok(_) => removed_before = keep,
                Err(e) => {
                    tracing::warn!(source = %settings.name, error = %e, "cannot remove old log segments")
                }
            }
        }
        let backlog = log.next().saturating_sub(checkpointed);
        let full = backlog >= settings.max_backlog;
        // Nobody will make room when the run has ended or is stopping: then such messages are
        // answered AE (below).
        let waits =
            !shared.closed.load(Ordering::SeqCst) && !shared.stopping.load(Ordering::SeqCst);
        if full && !broken && waits {
            floor = floor.max(now_ms());
            publish_floor(floor);
            std::thread::sleep(TICK);
            continue;
        }
        let first = match rx.recv_timeout(TICK) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                floor = floor.max(now_ms());
                publish_floor(floor);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let room = usize::try_from(settings.max_backlog.saturating_sub(backlog))
            .unwrap_or(usize::MAX)
            .clamp(1, BATCH);
        let mut batch = vec![first];
        let mut bytes = batch[0].bytes.len();
        while batch.len() < room && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.bytes.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let stop_taking = full || broken;
        let replies = store(&mut log, &mut recent, &batch, &mut floor, stop_taking);
        let replies = match replies {
            Ok(r) => r,
            Err(e) => {
                broken = true;
                tracing::error!(source = %settings.name, error = %e, "the MLLP log failed: messages are answered AE from now on");
                if let Ok(mut f) = shared.failed.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
                vec![Reply::Failed; batch.len()]
            }
        };
        shared.durable.store(log.next(), Ordering::SeqCst);
        publish_floor(floor);
        for (request, reply) in batch.into_iter().zip(replies) {
            let _ = request.reply.send(reply);
        }
    }
    // The listener is gone: every record stored is durable.
    shared.durable.store(log.next(), Ordering::SeqCst);
    publish_floor(floor.max(now_ms()));
}

/// Stores a batch (each record stamped with its arrival, never before `floor`, which moves on)
/// and syncs once; `Failed` for every message when `refuse`.
fn store(
    log: &mut Log,
    recent: &mut Recent,
    batch: &[Request],
    floor: &mut i64,
    refuse: bool,
) -> Result<Vec<Reply>, super::log::LogError> {
    if refuse {
        return Ok(vec![Reply::Failed; batch.len()]);
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut appended = false;
    for r in batch {
        if r.kind == Kind::Message
            && let Some(offset) = recent.get(&r.digest)
        {
            replies.push(Reply::Duplicate(offset));
            continue;
        }
        *floor = (*floor).max(now_ms());
        let entry = Entry {
            kind: r.kind,
            digest: r.digest,
            size: r.size,
            peer: &r.peer,
            reason: &r.reason,
            bytes: &r.bytes,
        };
        let offset = log.append(&entry, *floor)?;
        appended = true;
        if r.kind == Kind::Message {
            recent.insert(r.digest, offset);
        }
        replies.push(Reply::Stored(offset));
    }
    if appended {
        log.sync()?;
    }
    Ok(replies)
}

/// Warns about a kind of trouble at most every 10 seconds (a flood must not flood the logs).
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Throttle {
    fn ready(&self, what: &'static str) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let now = Instant::now();
        match last.get(what) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(10) => false,
            _ => {
                last.insert(what, now);
                true
            }
        }
    }
}

/// What the listener's tasks share.
struct Ctx {
    settings: Settings,
    shared: Arc<Shared>,
    writer: Sender<Request>,
    /// Open connections, by id.
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    /// Acknowledgements sent (their control ids).
    acks: AtomicU64,
    /// When the listener started (its acknowledgements' control ids).
    start_secs: u64,
    /// Set when the listener stops: connections end after the message they are answering.
    closing: AtomicBool,
    warned: Throttle,
}

/// An open connection as the listener sees it.
struct Connection {
    /// Since when it has had no message under way (`None`: one is).
    idle_since: Mutex<Option<Instant>>,
    /// Closes it.
    close: Notify,
}

impl Connection {
    fn idle(&self, idle: bool) {
        if let Ok(mut since) = self.idle_since.lock() {
            match (idle, since.is_some()) {
                (true, false) => *since = Some(Instant::now()),
                (false, true) => *since = None,
                _ => {}
            }
        }
    }

    fn idle_since(&self) -> Option<Instant> {
        self.idle_since.lock().ok().and_then(|s| *s)
    }
}

/// One of two futures' outputs.
enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Whichever of `a` and `b` is ready first (`a` when both are).
async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let (mut a, mut b) = (pin!(a), pin!(b));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

/// The accept loop, until stopped; then every connection is closed and waited for.
async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>, stop: Arc<Notify>) {
    let name = ctx.settings.name.clone();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(source = %name, error = %e, "cannot listen");
            if let Ok(mut f) = ctx.shared.failed.lock() {
                f.get_or_insert_with(|| format!("cannot listen: {e}"));
            }
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    while !ctx.shared.stopping.load(Ordering::SeqCst) {
        match race(stop.notified(), listener.accept()).await {
            Either::Left(()) => break,
            Either::Right(Ok((stream, peer))) => {
                while tasks.try_join_next().is_some() {}
                if let Some((id, conn)) = ctx.admit() {
                    tasks.spawn(open(stream, peer, Arc::clone(&ctx), id, conn));
                } else {
                    ctx.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    if ctx.warned.ready("refused") {
                        tracing::warn!(source = %name, %peer, open = ctx.settings.max_connections, refused = ctx.shared.stats.refused.load(Ordering::Relaxed), "max-connections are open and none is idle: a new connection is closed");
                    }
                }
            }
            Either::Right(Err(e)) => {
                // Out of file descriptors, or the like: the listener waits and goes on.
                if ctx.warned.ready("accept") {
                    tracing::warn!(source = %name, error = %e, "cannot accept a connection");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    ctx.closing.store(true, Ordering::SeqCst);
    if let Ok(connections) = ctx.connections.lock() {
        for c in connections.values() {
            c.close.notify_one();
        }
    }
    while tasks.join_next().await.is_some() {}
    let s = &ctx.shared.stats;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        source = %name,
        connections = n(&s.connections),
        accepted = n(&s.accepted),
        duplicates = n(&s.duplicates),
        rejected = n(&s.rejected),
        errors = n(&s.errors),
        refused = n(&s.refused),
        evicted = n(&s.evicted),
        timeouts = n(&s.timeouts),
        incomplete = n(&s.incomplete),
        garbage_bytes = n(&s.garbage),
        "MLLP listener stopped"
    );
}

impl Ctx {
    /// Registers a new connection; at `max-connections`, closes the one idle the longest to make
    /// room, or refuses (`None`) when none is idle.
    fn admit(&self) -> Option<(u64, Arc<Connection>)> {
        let mut connections = self.connections.lock().ok()?;
        if connections.len() >= self.settings.max_connections.max(1) {
            let victim = connections
                .iter()
                .filter_map(|(id, c)| c.idle_since().map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(c) = connections.remove(&victim) {
                c.close.notify_one();
                self.shared.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Connection {
            idle_since: Mutex::new(Some(Instant::now())),
            close: Notify::new(),
        });
        connections.insert(id, Arc::clone(&conn));
        Some((id, conn))
    }

    /// Hands a message (or, for an oversize one, its first bytes) to the writer and answers
    /// with the acknowledgement, framed.
    async fn handle(&self, bytes: Vec<u8>, size: u64, peer: &str) -> Vec<u8> {
        let max = self.settings.max_message_size as u64;
        let (header, problem) = if size > max {
            let problem = Problem::TooLarge { len: size, max };
            (Header::read(&bytes).ok(), Some(problem))
        } else {
            match Header::check(&bytes) {
                Ok(h) => (Some(h), None),
                Err((p, h)) => (h, Some(p)),
            }
        };
        let (tx, rx) = oneshot::channel();
        let request = Request {
            kind: if problem.is_some() {
                Kind::Rejected
            } else {
                Kind::Message
            },
            digest: if problem.is_some() {
                [0; 16]
            } else {
                digest(&bytes)
            },
            size,
            peer: peer.to_owned(),
            reason: problem
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            bytes,
            reply: tx,
        };
        let reply = if self.writer.send(request).is_ok() {
            rx.await.unwrap_or(Reply::Failed)
        } else {
            Reply::Failed
        };
        let stats = &self.shared.stats;
        let (code, problem) = match (reply, problem) {
            (Reply::Failed, _) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                (Code::Error, Some(Problem::NotStored))
            }
            (_, Some(p)) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                (p.code(), Some(p))
            }
            (Reply::Duplicate(_), None) => {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                (Code::Accept, None)
            }
            (Reply::Stored(_), None) => {
                stats.accepted.fetch_add(1, Ordering::Relaxed);
                (Code::Accept, None)
            }
        };
        match reply {
            Reply::Stored(offset) | Reply::Duplicate(offset) => {
                tracing::debug!(source = %self.settings.name, %peer, offset, code = code.as_str(), duplicate = matches!(reply, Reply::Duplicate(_)), "message acknowledged");
            }
            Reply::Failed => {
                tracing::debug!(source = %self.settings.name, %peer, code = code.as_str(), "message not stored");
            }
        }
        let n = self.acks.fetch_add(1, Ordering::Relaxed);
        let control_id = format!("{:08X}{n:X}", self.start_secs);
        let time = chrono::Utc::now()
            .format("%Y%m%d%H%M%S%.3f+0000")
            .to_string();
        let ack = Ack {
            header: header.as_ref(),
            code,
            problem: problem.as_ref(),
            control_id: &control_id,
            time: &time,
        }
        .render();
        let mut framed = Vec::with_capacity(ack.len() + 3);
        framed.push(START);
        framed.extend_from_slice(&ack);
        framed.extend_from_slice(&[END, CR]);
        framed
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Stopping,
    Closed,
    Eof,
    Idle,
    ReadTimeout,
    WriteFailed,
    ReadFailed,
}

/// Timeouts, peer and stats of a connection's loop.
struct Peer<'a> {
    ctx: &'a Ctx,
    conn: &'a Connection,
    text: String,
}

/// One connection, from its TLS handshake (when the listener has TLS) until it ends.
async fn open(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, id: u64, conn: Arc<Connection>) {
    let stats = &ctx.shared.stats;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let who = Peer {
        ctx: &ctx,
        conn: &conn,
        text: peer.to_string(),
    };
    let name = &ctx.settings.name;
    tracing::debug!(source = %name, peer = %who.text, "connection opened");
    match ctx.settings.tls.clone() {
        None => connection(stream, &who).await,
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let handshake = race(
                conn.close.notified(),
                tokio::time::timeout(ctx.settings.read_timeout, acceptor.accept(stream)),
            )
            .await;
            match handshake {
                Either::Right(Ok(Ok(tls))) => connection(tls, &who).await,
                Either::Right(Ok(Err(e))) => {
                    if ctx.warned.ready("tls") {
                        tracing::warn!(source = %name, peer = %who.text, error = %e, "TLS handshake failed: connection closed");
                    }
                }
                Either::Right(Err(_)) => {
                    stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    if ctx.warned.ready("tls") {
                        tracing::warn!(source = %name, peer = %who.text, "TLS handshake not done within read-timeout: connection closed");
                    }
                }
                Either::Left(()) => {}
            }
        }
    }
    if let Ok(mut connections) = ctx.connections.lock() {
        connections.remove(&id);
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// A connection's messages, until it ends.
async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, who: &Peer<'_>) {
    let (ctx, conn) = (who.ctx, who.conn);
    let stats = &ctx.shared.stats;
    let peer_text = &who.text;
    let name = &ctx.settings.name;
    let mut decoder = Decoder::new(ctx.settings.max_message_size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    // When the message under way started; when the connection last had none under way.
    let mut started: Option<Instant> = None;
    let mut last = Instant::now();
    let end = 'conn: loop {
        if ctx.closing.load(Ordering::SeqCst) {
            break End::Stopping;
        }
        let deadline = match (started, ctx.settings.idle_timeout) {
            (Some(s), _) => s + ctx.settings.read_timeout,
            (None, Some(idle)) => last + idle,
            (None, None) => Instant::now() + Duration::from_secs(86_400),
        };
        let read = race(
            conn.close.notified(),
            tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)),
        )
        .await;
        let n = match read {
            Either::Left(()) => break End::Closed,
            Either::Right(Err(_)) if started.is_some() => break End::ReadTimeout,
            // No idle timeout: the day-long deadline passed; wait on.
            Either::Right(Err(_)) if ctx.settings.idle_timeout.is_none() => continue,
            Either::Right(Err(_)) => break End::Idle,
            Either::Right(Ok(Ok(0))) => break End::Eof,
            Either::Right(Ok(Err(_))) => break End::ReadFailed,
            Either::Right(Ok(Ok(n))) => n,
        };
        conn.idle(false);
        decoder.push(&buf[..n], &mut events);
        for event in events.drain(..) {
            let (bytes, size) = match event {
                Event::Message(bytes) => {
                    let size = bytes.len() as u64;
                    (bytes, size)
                }
                Event::Oversize { len, head } => (head, len),
                Event::Garbage(n) => {
                    stats.garbage.fetch_add(n, Ordering::Relaxed);
                    if ctx.warned.ready("garbage") {
                        tracing::warn!(source = %name, peer = %peer_text, bytes = n, "bytes outside an MLLP frame discarded");
                    }
                    continue;
                }
                Event::Abandoned(n) => {
                    started = None;
                    stats.incomplete.fetch_add(1, Ordering::Relaxed);
                    if ctx.warned.ready("abandoned") {
                        tracing::warn!(source = %name, peer = %peer_text, bytes = n, "a message without its end block was cut short by a new one; discarded");
                    }
                    continue;
                }
            };
            started = None;
            if ctx.closing.load(Ordering::SeqCst) {
                // Not acknowledged: the sender sends it again to whoever listens next.
                break 'conn End::Stopping;
            }
            let ack = ctx.handle(bytes, size, peer_text).await;
            let write = async {
                stream.write_all(&ack).await?;
                stream.flush().await
            };
            let written = tokio::time::timeout(ctx.settings.write_timeout, write).await;
            if !matches!(written, Ok(Ok(()))) {
                break 'conn End::WriteFailed;
            }
            last = Instant::now();
        }
        if decoder.in_frame() {
            started.get_or_insert_with(Instant::now);
        } else {
            started = None;
            conn.idle(true);
        }
    };
    if decoder.in_frame() {
        stats.incomplete.fetch_add(1, Ordering::Relaxed);
    }
    match end {
        End::Idle => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %name, peer = %peer_text, "idle-timeout: connection closed");
        }
        End::ReadTimeout | End::WriteFailed => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            let what = if matches!(end, End::ReadTimeout) {
                "read-timeout: a message did not arrive in full in time; its bytes are discarded"
            } else {
                "the sender did not take its acknowledgement (write-timeout or a broken connection)"
            };
            if ctx.warned.ready(if matches!(end, End::ReadTimeout) {
                "read"
            } else {
                "write"
            }) {
                tracing::warn!(source = %name, peer = %peer_text, pending_bytes = decoder.pending(), "connection closed: {what}");
            }
        }
        End::Eof | End::ReadFailed if decoder.in_frame() => {
            if ctx.warned.ready("eof") {
                tracing::warn!(source = %name, peer = %peer_text, pending_bytes = decoder.pending(), "the connection ended inside a message; its bytes are discarded");
            }
        }
        _ => tracing::debug!(source = %name, peer = %peer_text, end = ?end, "connection closed"),
    }
    // A TLS peer is told the connection ends (close_notify); a TCP one gets its FIN.
    if !matches!(end, End::WriteFailed | End::ReadFailed) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_duplicate_window_keeps_the_last_messages() {
        let d = |i: u8| [i; 16];
        let mut r = Recent::new(3, (0..5).map(|i| (d(i), u64::from(i))).collect());
        assert_eq!(r.get(&d(1)), None);
        assert_eq!(r.get(&d(2)), Some(2));
        r.insert(d(9), 9);
        assert_eq!(r.get(&d(2)), None);
        assert_eq!(r.get(&d(9)), Some(9));
        let mut off = Recent::new(0, vec![(d(1), 1)]);
        off.insert(d(2), 2);
        assert_eq!(off.get(&d(1)), None);
        assert_eq!(off.get(&d(2)), None);
    }
}
