//! Writing to topics in Kafka transactions: one producer per job, one transaction per
//! checkpoint, and a marker committed inside each transaction that tells a restarted run
//! whether the last transaction was committed.
//!
//! The marker is a consumer-group offset: the transaction commits, under the group named by the
//! transactional id, the marker as the offset of partition 0 of the first topic the job writes
//! exactly once (`send_offsets_to_transaction`, as a consume-transform-produce application
//! commits its input offsets). The broker makes it visible with the transaction's records and
//! never without them.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::{ClientSettings, KafkaError, OutMessage};

/// A transactional producer (`transactional.id`), and a client of the marker's group.
pub struct TransactionWriter {
    producer: BaseProducer,
    marker: BaseConsumer,
    /// The topic whose partition 0 carries the marker offset.
    marker_topic: String,
    /// The transactional id, which is also the marker's group.
    id: String,
    brokers: String,
    /// How long a transaction's records and commit may take before the run fails.
    timeout: Duration,
}

impl TransactionWriter {
    /// Opens the producer of transactional id `id` and fences every earlier producer of it:
    /// a transaction the earlier one left open is aborted, one it was committing is completed
    /// (the broker does either before this returns).
    ///
    /// # Errors
    /// If the client cannot be configured or the broker does not answer within `timeout`.
    pub fn open(
        settings: &ClientSettings,
        id: &str,
        marker_topic: &str,
        timeout: Duration,
    ) -> Result<Self, KafkaError> {
        let mut config = settings.client_config()?;
        let ms = timeout.as_millis().clamp(1_000, 900_000).to_string();
        config
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("transaction.timeout.ms", &ms);
        if !settings.properties.contains_key("message.timeout.ms")
            && !settings.properties.contains_key("delivery.timeout.ms")
        {
            config.set("message.timeout.ms", &ms);
        }
        let producer: BaseProducer = config
            .create()
            .map_err(KafkaError::client("transactional producer"))?;
        let mut marker = settings.client_config()?;
        marker
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let marker: BaseConsumer = marker
            .create()
            .map_err(KafkaError::client("marker group client"))?;
        let writer = Self {
            producer,
            marker,
            marker_topic: marker_topic.to_owned(),
            id: id.to_owned(),
            brokers: settings.brokers.clone(),
            timeout,
        };
        writer
            .producer
            .init_transactions(timeout)
            .map_err(|e| writer.failed("start transactions", e))?;
        Ok(writer)
    }

    /// The topic whose partition 0 holds the marker of this writer's transactions.
    #[must_use]
    pub fn marker_topic(&self) -> &str {
        &self.marker_topic
    }

    /// The marker of the last transaction committed with its marker on `topic` (`None`: none
    /// was). A writer's earlier lifetime may have kept its marker on another topic than this
    /// one's (its job's sinks were different).
    ///
    /// # Errors
    /// If the group coordinator does not answer.
    pub fn committed_marker(&self, topic: &str) -> Result<Option<i64>, KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, 0);
        let committed = self
            .marker
            .committed_offsets(list, self.timeout)
            .map_err(|e| self.failed("read the transaction marker", e))?;
        Ok(committed
            .find_partition(topic, 0)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            }))
    }

    /// Writes `messages` and `marker` in one transaction and commits it; returns once
    /// the broker has committed it. On an error the transaction is aborted (nothing of it
    /// becomes visible to `read_committed` readers).
    ///
    /// # Errors
    /// If a record is refused or not acknowledged, or the broker cannot commit (among them a
    /// broker without transactions, and a producer fenced by a newer one of the same id).
    pub fn commit(&self, messages: &[OutMessage], marker: i64) -> Result<(), KafkaError> {
        let result = self.try_commit(messages, marker);
        if result.is_err() {
            let _ = self.producer.abort_transaction(self.timeout);
        }
        result
    }

    fn try_commit(&self, messages: &[OutMessage], marker: i64) -> Result<(), KafkaError> {
        self.producer
            .begin_transaction()
            .map_err(|e| self.failed("begin a transaction", e))?;
        for m in messages {
            self.send(m)?;
        }
        self.producer
            .flush(self.timeout)
            .map_err(|e| self.failed("deliver a transaction's records", e))?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(&self.marker_topic, 0, Offset::Offset(marker))
            .map_err(|e| self.failed("mark a transaction", e))?;
        let group = self.marker.group_metadata().ok_or_else(|| {
            KafkaError::Transaction(format!(
                "the group `{}` of the transaction marker has no metadata",
                self.id
            ))
        })?;
        self.producer
            .send_offsets_to_transaction(&offsets, &group, self.timeout)
            .map_err(|e| self.failed("mark a transaction", e))?;
        self.producer
            .commit_transaction(self.timeout)
            .map_err(|e| self.failed("commit a transaction", e))
    }

    /// Queues one record, serving the client's queue while it is full.
    fn send(&self, m: &OutMessage) -> Result<(), KafkaError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.producer.send(m.record(())) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(code), _))
                    if code == rdkafka::types::RDKafkaErrorCode::QueueFull
                        && Instant::now() < deadline =>
                {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(KafkaError::Client {
                        what: format!("produce to `{}` in a transaction", m.topic),
                        source: e,
                    });
                }
            }
        }
    }

    fn failed(&self, what: &str, source: RdError) -> KafkaError {
        KafkaError::Client {
            what: format!(
                "{what} (transactional id `{}`, brokers {})",
                self.id, self.brokers
            ),
            source,
        }
    }
}
