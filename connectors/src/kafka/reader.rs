//! Reading explicitly assigned partitions of one topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use super::{ClientSettings, KafkaError};

/// One record read from a partition.
#[derive(Clone, Debug)]
pub struct Polled {
    /// The partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's key (when asked for).
    pub key: Option<Vec<u8>>,
    /// The record's value (empty for a tombstone).
    pub payload: Vec<u8>,
    /// The record's Kafka timestamp (create or log-append time), milliseconds since 1970.
    pub timestamp_ms: Option<i64>,
}

/// What a poll returned.
#[derive(Debug)]
pub enum Poll {
    /// Nothing right now.
    Idle,
    /// A record.
    Record(Polled),
    /// The reader has read everything a partition holds (for now).
    End(i32),
    /// A transient error (the client retries by itself); worth a warning.
    Warning(String),
}

/// Where a partition's records begin and end on its broker, as the client last heard (from its
/// fetch answers, through its statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerOffsets {
    /// The partition.
    pub partition: i32,
    /// Its first offset still kept (its log start); `None` until the client has fetched from it.
    pub start: Option<i64>,
    /// The offset after its last record a reader can read: the last stable offset when
    /// uncommitted transactions are skipped (`isolation.level = read_committed`, librdkafka's
    /// default), else the high watermark. `None` until the client has fetched from it.
    pub end: Option<i64>,
}

/// What the reader takes of the client's statistics (a JSON document of which it reads only
/// the topics' partitions).
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Deserialize)]
struct PartitionStatistics {
    partition: i32,
    lo_offset: i64,
    hi_offset: i64,
    ls_offset: i64,
}

/// An offset the statistics report, if it is one (they report -1001 for one not known yet).
fn known(offset: i64) -> Option<i64> {
    (offset >= 0).then_some(offset)
}

/// The reader's client context: keeps what the client's statistics say of the topic's
/// partitions until the reader takes it. Statistics are handed over during a poll, on the
/// polling thread.
struct ReaderContext {
    topic: String,
    /// Whether reading skips uncommitted transactions (the end is then the last stable offset).
    read_committed: bool,
    /// The partitions of the latest statistics, until taken.
    latest: Mutex<Option<Vec<BrokerOffsets>>>,
    /// Statistics handed over so far: a poll that handled them returned no record, although
    /// records may be waiting behind them.
    handled: AtomicU64,
}

impl ClientContext for ReaderContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        let parsed: Statistics = match serde_json::from_slice(statistics) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(topic = %self.topic, error = %e, "unreadable Kafka client statistics");
                return;
            }
        };
        let Some(topic) = parsed.topics.get(&self.topic) else {
            return;
        };
        let mut offsets: Vec<BrokerOffsets> = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0)
            .map(|p| BrokerOffsets {
                partition: p.partition,
                start: known(p.lo_offset),
                end: known(if self.read_committed {
                    p.ls_offset
                } else {
                    p.hi_offset
                }),
            })
            .collect();
        offsets.sort_by_key(|o| o.partition);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(offsets);
    }
}

impl ConsumerContext for ReaderContext {}

/// A consumer of explicitly assigned partitions of one topic. It never subscribes, so group
/// rebalancing never moves partitions; the group id is used only to commit offsets, which makes
/// progress and lag visible to Kafka tools.
pub struct PartitionReader {
    /// Shared only once the reader is dropped, with the thread that closes it.
    consumer: Arc<BaseConsumer<ReaderContext>>,
    topic: String,
}

/// Hands the consumer to a thread of its own to close. The client's drop closes a consumer
/// that has a group id (finishing the commits under way) and then polls in 100 ms steps until
/// the close is done, so the run's end waited 100 ms for the reader that commits the
/// checkpoint's offsets, and at times for a source's, although the close itself took a
/// millisecond or two. The reader never joins the group, so the close has nothing else to do:
/// whoever needs offsets committed before going on commits them with `wait` (the checkpoint's
/// last commit does). A process that exits first cuts the close short.
impl Drop for PartitionReader {
    fn drop(&mut self) {
        let consumer = Arc::clone(&self.consumer);
        // Where no thread can be started, the closure (and the consumer) is dropped here.
        let _ = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                // The reader's reference goes once its drop returns: the close must not run on
                // the reader's thread, so this one waits to hold the last.
                while Arc::strong_count(&consumer) > 1 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(consumer);
            });
    }
}

impl PartitionReader {
    /// A reader of `topic`, committing (when asked) under `group_id`. It reports no
    /// [`BrokerOffsets`]: a reader that is not polled could not take its client's statistics,
    /// which would pile up (`statistics.interval.ms` is 0 whatever the settings say).
    ///
    /// # Errors
    /// If the client cannot be configured.
    pub fn new(settings: &ClientSettings, topic: &str, group_id: &str) -> Result<Self, KafkaError> {
        Self::open(settings, topic, group_id, None)
    }

    /// A reader of `topic`, committing (when asked) under `group_id`, that learns its
    /// partitions' [`BrokerOffsets`] from the client's statistics every `interval` (unless the
    /// settings set `statistics.interval.ms`), taken with [`Self::broker_offsets`]. The client
    /// hands statistics over while it is polled, so the reader must be polled regularly.
    ///
    /// # Errors
    /// If the client cannot be configured.
    pub fn with_broker_offsets(
        settings: &ClientSettings,
        topic: &str,
        group_id: &str,
        interval: Duration,
    ) -> Result<Self, KafkaError> {
        Self::open(settings, topic, group_id, Some(interval))
    }

    fn open(
        settings: &ClientSettings,
        topic: &str,
        group_id: &str,
        statistics: Option<Duration>,
    ) -> Result<Self, KafkaError> {
        let mut config = settings.client_config()?;
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        // Prefetch defaults for a reader that is behind (reading a backlog, or a worker busy
        // elsewhere): librdkafka stops fetching a partition whose local queue is over its
        // thresholds and looks again only after `fetch.queue.backoff.ms`, 1 s by default, so a
        // worker that drained its queue sat idle for the rest of that second. Look again after
        // 10 ms, and keep at most 16 MiB queued per reader (librdkafka's default is 64 MiB),
        // which is refilled soon enough at that interval. Job properties override both.
        for (name, value) in [
            ("fetch.queue.backoff.ms", "10"),
            ("queued.max.messages.kbytes", "16384"),
        ] {
            if config.get(name).is_none() {
                config.set(name, value);
            }
        }
        match statistics {
            Some(interval) if config.get("statistics.interval.ms").is_none() => {
                config.set("statistics.interval.ms", interval.as_millis().to_string());
            }
            Some(_) => {}
            None => {
                config.set("statistics.interval.ms", "0");
            }
        }
        let context = ReaderContext {
            topic: topic.to_owned(),
            read_committed: config.get("isolation.level") != Some("read_uncommitted"),
            latest: Mutex::new(None),
            handled: AtomicU64::new(0),
        };
        let consumer: BaseConsumer<ReaderContext> = config
            .create_with_context(context)
            .map_err(KafkaError::client(format!("consumer of topic `{topic}`")))?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
        })
    }

    /// Calls `wake` (from a client thread) whenever records or events arrive while the reader
    /// has nothing left to poll, so a caller can sleep until then instead of polling on a timer.
    pub fn on_ready(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        // Only a dropped reader shares its consumer, so this is its one reference.
        if let Some(consumer) = Arc::get_mut(&mut self.consumer) {
            consumer.set_nonempty_callback(wake);
        }
    }

    /// The topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many partitions the topic has now.
    ///
    /// # Errors
    /// If the metadata cannot be fetched, or the topic does not exist.
    pub fn partition_count(&self, timeout: Duration) -> Result<i32, KafkaError> {
        let what = || format!("metadata of topic `{}`", self.topic);
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(KafkaError::client(what()))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| KafkaError::Setting {
                name: "topic".into(),
                reason: format!("topic `{}` is not on the brokers", self.topic),
            })?;
        if let Some(e) = topic.error() {
            return Err(KafkaError::Client {
                what: what(),
                source: RdError::MetadataFetch(e.into()),
            });
        }
        i32::try_from(topic.partitions().len()).map_err(|_| KafkaError::Setting {
            name: "topic".into(),
            reason: "too many partitions".into(),
        })
    }

    /// Starts reading `partitions`, each from the offset given (`None`: the earliest).
    ///
    /// # Errors
    /// If the assignment is refused.
    pub fn assign(&self, partitions: &[(i32, Option<i64>)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (p, offset) in partitions {
            let offset = offset.map_or(Offset::Beginning, Offset::Offset);
            list.add_partition_offset(&self.topic, *p, offset)
                .map_err(KafkaError::client("assign partitions"))?;
        }
        self.consumer
            .incremental_assign(&list)
            .map_err(KafkaError::client(format!(
                "assign partitions of `{}`",
                self.topic
            )))
    }

    /// Moves the reading position of an assigned partition that has been read from.
    ///
    /// # Errors
    /// If the client refuses.
    pub fn seek(&self, partition: i32, offset: i64) -> Result<(), KafkaError> {
        self.consumer
            .seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            )
            .map_err(KafkaError::client(format!(
                "seek `{}` partition {partition} to {offset}",
                self.topic
            )))
    }

    /// The offset after the last record of `partition` now (its high watermark).
    ///
    /// # Errors
    /// If the broker does not answer in time.
    pub fn high_watermark(&self, partition: i32, timeout: Duration) -> Result<i64, KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
            .map(|(_, high)| high)
            .map_err(KafkaError::client(format!(
                "watermarks of `{}` partition {partition}",
                self.topic
            )))
    }

    /// The first and the next offset of `partition` now (low and high watermarks).
    ///
    /// # Errors
    /// If the broker does not answer in time.
    pub fn watermarks(&self, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
            .map_err(KafkaError::client(format!(
                "watermarks of `{}` partition {partition}",
                self.topic
            )))
    }

    /// The offsets committed for `partitions` under the group (`None` where there is none).
    ///
    /// # Errors
    /// If the group coordinator does not answer in time.
    pub fn committed(
        &self,
        partitions: &[i32],
        timeout: Duration,
    ) -> Result<Vec<(i32, Option<i64>)>, KafkaError> {
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(&self.topic, *p);
        }
        let committed = self
            .consumer
            .committed_offsets(list, timeout)
            .map_err(KafkaError::client("fetch committed offsets"))?;
        Ok(partitions
            .iter()
            .map(|p| {
                let offset =
                    committed
                        .find_partition(&self.topic, *p)
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                (*p, offset)
            })
            .collect())
    }

    /// Commits `offsets` (the next offset to read, per partition) under the group: with `wait`,
    /// once the group coordinator has taken them (a reader's drop does not wait for commits still
    /// under way), otherwise without waiting for the answer.
    ///
    /// # Errors
    /// If the commit cannot be sent, or (with `wait`) the coordinator refuses it.
    pub fn commit(&self, offsets: &[(i32, i64)], wait: bool) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (p, o) in offsets {
            list.add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                .map_err(KafkaError::client("commit offsets"))?;
        }
        self.consumer
            .commit(
                &list,
                if wait {
                    CommitMode::Sync
                } else {
                    CommitMode::Async
                },
            )
            .map_err(KafkaError::client(format!(
                "commit offsets of `{}`",
                self.topic
            )))
    }

    /// What the client's statistics said of the topic's partitions since the last call (the
    /// latest, sorted by partition); `None` if no statistics came since, or the reader was made
    /// without [`Self::with_broker_offsets`].
    pub fn broker_offsets(&self) -> Option<Vec<BrokerOffsets>> {
        self.consumer
            .context()
            .latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The next event, without waiting; with the record's key if `keys`.
    pub fn poll(&self, keys: bool) -> Poll {
        let context = self.consumer.context();
        let mut handled = context.handled.load(Ordering::Relaxed);
        let mut next = self.consumer.poll(Duration::ZERO);
        // A poll that handed statistics over returns nothing, with records perhaps behind them.
        while next.is_none() {
            let now = context.handled.load(Ordering::Relaxed);
            if now == handled {
                break;
            }
            handled = now;
            next = self.consumer.poll(Duration::ZERO);
        }
        match next {
            None => Poll::Idle,
            Some(Ok(m)) => Poll::Record(Polled {
                partition: m.partition(),
                offset: m.offset(),
                key: if keys {
                    m.key().map(<[u8]>::to_vec)
                } else {
                    None
                },
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                timestamp_ms: m.timestamp().to_millis(),
            }),
            Some(Err(RdError::PartitionEOF(p))) => Poll::End(p),
            Some(Err(e)) => Poll::Warning(e.to_string()),
        }
    }
}
