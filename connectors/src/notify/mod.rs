//! Clinical delivery: identified notifications
//! ([`ClinicalNotification`](vitalflow_model::notification::ClinicalNotification)) as the care
//! team's systems take them, and the clients that deliver them.
//!
//! * [`oru`]: an HL7 v2.5 `ORU^R01` message for a notification;
//! * [`mllp_client`]: sends HL7 v2 messages over MLLP (optionally TLS) and waits for each one's
//!   acknowledgement;
//! * [`fhir`]: a FHIR R4 `Communication` resource for a notification;
//! * [`http`]: posts a resource to a FHIR server over HTTPS with a bearer token (conditional
//!   create, so a second delivery of a notification creates nothing);
//! * [`tls`]: the clients' TLS configuration.
//!
//! Both clients retry what may work later (connection failures, time-outs, a busy server) with
//! an exponential [`Backoff`] until their [`RetryPolicy`] gives up, and tell the caller an
//! [`Outcome`]: delivered, rejected (a dead letter: sending it again will not help) or given up.
//!
//! Notifications carry PHI. Nothing here writes a value of a notification to a log or to an
//! error: errors and outcomes name what failed (a stage, an acknowledgement code, an HTTP
//! status), never what was sent, and never what a receiver echoed back.

use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

pub mod fhir;
pub mod http;
pub mod mllp_client;
pub mod oru;
pub mod tls;

#[cfg(test)]
mod testing;

pub use fhir::{FhirSettings, NOTIFICATION_SYSTEM, communication};
pub use http::{BearerToken, FhirHttpClient, FhirHttpSettings, TokenError, load_token};
pub use mllp_client::{AckReply, MllpClient, MllpClientSettings, MllpTls, NakPolicy, parse_ack};
pub use oru::{OruMessage, OruSettings, control_id, escape, oru_r01};
pub use tls::client_config;

/// How long a client keeps trying to deliver one message, and how long it waits between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt; each later wait doubles it.
    pub initial_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// No attempt starts, and none goes on, later than this after the first one started.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// 500 ms, doubling up to 30 s, for up to 10 minutes.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            give_up_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The backoff of one delivery, starting now.
    #[must_use]
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: *self,
            next: self.initial_delay,
            started: Instant::now(),
            attempts: 0,
        }
    }
}

/// The attempts of one delivery under a [`RetryPolicy`]: how many there were, how long the next
/// one may take and how long to wait before it. The waits double, without jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    next: Duration,
    started: Instant,
    attempts: u32,
}

impl Backoff {
    /// Counts an attempt starting; returns its number (1 for the first).
    pub fn begin_attempt(&mut self) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        self.attempts
    }

    /// The attempts begun so far.
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time left before the policy gives up.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.policy
            .give_up_after
            .saturating_sub(self.started.elapsed())
    }

    /// How long one step of an attempt may take: `limit`, or less when the policy gives up
    /// sooner (but never less than 10 ms, so that the first attempt is a real one).
    #[must_use]
    pub fn step_timeout(&self, limit: Duration) -> Duration {
        limit.min(self.remaining()).max(Duration::from_millis(10))
    }

    /// The wait before the next attempt, or `None` when the policy gives up: the wait would end
    /// after the give-up time. `at_once` (a reused connection that turned out closed) asks for
    /// no wait, and leaves the doubling where it was.
    pub fn next_delay(&mut self, at_once: bool) -> Option<Duration> {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return None;
        }
        if at_once {
            return Some(Duration::ZERO);
        }
        let delay = self.next.min(self.policy.max_delay);
        if delay >= remaining {
            return None;
        }
        self.next = self.next.saturating_mul(2).min(self.policy.max_delay);
        Some(delay)
    }
}

/// What became of a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it.
    Delivered {
        /// Attempts made (1: the first one worked).
        attempts: u32,
        /// The acknowledgement code (`AA`, `CA`) or the HTTP status (`201`).
        code: String,
    },
    /// The receiver refused it; sending it again will not help (a dead letter).
    Rejected {
        /// Attempts made.
        attempts: u32,
        /// The acknowledgement code (`AR`, `AE`, ...) or the HTTP status (`400`).
        code: String,
        /// What the refusal says, without PHI: the HL7 error code (ERR-3) or the HTTP reason
        /// phrase of the status; empty when there is none.
        text: String,
    },
    /// The policy gave up: every attempt failed in a way that might have worked later.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's failure (no PHI).
        reason: String,
    },
}

impl Outcome {
    /// Whether the receiver took the message.
    #[must_use]
    pub const fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }

    /// The attempts made.
    #[must_use]
    pub const fn attempts(&self) -> u32 {
        match self {
            Self::Delivered { attempts, .. }
            | Self::Rejected { attempts, .. }
            | Self::GaveUp { attempts, .. } => *attempts,
        }
    }
}

/// Why a client cannot be made, or a notification cannot be turned into a message. Messages
/// name settings and files, never a value of a notification or a token.
#[derive(Debug, Error)]
pub enum NotifyError {
    /// The TLS configuration cannot be made.
    #[error("TLS: {0}")]
    Tls(#[from] crate::mllp::TlsError),
    /// The TLS server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
    /// The FHIR base URL is unusable.
    #[error("FHIR base URL: {0}")]
    Url(String),
    /// The notification has no medical record number: it cannot name its patient.
    #[error("the notification has no medical record number")]
    NoMrn,
    /// The notification has no id: a receiver could not tell a second delivery of it.
    #[error("the notification has no id")]
    NoNotificationId,
}

/// A failed attempt: what went wrong (no PHI: stages, codes, statuses, I/O error kinds).
#[derive(Debug, Error)]
pub(crate) enum AttemptError {
    /// Connecting (TCP or the TLS handshake) failed.
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    /// A step took longer than allowed.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The receiver closed the connection before it answered.
    #[error("the connection was closed before the answer")]
    Closed,
    /// The receiver's answer is not what the protocol asks for.
    #[error("unexpected answer: {0}")]
    Protocol(&'static str),
    /// A negative acknowledgement, under the retry policy.
    #[error("negative acknowledgement {code}{}", error_code.as_deref().map(|c| format!(" (error {c})")).unwrap_or_default())]
    Negative {
        /// MSA-1.
        code: String,
        /// ERR-3's code.
        error_code: Option<String>,
    },
    /// An HTTP status worth retrying.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
}

impl AttemptError {
    /// Whether the next attempt may start at once: a connection kept from an earlier delivery
    /// turned out closed (the receiver closes idle connections), which says nothing about the
    /// receiver being busy.
    pub(crate) const fn stale_connection(&self) -> bool {
        matches!(self, Self::Closed | Self::Io(..))
    }
}

/// A byte stream to a receiver: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected stream.
pub(crate) type Stream = Box<dyn Io>;

/// Connects to `host:port` (and does the TLS handshake when `tls` is given) within `timeout`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    tls: Option<&tls::Connector>,
    timeout: Duration,
) -> Result<Stream, AttemptError> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(AttemptError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Box::new(tcp) as Stream),
            Some(c) => {
                let stream = c
                    .connector
                    .connect(c.server_name.clone(), tcp)
                    .await
                    .map_err(AttemptError::Connect)?;
                Ok(Box::new(stream) as Stream)
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| AttemptError::Timeout("connecting"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_double_up_to_the_maximum_and_stop_before_the_give_up_time() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
            give_up_after: Duration::from_secs(3600),
        };
        let mut b = policy.start();
        let waits: Vec<_> = (0..5).map(|_| b.next_delay(false)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(waits, vec![ms(100), ms(200), ms(300), ms(300), ms(300)]);
        assert_eq!(b.next_delay(true), Some(Duration::ZERO));
        assert_eq!(b.begin_attempt(), 1);
        assert_eq!(b.begin_attempt(), 2);
        assert_eq!(b.attempts(), 2);

        let short = RetryPolicy {
            give_up_after: Duration::from_millis(150),
            ..policy
        };
        let mut b = short.start();
        assert_eq!(b.next_delay(false), ms(100));
        // 200 ms would end after the give-up time.
        assert_eq!(b.next_delay(false), None);
        assert!(b.step_timeout(Duration::from_secs(5)) <= Duration::from_millis(150));
    }
}
