//! The embedded Kafka broker of a run: started when a Kafka node uses it, with the job's topics,
//! filled from the job's `[embedded]` generator (at once, or as a live feed while the job runs).
//! Its records live only as long as the run, so a job on it never resumes from a checkpoint.
//!
//! The broker is part of vitalflow, so its failures are internal ([`Fault::Internal`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_connectors::kafka::embedded::{
    FeedTopics, FlatTopics, feed_context, feed_flat, feed_generator, sleep_until,
};
use vitalflow_connectors::kafka::{EMBEDDED, EmbeddedBroker, KafkaError};

use crate::job::config::EmbeddedConfig;
use crate::job::{Job, NodeKind};
use crate::nodes::generator::Feed;

use super::error::{Fault, RunFailure};

/// Whether a Kafka node's `brokers` names the embedded broker.
pub(crate) fn is_embedded(brokers: &str) -> bool {
    brokers.trim().is_empty() || brokers.trim() == EMBEDDED
}

/// What went wrong with the embedded broker.
fn failed(e: &KafkaError) -> RunFailure {
    RunFailure::new(Fault::Internal, e.to_string())
}

/// A live feed into the embedded broker: set while it produces; set to end it early; what it
/// produced, and how long it took.
struct Feeder {
    running: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(u64, Duration), KafkaError>>,
}

/// The embedded broker of a run, with its topics.
pub(super) struct Embedded {
    broker: EmbeddedBroker,
    created: BTreeSet<String>,
    feeder: Option<Feeder>,
    /// The run's graceful stop: a live feed produces no more once it is set.
    stop: Arc<AtomicBool>,
}

impl Embedded {
    /// Starts the embedded broker if a Kafka node of `job` uses it, creates the job's topics and
    /// fills them from the `[embedded]` generator, telling `say` what it did; `None` if no
    /// node uses it. A live feed ends early when `stop` (the run's graceful stop) is set.
    ///
    /// # Errors
    /// The broker cannot start, or its topics cannot be created or filled.
    pub(super) fn start(
        job: &Job,
        say: &dyn Fn(&str),
        stop: Arc<AtomicBool>,
    ) -> Result<Option<Self>, RunFailure> {
        let topics = topics(job);
        if topics.is_empty() {
            return Ok(None);
        }
        let mut embedded = Self {
            broker: EmbeddedBroker::start().map_err(|e| failed(&e))?,
            created: BTreeSet::new(),
            feeder: None,
            stop,
        };
        for (topic, partitions) in &topics {
            embedded.create(topic, *partitions)?;
        }
        say(&format!(
            "embedded Kafka broker at {} (topics: {})",
            embedded.bootstrap(),
            embedded
                .created
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
        match &job.embedded {
            Some(e) if *e.feed.get_ref() == Feed::Flat => embedded.fill_flat(e, say)?,
            Some(e) => embedded.fill_generated(e, say)?,
            None => {}
        }
        Ok(Some(embedded))
    }

    /// The broker's address.
    pub(super) fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// The live feed's flag (set while it produces), if there is one.
    pub(super) fn feeding(&self) -> Option<Arc<AtomicBool>> {
        self.feeder.as_ref().map(|f| Arc::clone(&f.running))
    }

    /// Ends the live feed and waits for it: what it produced and in how long, if there was one.
    /// Called once the workers have stopped, when nothing reads the feed any more: a feed that
    /// a source waited for has ended by then, one that goes on (the run was stopped or failed,
    /// or no source waits for it) produces no more.
    ///
    /// # Errors
    /// The feed failed or stopped.
    pub(super) fn finish_feed(&mut self) -> Result<Option<(u64, Duration)>, RunFailure> {
        let Some(feeder) = self.feeder.take() else {
            return Ok(None);
        };
        feeder.halt.store(true, Ordering::SeqCst);
        match feeder.thread.join() {
            Ok(Ok(fed)) => Ok(Some(fed)),
            Ok(Err(e)) => Err(RunFailure::new(
                Fault::Internal,
                format!("the embedded broker's live feed: {e}"),
            )),
            Err(_) => Err(RunFailure::new(
                Fault::Internal,
                "the embedded broker's live feed stopped",
            )),
        }
    }

    /// Creates a topic, once.
    fn create(&mut self, topic: &str, partitions: i32) -> Result<(), RunFailure> {
        if self.created.insert(topic.to_owned()) {
            self.broker
                .create_topic(topic, partitions)
                .map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    /// `feed = "flat"`: the patients' context, then flat readings, at once or (with a `rate`)
    /// as a live feed that starts after `start-after`.
    fn fill_flat(&mut self, e: &EmbeddedConfig, say: &dyn Fn(&str)) -> Result<(), RunFailure> {
        let live = e.rate > 0;
        let generator = flat_generator(e, live);
        let topics = FlatTopics {
            vitals: e.vitals_topic.clone(),
            context: e.context_topic.clone(),
        };
        for topic in [&topics.vitals, &topics.context] {
            self.create(topic, 4)?;
        }
        let n = feed_context(
            &self.bootstrap(),
            &generator,
            &topics,
            Duration::from_secs(60),
        )
        .map_err(|e| failed(&e))?;
        say(&format!(
            "embedded broker: {n} patient-context records in `{}`",
            topics.context
        ));
        if live {
            let delay = e.start_after.0;
            self.feeder = Some(self.live_feed(generator, topics, e.rate, delay)?);
            say(&format!(
                "embedded broker: a live feed of {} readings at {} a second into `{}` starts in {:?}",
                e.count, e.rate, e.vitals_topic, delay
            ));
        } else {
            let started = Instant::now();
            let n = feed_flat(
                &self.bootstrap(),
                &generator,
                &topics,
                0,
                Duration::from_secs(300),
                || false,
            )
            .map_err(|e| failed(&e))?;
            say(&format!(
                "embedded broker filled with {n} readings in {:.2} s",
                started.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    /// Starts producing `rate` readings a second after `delay`, on a thread of its own, until
    /// every reading is produced, the run's graceful stop is set, or the feed is halted.
    fn live_feed(
        &self,
        generator: Generator,
        topics: FlatTopics,
        rate: u64,
        delay: Duration,
    ) -> Result<Feeder, RunFailure> {
        let running = Arc::new(AtomicBool::new(true));
        let halt = Arc::new(AtomicBool::new(false));
        let (bootstrap, flag) = (self.bootstrap(), Arc::clone(&running));
        let (stop, halted) = (Arc::clone(&self.stop), Arc::clone(&halt));
        let thread = std::thread::Builder::new()
            .name("embedded-feed".to_owned())
            .spawn(move || {
                let ended = || stop.load(Ordering::SeqCst) || halted.load(Ordering::SeqCst);
                if sleep_until(Instant::now() + delay, &ended) {
                    flag.store(false, Ordering::SeqCst);
                    return Ok((0, Duration::ZERO));
                }
                let started = Instant::now();
                let r = feed_flat(
                    &bootstrap,
                    &generator,
                    &topics,
                    rate,
                    Duration::from_secs(60),
                    ended,
                );
                flag.store(false, Ordering::SeqCst);
                r.map(|n| (n, started.elapsed()))
            })
            .map_err(|e| {
                RunFailure::new(
                    Fault::Internal,
                    format!("the embedded broker's live feed cannot start: {e}"),
                )
            })?;
        Ok(Feeder {
            running,
            halt,
            thread,
        })
    }

    /// The default feed: generated patient and vital-sign events, at once.
    fn fill_generated(&mut self, e: &EmbeddedConfig, say: &dyn Fn(&str)) -> Result<(), RunFailure> {
        let generator = Generator::new(GeneratorConfig {
            seed: e.seed,
            patients: e.patients,
            count: e.count,
            interval_secs: e.interval_secs,
            ..Default::default()
        });
        for topic in [&e.patients_topic, &e.vitals_topic] {
            self.create(topic, 4)?;
        }
        let feed = FeedTopics {
            patients: e.patients_topic.clone(),
            vitals: e.vitals_topic.clone(),
        };
        let started = Instant::now();
        let n = feed_generator(
            &self.bootstrap(),
            &generator,
            &feed,
            Duration::from_secs(300),
            |_| {},
        )
        .map_err(|e| failed(&e))?;
        say(&format!(
            "embedded broker filled with {n} generated events in {:.2} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The topics of the job's Kafka nodes on the embedded broker, with their partitions.
fn topics(job: &Job) -> Vec<(String, i32)> {
    job.nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::Kafka(k) if is_embedded(k.brokers.get_ref()) => {
                Some((k.topic.get_ref().clone(), k.partitions))
            }
            NodeKind::KafkaSink(k) if is_embedded(k.brokers.get_ref()) => {
                Some((k.topic.get_ref().clone(), k.partitions))
            }
            _ => None,
        })
        .collect()
}

/// The generator of a flat feed; a live feed's context history ends now.
fn flat_generator(e: &EmbeddedConfig, live: bool) -> Generator {
    let span_ms = i64::try_from(
        e.count
            .div_ceil(e.patients.max(1))
            .saturating_mul(u64::from(e.interval_secs))
            .saturating_mul(1000),
    )
    .unwrap_or(0);
    Generator::new(GeneratorConfig {
        seed: e.seed,
        patients: e.patients,
        count: e.count,
        interval_secs: e.interval_secs,
        start: if live {
            Utc::now() - chrono::Duration::milliseconds(span_ms)
        } else {
            GeneratorConfig::default().start
        },
        ..Default::default()
    })
}
