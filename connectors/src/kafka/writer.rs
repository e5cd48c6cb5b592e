//! Writing to topics with an idempotent producer that reports every delivery.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::{ClientSettings, KafkaError};

/// A record to write.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// Retries of one record before the job fails: librdkafka already retries every send until
/// `message.timeout.ms`; this covers outages longer than that.
const MAX_ATTEMPTS: u32 = 5;

/// An idempotent producer (`enable.idempotence`, `acks=all`) that keeps every record until it is
/// acknowledged, sends again the records whose delivery failed, and tells the caller which
/// records are durable. Nothing is dropped silently: a record that still fails after
/// `MAX_ATTEMPTS` sends is an error.
pub struct TopicWriter {
    producer: BaseProducer<Reports>,
    pending: HashMap<usize, (OutMessage, u32)>,
    next: usize,
    /// The bootstrap brokers, for messages.
    brokers: String,
}

impl TopicWriter {
    /// A producer with `settings`.
    ///
    /// # Errors
    /// If the client cannot be configured.
    pub fn new(settings: &ClientSettings) -> Result<Self, KafkaError> {
        let mut config = settings.client_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let producer = config
            .create_with_context(Reports::default())
            .map_err(KafkaError::client("producer"))?;
        Ok(Self {
            producer,
            pending: HashMap::new(),
            next: 0,
            brokers: settings.brokers.clone(),
        })
    }

    /// Records sent and not yet acknowledged.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Queues `message`; returns its token, reported by [`poll`](Self::poll) once it is durable.
    /// Waits (serving delivery reports) while the client's queue is full.
    ///
    /// # Errors
    /// If the client refuses the record for good (an unknown topic, a record too large).
    pub fn send(&mut self, message: OutMessage) -> Result<usize, KafkaError> {
        let token = self.next;
        self.next += 1;
        self.enqueue(token, &message)?;
        self.pending.insert(token, (message, 1));
        Ok(token)
    }

    fn enqueue(&self, token: usize, message: &OutMessage) -> Result<(), KafkaError> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len());
            for (k, v) in &message.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = BaseRecord::with_opaque_to(&message.topic, token)
                .payload(&message.payload)
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(KafkaError::Client {
                        what: format!("produce to `{}`", message.topic),
                        source: e,
                    });
                }
            }
        }
    }

    /// Serves delivery reports; returns the tokens of the records acknowledged since the last
    /// call. Records whose delivery failed are sent again.
    ///
    /// # Errors
    /// If a record failed `MAX_ATTEMPTS` times, or cannot be sent again.
    pub fn poll(&mut self) -> Result<Vec<usize>, KafkaError> {
        self.producer.poll(Duration::ZERO);
        let reports = match self.producer.context().0.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => Vec::new(),
        };
        let mut acked = Vec::with_capacity(reports.len());
        for (token, outcome) in reports {
            match outcome {
                Ok(()) => {
                    self.pending.remove(&token);
                    acked.push(token);
                }
                Err(reason) => {
                    let Some((message, attempts)) = self.pending.get_mut(&token) else {
                        continue;
                    };
                    if *attempts >= MAX_ATTEMPTS {
                        return Err(KafkaError::Delivery {
                            topic: message.topic.clone(),
                            brokers: self.brokers.clone(),
                            attempts: *attempts,
                            reason,
                        });
                    }
                    *attempts += 1;
                    tracing::warn!(topic = %message.topic, attempt = *attempts, %reason, "delivery failed; sending again");
                    let message = message.clone();
                    self.enqueue(token, &message)?;
                }
            }
        }
        Ok(acked)
    }

    /// Waits up to `timeout` for every record to be acknowledged; returns the tokens acked.
    ///
    /// # Errors
    /// As [`poll`](Self::poll).
    pub fn flush(&mut self, timeout: Duration) -> Result<Vec<usize>, KafkaError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut acked = Vec::new();
        while !self.pending.is_empty() && std::time::Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(10));
            acked.extend(self.poll()?);
        }
        Ok(acked)
    }
}

impl Drop for TopicWriter {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
