//! `kind = "mllp"`: HL7 v2 messages received over MLLP, each acknowledged once it is durable.
//!
//! The listener, its log and the acknowledgements are in
//! [`vitalflow_connectors::mllp`]; the operator that reads the log into the dataflow is
//! [`crate::runtime::mllp_source`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use toml::Spanned;
use vitalflow_connectors::mllp::log::SEGMENT_SIZE;
use vitalflow_connectors::mllp::{Log, Settings, Shared, server_config};

use super::settings::{ByteSize, Duration, DurationOr, OrOff};
use super::{Check, NodeKind, NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port};
use crate::runtime::checkpoint::{PositionLog, SourceResume};
use crate::runtime::mllp_source::{MllpSource, Parts, TOPIC, mllp};
use crate::runtime::plan::SourceLog;

/// Where a source's log lives, under the output folder (then the source's name).
pub const LOG_DIR: &str = "_vitalflow/mllp";

/// The smallest and largest `max-message-size`.
const MESSAGE_SIZES: (u64, u64) = (1 << 10, 512 << 20);

/// `kind = "mllp"`: HL7 v2 messages received over MLLP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MllpConfig {
    /// Always `"mllp"`.
    pub kind: String,
    /// The address to listen on, `host:port`: a loopback address unless `listen-any`.
    pub listen: Spanned<String>,
    /// Allow an address other than loopback (the listener has no authentication of its own).
    /// Default: false.
    #[serde(default)]
    pub listen_any: bool,
    /// The longest message taken; a longer one is answered `AR` and dead-lettered with its first
    /// 4 KiB. Default: `1MiB`.
    #[serde(default = "max_message_size")]
    pub max_message_size: Spanned<ByteSize>,
    /// Connections open at once; at the limit a new connection closes the one idle the longest,
    /// or is closed itself when none is idle. Default: 64.
    #[serde(default = "max_connections")]
    pub max_connections: Spanned<u64>,
    /// A connection with no message under way for this long is closed; `off`: never.
    /// Default: `10m`.
    #[serde(default = "idle_timeout")]
    pub idle_timeout: OrOff,
    /// A message must arrive in full within this of its first byte, or its connection is closed.
    /// Default: `30s`.
    #[serde(default = "read_timeout")]
    pub read_timeout: Spanned<Duration>,
    /// An acknowledgement the sender does not take within this closes its connection.
    /// Default: `30s`.
    #[serde(default = "write_timeout")]
    pub write_timeout: Spanned<Duration>,
    /// Messages acknowledged and not yet durable in the output that the log may hold; past it,
    /// new messages wait for their acknowledgement. Default: 10000.
    #[serde(default = "max_backlog")]
    pub max_backlog: Spanned<u64>,
    /// A message identical to one of the last this many stored is acknowledged again without
    /// being processed twice (0: no duplicate detection). Default: 10000.
    #[serde(default = "duplicate_window")]
    pub duplicate_window: u64,
    /// Arrival times are rounded down to this: one dataflow timestamp (and one saga batch) per
    /// step. Default: `1s`.
    #[serde(default = "granularity")]
    pub granularity: Spanned<Duration>,
    /// MLLP over TLS: the certificate and key, and for mutual TLS the client CA. Default: none
    /// (plain TCP).
    pub tls: Option<Spanned<TlsConfig>>,
}

/// `tls = { certificate = "...", key = "...", client-ca = "..." }`: PEM files, relative to the
/// job file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsConfig {
    /// The certificate chain, the listener's certificate first.
    pub certificate: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// CA certificates: with them, every client must present a certificate one of them signed
    /// (mutual TLS).
    pub client_ca: Option<String>,
}

fn max_message_size() -> Spanned<ByteSize> {
    Spanned::new(0..0, ByteSize(1 << 20))
}
fn max_connections() -> Spanned<u64> {
    Spanned::new(0..0, 64)
}
const fn idle_timeout() -> OrOff {
    DurationOr(Some(Duration::from_millis(600_000)))
}
fn read_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(30_000))
}
fn write_timeout() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(30_000))
}
fn max_backlog() -> Spanned<u64> {
    Spanned::new(0..0, 10_000)
}
const fn duplicate_window() -> u64 {
    10_000
}
fn granularity() -> Spanned<Duration> {
    Spanned::new(0..0, Duration::from_millis(1_000))
}

impl MllpConfig {
    /// Milliseconds per dataflow timestamp.
    #[must_use]
    pub fn granularity_ms(&self) -> u64 {
        self.granularity.get_ref().millis().max(1)
    }

    /// The addresses `listen` names, checked against `listen-any`.
    fn addresses(&self, path: &str) -> Result<Vec<SocketAddr>, String> {
        let listen = self.listen.get_ref();
        let addrs: Vec<SocketAddr> = listen
            .to_socket_addrs()
            .map_err(|e| format!("`{path}.listen`: `{listen}` is not an address (HOST:PORT): {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!(
                "`{path}.listen`: `{listen}` resolves to no address"
            ));
        }
        if !self.listen_any
            && let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(format!(
                "`{path}.listen`: {} is not a loopback address; MLLP has no authentication, so \
                 the source listens on other interfaces only with `listen-any = true`",
                open.ip()
            ));
        }
        Ok(addrs)
    }
}

impl NodeSpec for MllpConfig {
    fn kind(&self) -> &'static str {
        "mllp"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        Vec::new()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Raw),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[]
    }

    fn check(&self, c: &mut Check<'_>) {
        let path = c.path.to_owned();
        let listen = self.listen.get_ref();
        match listen.parse::<SocketAddr>() {
            // An address: checked now. A host name is resolved when the job runs.
            Ok(_) => {
                if let Err(e) = self.addresses(&path) {
                    c.at(self.listen.span().start, e);
                }
            }
            Err(_) => {
                let port = listen.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(_))) {
                    c.at(
                        self.listen.span().start,
                        format!("`{path}.listen`: `{listen}` is not HOST:PORT"),
                    );
                }
            }
        }
        let size = self.max_message_size.get_ref().0;
        if !(MESSAGE_SIZES.0..=MESSAGE_SIZES.1).contains(&size) {
            c.at(
                self.max_message_size.span().start,
                format!(
                    "`{path}.max-message-size` must be between {} and {}",
                    ByteSize(MESSAGE_SIZES.0),
                    ByteSize(MESSAGE_SIZES.1)
                ),
            );
        }
        for (name, value) in [
            ("max-connections", &self.max_connections),
            ("max-backlog", &self.max_backlog),
        ] {
            if *value.get_ref() == 0 {
                c.at(
                    value.span().start,
                    format!("`{path}.{name}` must be at least 1"),
                );
            }
        }
        for (name, value) in [
            ("read-timeout", &self.read_timeout),
            ("write-timeout", &self.write_timeout),
            ("granularity", &self.granularity),
        ] {
            if value.get_ref().0.is_zero() {
                c.at(
                    value.span().start,
                    format!("`{path}.{name}` must be at least 1ms"),
                );
            }
        }
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let name = p.node.name.clone();
        let addrs = match self.addresses(&p.path) {
            Ok(a) => a,
            Err(e) => {
                p.at(self.listen.span(), e);
                return None;
            }
        };
        let tls = match &self.tls {
            None => None,
            Some(t) => {
                let tls = t.get_ref();
                let path = |f: &str| p.base.join(f);
                let ca = tls.client_ca.as_deref().map(path);
                match server_config(&path(&tls.certificate), &path(&tls.key), ca.as_deref()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        let message = format!("`{}.tls`: {e}", p.path);
                        p.at(t.span(), message);
                        return None;
                    }
                }
            }
        };
        let listener = match std::net::TcpListener::bind(&addrs[..]) {
            Ok(l) => l,
            Err(e) => {
                let message = format!(
                    "`{}.listen`: cannot listen on {}: {e}",
                    p.path,
                    self.listen.get_ref()
                );
                p.at(self.listen.span(), message);
                return None;
            }
        };
        let resume: Option<SourceResume> = p
            .kafka
            .previous
            .as_ref()
            .and_then(|c| c.sources.get(&name))
            .filter(|r| r.topic == TOPIC)
            .cloned();
        let from = resume
            .as_ref()
            .and_then(|r| r.partitions.get(&0))
            .and_then(|r| u64::try_from(r.from).ok());
        let dir: PathBuf = p.out.join(LOG_DIR).join(&name);
        warn_of_other_logs(p);
        let opened = match Log::open(&dir, from.unwrap_or(0), SEGMENT_SIZE) {
            Ok(o) => o,
            Err(e) => {
                let message = format!("`{}`: cannot open its log: {e}", p.path);
                p.at(p.node.span.clone(), message);
                return None;
            }
        };
        if opened.dropped > 0 {
            tracing::warn!(source = %name, bytes = opened.dropped, "the end of the MLLP log held damaged records (a crash while they were written, before they were acknowledged): dropped");
        }
        let first = opened.log.first();
        let from = from.unwrap_or(first).max(first);
        let shared = Arc::new(Shared::new(opened.log.next(), opened.log.last_ms(), from));
        tracing::debug!(source = %name, from, next = opened.log.next(), "MLLP log opened");
        let log = Arc::new(Mutex::new(PositionLog::resuming(resume.as_ref())));
        let watermark = Arc::new(AtomicU64::new(resume.as_ref().map_or(0, |r| r.time)));
        let granularity_ms = self.granularity_ms();
        p.kafka
            .watermarks
            .insert(name.clone(), (Arc::clone(&watermark), granularity_ms));
        let told = Arc::clone(&shared);
        p.kafka.sources.push(SourceLog {
            name: name.clone(),
            topic: TOPIC.to_owned(),
            log: Arc::clone(&log),
            kafka: None,
            checkpointed: Some(Arc::new(move |r: &SourceResume| {
                if let Some(at) = r.partitions.get(&0)
                    && let Ok(from) = u64::try_from(at.from)
                {
                    told.checkpointed
                        .fetch_max(from, std::sync::atomic::Ordering::SeqCst);
                }
            })),
        });
        let settings = Settings {
            name: name.clone(),
            max_message_size: usize::try_from(self.max_message_size.get_ref().0)
                .unwrap_or(usize::MAX),
            max_connections: usize::try_from(*self.max_connections.get_ref()).unwrap_or(usize::MAX),
            idle_timeout: self.idle_timeout.0.map(|d| d.0),
            read_timeout: self.read_timeout.get_ref().0,
            write_timeout: self.write_timeout.get_ref().0,
            max_backlog: *self.max_backlog.get_ref(),
            duplicate_window: usize::try_from(self.duplicate_window).unwrap_or(usize::MAX),
            tls,
        };
        let source = MllpSource {
            name,
            granularity_ms,
            stop: Arc::clone(&p.kafka.stop),
            resume,
            from,
            log,
            watermark,
            job_watermark: Arc::clone(&p.kafka.job_watermark),
            shared,
            dir,
            parts: Mutex::new(Some(Parts {
                listener,
                opened,
                settings,
            })),
        };
        Some(Box::new(MllpOp {
            source: Arc::new(source),
        }))
    }
}

/// Warns (once, for the job's first MLLP source) about logs in the output folder of MLLP sources
/// the job does not have (a source renamed or removed): the messages they hold that were not yet
/// written are read by no one.
fn warn_of_other_logs(p: &Prepare<'_>) {
    let mllp: Vec<&str> = p
        .job
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Mllp(_)))
        .map(|n| n.name.as_str())
        .collect();
    if mllp.first() != Some(&p.node.name.as_str()) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(p.out.join(LOG_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !mllp.contains(&other.as_str()) {
            tracing::warn!(log = %entry.path().display(), "the output folder holds the MLLP log of `{other}`, a source this job does not have: the messages in it not yet written are not read (rename the source back to read them)");
        }
    }
}

/// A planned MLLP source.
pub struct MllpOp {
    /// The listener, its log, and how the log is read.
    pub source: Arc<MllpSource>,
}

impl Operator for MllpOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let (raw, dead) = mllp(
            b.scope,
            Arc::clone(&self.source),
            counters,
            b.failure.clone(),
        );
        b.progress.push(raw.clone());
        let raw = b.arrivals(raw);
        b.output(name, "out", Port::Raw(raw));
        b.output(name, "dead-letter", Port::Dead(dead));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
