//! A reader's broker offsets: where each partition begins and ends, learnt from the client's
//! statistics while the reader is polled, on the embedded broker.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vitalflow_connectors::kafka::reader::Poll;
use vitalflow_connectors::kafka::{
    BrokerOffsets, ClientSettings, EmbeddedBroker, OutMessage, PartitionReader, PropertyValue,
    TopicWriter,
};

/// Produces `count` records keyed `first..first + count` into `topic` and waits for them.
fn produce(bootstrap: &str, topic: &str, first: u64, count: u64) {
    let mut w = TopicWriter::new(
        &ClientSettings::new(bootstrap),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    for i in first..first + count {
        w.send(OutMessage {
            topic: topic.to_owned(),
            key: Some(format!("key-{i}").into_bytes()),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
            headers: Vec::new(),
        })
        .unwrap();
    }
    w.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(w.in_flight(), 0);
}

/// Polls `reader` until its statistics report `want` as every partition's end (with the log
/// start 0); the records polled meanwhile, by partition.
fn poll_until_ends(
    reader: &PartitionReader,
    want: &BTreeMap<i32, i64>,
) -> (Vec<BrokerOffsets>, BTreeMap<i32, Vec<i64>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut last = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the statistics never reported the ends {want:?}; the last: {last:?}"
        );
        match reader.poll(false) {
            Poll::Record(m) => records.entry(m.partition).or_default().push(m.offset),
            Poll::Idle => std::thread::sleep(Duration::from_millis(5)),
            Poll::End(_) | Poll::Warning(_) => {}
        }
        if let Some(offsets) = reader.broker_offsets() {
            let ends: BTreeMap<i32, i64> = offsets
                .iter()
                .filter_map(|o| o.end.map(|e| (o.partition, e)))
                .collect();
            if &ends == want {
                return (offsets, records);
            }
            last = Some(offsets);
        }
    }
}

/// A reader that starts at the partitions' ends reads nothing, yet learns the ends from its
/// statistics: the high watermarks the broker gives when asked. Records produced later move the
/// ends, and are polled, none lost behind the statistics events.
#[test]
fn a_polled_reader_learns_each_partitions_end_without_reading_it() {
    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap();
    broker.create_topic("offsets", 2).unwrap();
    produce(&bootstrap, "offsets", 0, 40);

    let settings = ClientSettings::new(&bootstrap);
    let reader = PartitionReader::with_broker_offsets(
        &settings,
        "offsets",
        "offsets-test",
        Duration::from_millis(100),
    )
    .unwrap();
    let asked = |r: &PartitionReader| -> BTreeMap<i32, i64> {
        (0..2)
            .map(|p| (p, r.high_watermark(p, Duration::from_secs(10)).unwrap()))
            .collect()
    };
    let ends = asked(&reader);
    assert_eq!(ends.values().sum::<i64>(), 40);
    assert!(
        ends.values().all(|e| *e > 0),
        "{ends:?}: a partition is empty"
    );
    let assign: Vec<(i32, Option<i64>)> = ends.iter().map(|(p, e)| (*p, Some(*e))).collect();
    reader.assign(&assign).unwrap();

    let (offsets, records) = poll_until_ends(&reader, &ends);
    assert!(
        records.is_empty(),
        "read from the end, yet polled {records:?}"
    );
    assert!(offsets.iter().all(|o| o.start == Some(0)), "{offsets:?}");
    // Taken: nothing new until the next statistics.
    assert_eq!(reader.broker_offsets(), None);

    produce(&bootstrap, "offsets", 40, 30);
    let moved = asked(&reader);
    assert_eq!(moved.values().sum::<i64>(), 70);
    let (_, records) = poll_until_ends(&reader, &moved);
    // Every new record is polled once its partition's end says it is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records = records;
    while records.values().map(Vec::len).sum::<usize>() < 30 {
        assert!(Instant::now() < deadline, "polled only {records:?}");
        if let Poll::Record(m) = reader.poll(false) {
            records.entry(m.partition).or_default().push(m.offset);
        }
    }
    for (p, offsets) in &records {
        let expected: Vec<i64> = (ends[p]..moved[p]).collect();
        assert_eq!(offsets, &expected, "partition {p}");
    }
}

/// A reader made without broker offsets has no statistics, whatever the settings ask (a reader
/// that is not polled would pile them up): it reports none, polled for ten times the interval
/// the settings give.
#[test]
fn a_reader_without_broker_offsets_reports_none() {
    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap();
    broker.create_topic("quiet", 1).unwrap();
    produce(&bootstrap, "quiet", 0, 5);
    let mut settings = ClientSettings::new(&bootstrap);
    settings.properties.insert(
        "statistics.interval.ms".into(),
        PropertyValue::Literal("50".into()),
    );
    let reader = PartitionReader::new(&settings, "quiet", "quiet-test").unwrap();
    reader.assign(&[(0, None)]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 5 {
        assert!(Instant::now() < deadline, "read {read} of 5");
        if let Poll::Record(_) = reader.poll(false) {
            read += 1;
        }
    }
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(matches!(reader.poll(false), Poll::Idle | Poll::End(_)));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(reader.broker_offsets(), None);

    // The same settings with broker offsets: they come.
    let reader = PartitionReader::with_broker_offsets(
        &settings,
        "quiet",
        "quiet-test",
        Duration::from_secs(3600),
    )
    .unwrap();
    reader.assign(&[(0, Some(5))]).unwrap();
    let (offsets, _) = poll_until_ends(&reader, &BTreeMap::from([(0, 5)]));
    assert_eq!(offsets[0].start, Some(0));
}
