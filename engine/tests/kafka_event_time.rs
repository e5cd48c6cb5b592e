//! Event time in the Kafka source, on the embedded broker (librdkafka's mock cluster, the real
//! Kafka protocol): watermark alignment (on two workers, the worker whose downstream is slow holds
//! the other back, so no worker reads more than `max-drift` of event time ahead of it), late
//! records (behind the emitted watermark: counted, and stamped with it), idleness (a silent
//! partition with records waiting in the broker still holds the watermark), and the partitions'
//! offsets shared with progress snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod lead;

use lead::Leads;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use timely::dataflow::operators::Inspect;
use vitalflow_connectors::kafka::{ClientSettings, EmbeddedBroker};
use vitalflow_engine::runtime::checkpoint::PositionLog;
use vitalflow_engine::runtime::kafka_source::{EventTime, KafkaSource, kafka};
use vitalflow_engine::runtime::metrics::{Failure, NodeCounters};
use vitalflow_engine::runtime::progress::{PartitionProgress, SourceOffsets};
use vitalflow_model::RawFormat;

/// Records per partition: partition `p`'s record `i` is an envelope at event time `i` seconds.
const PER_PARTITION: u64 = 600;
/// The event time (seconds, and dataflow timestamp) of each partition's first record.
const BASE: u64 = 1_767_225_600;
/// The drift allowed in the runs that have one (seconds: the granularity is one second).
const DRIFT: u64 = 10;

/// Fills a two-partition topic with the same event times on both partitions.
fn fill(broker: &EmbeddedBroker, topic: &str) {
    fill_with(broker, topic, PER_PARTITION);
}

/// Fills a two-partition topic with `per_partition` records on each, the same event times on
/// both partitions.
fn fill_with(broker: &EmbeddedBroker, topic: &str, per_partition: u64) {
    broker.create_topic(topic, 2).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for i in 0..per_partition {
        let at = chrono::DateTime::from_timestamp((BASE + i) as i64, 0).unwrap();
        let payload = format!(r#"{{"metadata":{{"timestamp":"{}"}}}}"#, at.to_rfc3339());
        for partition in 0..2 {
            let key = format!("{partition}-{i}");
            let mut record = BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(&key)
                .payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The source of envelopes on `topic`, event time from the envelope, one-second timestamps, no
/// lateness allowed, read to the end (once `feeding` is down, where there is one).
fn source(
    bootstrap: &str,
    topic: &str,
    max_drift: Option<u64>,
    idle_timeout: Duration,
    feeding: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> KafkaSource {
    KafkaSource {
        fault: vitalflow_engine::runtime::error::Fault::Internal,
        stop: Arc::default(),
        name: "vitals".into(),
        settings: ClientSettings::new(bootstrap),
        topic: topic.into(),
        group_id: format!("{topic}-test"),
        format: RawFormat::Envelope,
        header: None,
        time: EventTime::Envelope,
        granularity_ms: 1000,
        out_of_orderness: 0,
        idle_timeout,
        max_drift,
        stop_at_end: true,
        tombstones: false,
        resume: None,
        watermark: Arc::new(AtomicU64::new(0)),
        job_watermark: Arc::new(AtomicU64::new(0)),
        log: Arc::new(Mutex::new(PositionLog::resuming(None))),
        offsets: Arc::new(SourceOffsets::new(
            "vitals",
            topic,
            &format!("{topic}-test"),
        )),
        feeding,
    }
}

/// Reads the topic to its end on two workers, worker 1's downstream sleeping on every batch;
/// returns, for each record worker 0 emitted, its time and the latest time worker 1 had seen
/// by then (plus one; 0: none yet).
fn leads(bootstrap: &str, topic: &str, max_drift: Option<u64>) -> Vec<(u64, u64)> {
    let plan = Arc::new(source(
        bootstrap,
        topic,
        max_drift,
        Duration::from_secs(10),
        None,
    ));
    let failure = Failure::default();
    let leads = Arc::new(Leads::default());
    let (l, f) = (Arc::clone(&leads), failure.clone());
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let (l, plan, f) = (Arc::clone(&l), Arc::clone(&plan), f.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            kafka(scope, plan, Arc::new(NodeCounters::default()), true, f).inspect_core(
                move |event| {
                    if let Ok((stamp, records)) = event
                        && let Some(&time) = stamp.iter().max()
                    {
                        l.observe(index, time, records.len());
                    }
                },
            );
        });
    })
    .unwrap();
    assert!(!failure.failed(), "the source failed");
    leads.take()
}

#[test]
fn a_worker_reads_no_further_than_max_drift_ahead_of_the_slowest() {
    let broker = EmbeddedBroker::start().unwrap();
    fill(&broker, "aligned");
    let leads = leads(&broker.bootstrap(), "aligned", Some(DRIFT));
    assert_eq!(
        leads.len() as u64,
        PER_PARTITION,
        "worker 0 read its partition"
    );
    assert_eq!(leads.last().map(|l| l.0), Some(BASE + PER_PARTITION - 1));
    // Before worker 1 has read anything its progress is the start of time: worker 0 reads one
    // record (that one takes it past the drift) and waits.
    let before = leads.iter().filter(|l| l.1 == 0).count();
    assert!(
        before <= 1,
        "worker 0 emitted {before} records before worker 1 read one"
    );
    // Worker 1 was slow enough for the bound to matter: worker 0 got as far ahead as it allows.
    let lead = leads
        .iter()
        .filter(|l| l.1 > 0)
        .map(|&(time, seen)| time.saturating_sub(seen - 1))
        .max()
        .unwrap_or(0);
    assert!(
        lead >= DRIFT,
        "worker 0 never reached the drift (largest lead {lead}): worker 1 was not slow, the run \
         tells nothing"
    );
    for &(time, seen) in leads.iter().filter(|l| l.1 > 0) {
        // Worker 1 had seen time `seen - 1`; the record that takes worker 0 past the drift is
        // emitted, and worker 1's next record may be on its way.
        let allowed = seen.saturating_sub(1) + DRIFT + 2;
        assert!(
            time <= allowed,
            "worker 0 emitted time {time} when worker 1 had seen {}: {leads:?}",
            seen.saturating_sub(1)
        );
    }
}

#[test]
fn without_a_drift_limit_the_fast_worker_runs_ahead() {
    // The same run without alignment: what the bound prevents happens, so the test above can
    // tell.
    let broker = EmbeddedBroker::start().unwrap();
    fill(&broker, "unaligned");
    let leads = leads(&broker.bootstrap(), "unaligned", None);
    let lead = leads
        .iter()
        .map(|&(time, seen)| time.saturating_sub(seen.saturating_sub(1)))
        .max()
        .unwrap();
    assert!(lead > DRIFT * 10, "worker 0 led by at most {lead}");
}

/// Produces one envelope at event time `BASE + second` to partition 0 of `topic`.
fn produce_at(bootstrap: &str, topic: &str, second: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let at = chrono::DateTime::from_timestamp((BASE + second) as i64, 0).unwrap();
    let payload = format!(r#"{{"metadata":{{"timestamp":"{}"}}}}"#, at.to_rfc3339());
    producer
        .send(
            BaseRecord::<str, str>::to(topic)
                .partition(0)
                .key("k")
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_record_behind_the_emitted_watermark_is_counted_late_and_stamped_with_it() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("late", 1).unwrap();
    let bootstrap = broker.bootstrap();
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let counters = Arc::new(NodeCounters::default());
    let plan = Arc::new(source(
        &bootstrap,
        "late",
        Some(DRIFT),
        Duration::from_secs(60),
        Some(Arc::clone(&feeding)),
    ));
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let (s, c, seen) = (
        Arc::clone(&stamps),
        Arc::clone(&counters),
        Arc::clone(&stamps),
    );
    produce_at(&bootstrap, "late", 10);
    produce_at(&bootstrap, "late", 20);
    timely::execute_directly(move |worker| {
        let probe = timely::dataflow::ProbeHandle::new();
        let p = probe.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            use timely::dataflow::operators::Probe as _;
            kafka(scope, plan, c, true, Failure::default())
                .inspect_core(move |event| {
                    if let Ok((stamp, records)) = event
                        && let Some(&time) = stamp.iter().max()
                    {
                        s.lock()
                            .unwrap()
                            .extend(records.iter().map(|_| time - BASE));
                    }
                })
                .probe_with(&p);
        });
        // Until the watermark has passed the first two records (the partition's newest is at
        // 20 s, with no lateness allowed).
        let started = std::time::Instant::now();
        while probe.less_than(&(BASE + 20)) {
            assert!(started.elapsed() < Duration::from_secs(30), "no watermark");
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        // A record from before the watermark.
        produce_at(&bootstrap, "late", 5);
        while seen.lock().unwrap().len() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the late record never came"
            );
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        feeding.store(false, Ordering::SeqCst);
    });
    assert_eq!(counters.late.load(Ordering::Relaxed), 1);
    assert_eq!(*stamps.lock().unwrap(), vec![10, 20, 20]);
}

#[test]
fn a_partition_with_records_waiting_is_not_idle_however_long_it_is_silent() {
    // One worker reads two partitions with the same event times, its downstream slow (a
    // millisecond per hundred records). The client hands out one partition's fetch (about a
    // megabyte, some 15,000 records) before the other's, so the other goes far longer than the
    // 20 ms idle timeout without a record. Counted idle, it would let the watermark past its own
    // backlog, and its records would be late.
    let per_partition = 20_000;
    let broker = EmbeddedBroker::start().unwrap();
    fill_with(&broker, "busy", per_partition);
    let counters = Arc::new(NodeCounters::default());
    let plan = Arc::new(source(
        &broker.bootstrap(),
        "busy",
        None,
        Duration::from_millis(20),
        None,
    ));
    let (c, read) = (Arc::clone(&counters), Arc::new(AtomicU64::new(0)));
    let r = Arc::clone(&read);
    // Per partition: records seen, when its last record came, and its longest silence while it
    // still had records waiting.
    let silences = Arc::new(Mutex::new([(0u64, None, Duration::ZERO); 2]));
    let s = Arc::clone(&silences);
    timely::execute_directly(move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            kafka(scope, plan, c, true, Failure::default()).inspect_core(move |event| {
                if let Ok((_, records)) = event {
                    r.fetch_add(records.len() as u64, Ordering::SeqCst);
                    let now = std::time::Instant::now();
                    let mut s = s.lock().unwrap();
                    for rec in records {
                        let p = usize::from(rec.location.starts_with("busy/1@"));
                        let (seen, last, longest) = &mut s[p];
                        if let Some(last) = *last {
                            *longest = (*longest).max(now - last);
                        }
                        *seen += 1;
                        *last = Some(now);
                    }
                    std::thread::sleep(Duration::from_micros(10 * records.len() as u64));
                }
            });
        });
    });
    assert_eq!(read.load(Ordering::SeqCst), 2 * per_partition);
    // The situation the test is for occurred: a partition went silent for longer than the idle
    // timeout with records still to come.
    let silences = *silences.lock().unwrap();
    assert!(
        silences
            .iter()
            .any(|&(_, _, longest)| longest > Duration::from_millis(20)),
        "no partition was silent for over 20 ms, the run tells nothing: {silences:?}"
    );
    assert_eq!(counters.late.load(Ordering::Relaxed), 0);
}

/// A source that never stops at the end shares where it is in each partition and where the
/// partition ends, both as they change: while its downstream holds it back (20 µs a record),
/// its client's statistics (every 50 ms here) say where the partitions end, beyond what it has
/// read; once it has read everything, each partition's position is its end and its lag 0.
#[test]
fn a_sources_positions_and_ends_are_shared_while_it_reads() {
    let per_partition = 20_000;
    let broker = EmbeddedBroker::start().unwrap();
    fill_with(&broker, "offsets", per_partition);
    let mut plan = source(
        &broker.bootstrap(),
        "offsets",
        None,
        Duration::from_secs(10),
        None,
    );
    plan.stop_at_end = false;
    plan.settings.properties.insert(
        "statistics.interval.ms".into(),
        vitalflow_connectors::kafka::PropertyValue::Literal("50".into()),
    );
    let (offsets, stop) = (Arc::clone(&plan.offsets), Arc::clone(&plan.stop));
    let plan = Arc::new(plan);
    let seen = Arc::new(Mutex::new(Vec::<Vec<PartitionProgress>>::new()));
    let (o, s) = (Arc::clone(&offsets), Arc::clone(&seen));
    let read = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&read);
    timely::execute_directly(move |worker| {
        worker.dataflow::<u64, _, _>(|scope| {
            let counters = Arc::new(NodeCounters::default());
            kafka(scope, plan, counters, true, Failure::default()).inspect_core(move |event| {
                if let Ok((_, records)) = event {
                    s.lock().unwrap().push(o.progress());
                    let total = r.fetch_add(records.len() as u64, Ordering::SeqCst);
                    if total + records.len() as u64 == 2 * per_partition {
                        stop.store(true, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_micros(20 * records.len() as u64));
                }
            });
        });
    });
    assert_eq!(read.load(Ordering::SeqCst), 2 * per_partition);
    let end = i64::try_from(per_partition).unwrap();
    let seen = seen.lock().unwrap();
    // Positions only move on, and never past the end.
    for (a, b) in seen.iter().zip(seen.iter().skip(1)) {
        for (pa, pb) in a.iter().zip(b) {
            assert!(pa.position <= pb.position, "{pa:?} then {pb:?}");
        }
    }
    assert!(
        seen.iter()
            .flatten()
            .all(|p| p.position.is_none_or(|x| x <= end)),
        "{seen:?}"
    );
    // The ends came from the client's statistics while the source was behind.
    let behind = seen
        .iter()
        .flatten()
        .filter(|p| p.end == Some(end) && p.position.is_some_and(|x| x < end))
        .count();
    assert!(
        behind > 0,
        "never seen behind a known end: {:?}",
        seen.last()
    );
    for p in offsets.progress() {
        assert_eq!(
            (p.position, p.end, p.lag()),
            (Some(end), Some(end), Some(0)),
            "{p:?}"
        );
    }
    assert_eq!(offsets.progress().len(), 2);
}
