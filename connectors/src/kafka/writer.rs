//! Writing to topics with an idempotent producer that reports every delivery.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};

use super::{ClientSettings, KafkaError};

/// A record to write.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutMessage {
    /// The topic.
    pub topic: String,
    /// The key (records of one key go to one partition, in order).
    pub key: Option<Vec<u8>>,
    /// The value.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutMessage {
    /// Its size: key, payload and headers, in bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// The record a producer sends, with `opaque` for its delivery report.
    pub(crate) fn record<O: rdkafka::util::IntoOpaque>(
        &self,
        opaque: O,
    ) -> BaseRecord<'_, Vec<u8>, Vec<u8>, O> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let record = BaseRecord::with_opaque_to(&self.topic, opaque)
            .payload(&self.payload)
            .headers(headers);
        match &self.key {
            Some(key) => record.key(key),
            None => record,
        }
    }
}

/// Delivery reports, collected by the producer's callback while it is polled.
#[derive(Default)]
struct Reports(Mutex<Vec<(usize, Result<(), String>)>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, token: usize) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        if let Ok(mut reports) = self.0.lock() {
            reports.push((token, outcome));
        }
    }
}

/// The first pause before a record whose delivery failed is sent again; each next one doubles.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest pause between sends of a record.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Records waiting this long with none acknowledged count as an outage (for reports) before
/// any send has failed: a broker that stopped answering keeps its connections open.
const STALL: Duration = Duration::from_secs(5);

/// A record not yet acknowledged: the message, its sends, and (once a send failed) when the
/// first one failed and when it is sent again.
struct Pending {
    message: OutMessage,
    attempts: u32,
    failing_since: Option<Instant>,
    retry_at: Option<Instant>,
}

/// An idempotent producer (`enable.idempotence`, `acks=all`) that keeps every record until it is
/// acknowledged, sends again (after a pause that doubles from 100 ms up to 5 s) the records whose
/// delivery failed or that the client could not take while its broker is away, and tells the
/// caller which records are durable. Nothing is dropped silently: a record still failing
/// `retry_for` after its first failure is an error naming the topic and the brokers.
pub struct TopicWriter {
    producer: BaseProducer<Reports>,
    /// The producer's configuration, to replace it.
    config: rdkafka::ClientConfig,
    /// A send timed out: the producer is replaced before records are sent again.
    replace: bool,
    pending: HashMap<usize, Pending>,
    next: usize,
    /// The bootstrap brokers, for messages.
    brokers: String,
    /// How long a failing record is sent again before the writer gives up.
    retry_for: Duration,
    /// Since when records have been failing (none acknowledged since), for reports.
    outage: Option<(Instant, String)>,
    /// The last acknowledgement, or the first send after a moment with nothing in flight.
    progress: Instant,
    /// The records to send again, by when (an entry whose record has another time since is
    /// stale and skipped): a poll looks at those due only, never at every record in flight.
    due: BTreeSet<(Instant, usize)>,
}

/// Whether the client refused a record for a reason that can pass: its broker is away or does
/// not know the topic yet (a restarted broker), or its queue is full.
fn transient(e: &RdError) -> bool {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            C::QueueFull
                | C::UnknownTopic
                | C::UnknownPartition
                | C::UnknownTopicOrPartition
                | C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::RequestTimedOut
                | C::MessageTimedOut
                | C::NetworkException
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::Resolve
        ),
        None => false,
    }
}

impl TopicWriter {
    /// A producer with `settings` that sends a failing record again for up to `retry_for`.
    ///
    /// # Errors
    /// If the client cannot be configured.
    pub fn new(settings: &ClientSettings, retry_for: Duration) -> Result<Self, KafkaError> {
        let mut config = settings.client_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        // librdkafka keeps sending a record until `retry_for` has passed (a broker that stops
        // answering for less is waited for without a second copy of anything); a record it then
        // reports failed ends the run.
        if !settings.properties.contains_key("message.timeout.ms")
            && !settings.properties.contains_key("delivery.timeout.ms")
        {
            let ms = retry_for.as_millis().clamp(1_000, i32::MAX as u128);
            config.set("message.timeout.ms", ms.to_string());
        }
        let producer = config
            .create_with_context(Reports::default())
            .map_err(KafkaError::client("producer"))?;
        Ok(Self {
            producer,
            config,
            replace: false,
            pending: HashMap::new(),
            next: 0,
            brokers: settings.brokers.clone(),
            retry_for,
            outage: None,
            progress: Instant::now(),
            due: BTreeSet::new(),
        })
    }

    /// Records sent and not yet acknowledged.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Since when deliveries have been failing (no record acknowledged since), and the last
    /// failure; `None` while they succeed.
    #[must_use]
    pub fn outage(&self) -> Option<(Instant, &str)> {
        self.outage.as_ref().map(|(t, r)| (*t, r.as_str()))
    }

    /// Queues `message`; returns its token, reported by [`poll`](Self::poll) once it is durable.
    /// Waits (serving delivery reports) while the client's queue is full.
    ///
    /// # Errors
    /// If the client refuses the record for good (a record too large, a topic it may not write).
    pub fn send(&mut self, message: OutMessage) -> Result<usize, KafkaError> {
        let token = self.next;
        self.next += 1;
        if self.pending.is_empty() {
            self.progress = Instant::now();
        }
        let mut pending = Pending {
            message,
            attempts: 1,
            failing_since: None,
            retry_at: None,
        };
        if let Err(e) = self.enqueue(token, &pending.message) {
            if !transient(&e) {
                return Err(KafkaError::Client {
                    what: format!("produce to `{}`", pending.message.topic),
                    source: e,
                });
            }
            let now = Instant::now();
            self.failing(now, &e.to_string());
            pending.failing_since = Some(now);
            pending.retry_at = Some(now + RETRY_FIRST);
            self.due.insert((now + RETRY_FIRST, token));
        }
        self.pending.insert(token, pending);
        Ok(token)
    }

    fn enqueue(&self, token: usize, message: &OutMessage) -> Result<(), RdError> {
        loop {
            let record = message.record(token);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Notes a failure: the first of an outage is logged.
    fn failing(&mut self, now: Instant, reason: &str) {
        if self.outage.is_none() {
            tracing::warn!(
                brokers = %self.brokers,
                %reason,
                retry_for = ?self.retry_for,
                "Kafka deliveries are failing: records are kept and sent again until the broker \
                 answers"
            );
            self.outage = Some((now, reason.to_owned()));
        } else if let Some((_, last)) = self.outage.as_mut() {
            reason.clone_into(last);
        }
    }

    /// Serves delivery reports; returns the tokens of the records acknowledged since the last
    /// call. Records whose delivery failed are sent again once their pause is over.
    ///
    /// # Errors
    /// If a record has been failing for longer than `retry_for`, or the client refuses it for
    /// good.
    pub fn poll(&mut self) -> Result<Vec<usize>, KafkaError> {
        self.producer.poll(Duration::ZERO);
        let reports = match self.producer.context().0.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => Vec::new(),
        };
        let now = Instant::now();
        let mut acked = Vec::with_capacity(reports.len());
        for (token, outcome) in reports {
            match outcome {
                Ok(()) => {
                    self.pending.remove(&token);
                    acked.push(token);
                }
                Err(reason) => {
                    self.failing(now, &reason);
                    // An idempotent producer whose send timed out may not recover with some
                    // brokers (its sequence numbers are in doubt): a new one sends again.
                    if reason.contains("timed out") {
                        self.replace = true;
                    }
                    if let Some(p) = self.pending.get_mut(&token) {
                        let since = *p.failing_since.get_or_insert(now);
                        let at = now + backoff(p.attempts);
                        p.retry_at = Some(at);
                        self.due.insert((at, token));
                        if now.duration_since(since) > self.retry_for {
                            return Err(self.gave_up(token, now));
                        }
                    }
                }
            }
        }
        if !acked.is_empty() {
            self.progress = now;
        } else if !self.pending.is_empty() && now.duration_since(self.progress) > STALL {
            let waiting = now.duration_since(self.progress);
            self.failing(
                self.progress,
                &format!(
                    "{} record(s) waiting, none acknowledged for {:.0} s",
                    self.pending.len(),
                    waiting.as_secs_f64()
                ),
            );
        }
        if !acked.is_empty()
            && let Some((since, _)) = self.outage.take()
        {
            tracing::info!(
                brokers = %self.brokers,
                after = ?now.duration_since(since),
                "Kafka deliveries succeed again"
            );
        }
        self.resend(now)?;
        Ok(acked)
    }

    /// Replaces the producer: what the old one has in flight or queued is dropped (its
    /// acknowledgements would be lost with it), and every record not acknowledged is sent again
    /// by the new one once its pause is over (a record the broker did take is then written
    /// twice: Kafka sinks are at least once).
    fn replace_producer(&mut self, now: Instant) -> Result<(), KafkaError> {
        self.producer
            .purge(PurgeConfig::default().queue().inflight().non_blocking());
        let producer = self
            .config
            .create_with_context(Reports::default())
            .map_err(KafkaError::client("producer"))?;
        drop(std::mem::replace(&mut self.producer, producer));
        for (token, p) in &mut self.pending {
            if p.retry_at.is_none() {
                let at = now + backoff(p.attempts);
                p.retry_at = Some(at);
                p.failing_since.get_or_insert(now);
                self.due.insert((at, *token));
            }
        }
        self.replace = false;
        tracing::warn!(
            brokers = %self.brokers,
            records = self.pending.len(),
            "a Kafka send timed out: the producer is replaced and every record not acknowledged \
             is sent again"
        );
        Ok(())
    }

    /// Sends again the records whose pause is over.
    fn resend(&mut self, now: Instant) -> Result<(), KafkaError> {
        if self.replace {
            self.replace_producer(now)?;
        }
        while let Some(&(at, token)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            let Some(p) = self
                .pending
                .get_mut(&token)
                .filter(|p| p.retry_at == Some(at))
            else {
                continue;
            };
            p.attempts += 1;
            p.retry_at = None;
            let message = p.message.clone();
            let attempts = p.attempts;
            match self.enqueue(token, &message) {
                Ok(()) => {}
                Err(e) if transient(&e) => {
                    self.failing(now, &e.to_string());
                    if let Some(p) = self.pending.get_mut(&token) {
                        let since = *p.failing_since.get_or_insert(now);
                        let at = now + backoff(attempts);
                        p.retry_at = Some(at);
                        self.due.insert((at, token));
                        if now.duration_since(since) > self.retry_for {
                            return Err(self.gave_up(token, now));
                        }
                    }
                }
                Err(e) => {
                    return Err(KafkaError::Client {
                        what: format!("produce to `{}`", message.topic),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    fn gave_up(&self, token: usize, now: Instant) -> KafkaError {
        let p = &self.pending[&token];
        KafkaError::Delivery {
            retried_for: p
                .failing_since
                .map_or(Duration::ZERO, |s| now.duration_since(s)),
            topic: p.message.topic.clone(),
            brokers: self.brokers.clone(),
            attempts: p.attempts,
            reason: self
                .outage
                .as_ref()
                .map_or_else(String::new, |(_, r)| r.clone()),
        }
    }

    /// Waits up to `timeout` for every record to be acknowledged; returns the tokens acked.
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    pub fn flush(&mut self, timeout: Duration) -> Result<Vec<usize>, KafkaError> {
        let deadline = Instant::now() + timeout;
        let mut acked = Vec::new();
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(10));
            acked.extend(self.poll()?);
        }
        Ok(acked)
    }
}

/// The pause after a record's `attempts`-th send failed.
fn backoff(attempts: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

impl Drop for TopicWriter {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
