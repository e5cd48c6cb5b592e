//! The `alert` operator on timely: readings are prepared where they are (patient, event time,
//! observation id and the NEWS2 parameters evaluated; failures dead-lettered), routed by
//! patient, and fed to one [`Monitor`] per worker. The alert events it causes are rendered
//! without PHI (pseudonym, date-shifted event times) and timed: emission minus the reading's
//! arrival, and minus its event time, into per-rule histograms the run summary prints (the
//! progress snapshots carry the arrival histograms, which the metrics endpoint serves).
//!
//! Readings stamped with event time (Kafka) are taken as they arrive: an alert leaves as soon
//! as its reading is processed. Readings of batch-numbered sources (files, the generator) are
//! taken once their batch is complete, ordered by event time and source position, so the
//! alerts do not depend on the number of workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{Capability, Concat};
use timely::progress::frontier::MutableAntichain;
use vitalflow_model::alert::{AlertEvent, AlertPayload};
use vitalflow_model::envelope::{ENVELOPE_VERSION, EventMetadata};
use vitalflow_model::ids::uuid_from;
use vitalflow_model::notification::{ClinicalNotification, IdentifiedPatient};
use vitalflow_model::row::{Row, Schema, Value};
use vitalflow_model::{DeadLetter, Time, now_us};
use vitalflow_operators::alert::critical::CriticalLimit;
use vitalflow_operators::alert::latest::{Absence, Reading};
use vitalflow_operators::alert::lifecycle::Transition;
use vitalflow_operators::alert::monitor::{
    Fired, Monitor, MonitorSpec, ObservationRef, Observed, level_name, level_of, parameter_name,
};
use vitalflow_operators::alert::news2::{Acvpu, Parameter, Spo2Scale};
use vitalflow_operators::anonymize::{Anonymizer, identifier_text};
use vitalflow_operators::expression::Compiled;

use super::kafka_source::location_of;
use super::metrics::NodeCounters;
use super::ops::{StageLogic, VecStream, fork, prepare_stage, split_results};
use super::rows::dead_row;

/// Where an observation's id comes from.
#[derive(Clone, Debug)]
pub enum ObservationId {
    /// An expression of the job file.
    Expr(Arc<Compiled>),
    /// The Kafka record: `topic/partition@offset`.
    Kafka(String),
    /// The record's position in a file or generator source: `source#n`.
    Position(String),
}

impl ObservationId {
    /// The id of an observation the monitor kept as `r`, as alert events name it.
    fn render(&self, r: &ObservationRef) -> String {
        match (r, self) {
            (ObservationRef::Text(s), _) => s.to_string(),
            (ObservationRef::Position(n), Self::Kafka(topic)) => location_of(topic, *n),
            (ObservationRef::Position(n), Self::Position(source)) => format!("{source}#{n}"),
            (ObservationRef::Position(n), Self::Expr(_)) => n.to_string(),
        }
    }
}

/// An `alert` node resolved for running.
pub struct AlertPlan {
    /// The node.
    pub name: String,
    /// The job (event source of the alert events).
    pub job: String,
    /// NEWS2, rules, lifecycle.
    pub spec: Arc<MonitorSpec>,
    /// The patient expression.
    pub patient: Arc<Compiled>,
    /// The input's event-time field.
    pub time: usize,
    /// The ward expression.
    pub ward: Option<Arc<Compiled>>,
    /// The observation id.
    pub id: ObservationId,
    /// The NEWS2 parameters.
    pub params: Vec<(Parameter, Arc<Compiled>)>,
    /// Whether SpO2 scale 2 applies.
    pub scale2: Option<Arc<Compiled>>,
    /// Pseudonyms and dates, as the `anonymize` stage makes them with the same key and policy.
    pub anonymizer: Arc<Anonymizer>,
    /// Take readings in event-time order per completed batch (batch-numbered sources).
    pub ordered: bool,
    /// The identified notifications' patient fields, when the `notify` port is read.
    pub notify: Option<NotifyPlan>,
    /// The input rows' schema (dead letters).
    pub schema: Arc<Schema>,
    /// Alert counts and latencies, shared by the workers of this process.
    pub latency: Arc<AlertLatency>,
    /// By rule index: the critical laboratory limit the rule checks, if it is one.
    pub critical: Vec<Option<CriticalRule>>,
}

/// A rule made of a critical laboratory limit: where the result's value and unit are in the
/// rows, for its events.
#[derive(Clone, Debug)]
pub struct CriticalRule {
    /// The limit.
    pub limit: CriticalLimit,
    /// The field of the value.
    pub value: usize,
    /// The field of the unit.
    pub unit: usize,
}

/// Event type of a critical laboratory value detected.
pub const CRITICAL_VALUE_DETECTED: &str = "critical_value_detected";

/// What the identified notifications show of the patient: expressions over the rows (the
/// MRN defaults to the patient expression's value).
#[derive(Clone, Debug, Default)]
pub struct NotifyPlan {
    /// The medical record number.
    pub mrn: Option<Arc<Compiled>>,
    /// Family name.
    pub family_name: Option<Arc<Compiled>>,
    /// Given name.
    pub given_name: Option<Arc<Compiled>>,
    /// Room.
    pub room: Option<Arc<Compiled>>,
    /// Bed.
    pub bed: Option<Arc<Compiled>>,
}

impl NotifyPlan {
    /// The identified notification of alert event `e`, raised by `prepared` (`raised_at`:
    /// the alert's raise time, not shifted).
    fn notification(
        &self,
        e: &AlertEvent,
        prepared: &Prepared,
        raised_at: i64,
    ) -> ClinicalNotification {
        let values = &prepared.row.values;
        let field = |c: &Option<Arc<Compiled>>| {
            c.as_ref()
                .and_then(|c| c.eval(values).ok())
                .and_then(|v| text(&v))
        };
        let obs = &prepared.observed;
        let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let a = &e.payload;
        ClinicalNotification {
            notification_id: e.metadata.event_id.clone(),
            alert_id: a.alert_id.clone(),
            event_type: e.metadata.event_type.clone(),
            event_source: e.metadata.event_source.clone(),
            rule: a.rule.clone(),
            level: a.level.clone(),
            previous_level: a.previous_level.clone(),
            score: a.score,
            sub_scores: a.sub_scores.clone(),
            condition: a.condition.clone(),
            observations: a.observations.clone(),
            patient_pseudonym: a.patient.clone(),
            patient: IdentifiedPatient {
                mrn: field(&self.mrn).unwrap_or_else(|| obs.patient.clone()),
                family_name: field(&self.family_name),
                given_name: field(&self.given_name),
                ward: obs.ward.clone(),
                room: field(&self.room),
                bed: field(&self.bed),
            },
            event_time: time(obs.time),
            raised_at: time(raised_at),
            emitted_at: a.emitted_at,
        }
    }
}

/// An alert event, with its identified notification when the node makes them.
type Raised = (AlertEvent, Option<Box<ClinicalNotification>>);

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Values measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One rule's alert events and latencies over a run.
#[derive(Debug, Clone)]
pub struct RuleLatency {
    /// Alert events, by event type.
    pub events: BTreeMap<String, u64>,
    /// Emission minus arrival (µs).
    pub arrival: Histogram<u64>,
    /// Emission minus event time (ms; 0 when the event time is in the future).
    pub event: Histogram<u64>,
}

impl RuleLatency {
    fn new() -> Self {
        // Auto-resizing histograms, 3 significant digits.
        let histogram = || {
            let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
            h.auto(true);
            h
        };
        Self {
            events: BTreeMap::new(),
            arrival: histogram(),
            event: histogram(),
        }
    }

    /// Emission minus arrival, in ms (`None` when no arrival was known).
    #[must_use]
    pub fn arrival_ms(&self) -> Option<Percentiles> {
        percentiles(&self.arrival, 1000.0)
    }

    /// Emission minus event time, in ms.
    #[must_use]
    pub fn event_ms(&self) -> Option<Percentiles> {
        percentiles(&self.event, 1.0)
    }
}

/// `Histogram::new(3)` cannot fail (3 significant digits is in range); this is its fallback.
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 2, 1).unwrap_or_else(|_| std::process::abort())
}

/// p50, p99, p99.9 and max of a histogram, in milliseconds (`per_ms` units a millisecond);
/// `None` when it is empty.
#[must_use]
pub fn percentiles(h: &Histogram<u64>, per_ms: f64) -> Option<Percentiles> {
    (!h.is_empty()).then(|| Percentiles {
        count: h.len(),
        p50: h.value_at_quantile(0.5) as f64 / per_ms,
        p99: h.value_at_quantile(0.99) as f64 / per_ms,
        p999: h.value_at_quantile(0.999) as f64 / per_ms,
        max: h.max() as f64 / per_ms,
    })
}

/// Alert counts and latencies of one `alert` node, per rule (`news2` and the rules' names), and
/// the readings scored without their context.
#[derive(Debug, Default)]
pub struct AlertLatency {
    rules: Mutex<BTreeMap<String, RuleLatency>>,
    /// Readings whose mapped `oxygen` was null.
    without_oxygen: AtomicU64,
    /// Readings whose mapped `scale2` was null.
    without_scale: AtomicU64,
}

impl AlertLatency {
    /// The readings whose air/oxygen or SpO2 scale was mapped but null (no context), by the
    /// name alerts list them under; only those that occurred.
    #[must_use]
    pub fn missing_context(&self) -> Vec<(&'static str, u64)> {
        [
            ("air-or-oxygen", &self.without_oxygen),
            ("spo2-scale", &self.without_scale),
        ]
        .into_iter()
        .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// The alert events so far, per rule and event type, and, taken at the same moment,
    /// emission minus the reading's arrival (µs) of those whose reading's arrival is known, over
    /// all rules.
    #[must_use]
    pub fn progress(&self) -> (Vec<(String, String, u64)>, Histogram<u64>) {
        let rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let events = rules
            .iter()
            .flat_map(|(rule, r)| {
                r.events
                    .iter()
                    .map(move |(event, n)| (rule.clone(), event.clone(), *n))
            })
            .collect();
        let mut arrival = RuleLatency::new().arrival;
        for r in rules.values() {
            // Auto-resizing: adding cannot fail for want of range.
            let _ = arrival.add(&r.arrival);
        }
        (events, arrival)
    }

    /// A copy of every rule's figures.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<String, RuleLatency> {
        self.rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, timed: &[(String, String, Option<u64>, u64)]) {
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (rule, event_type, arrival_us, event_ms) in timed {
            let r = rules.entry(rule.clone()).or_insert_with(RuleLatency::new);
            *r.events.entry(event_type.clone()).or_default() += 1;
            if let Some(us) = arrival_us {
                let _ = r.arrival.record((*us).max(1));
            }
            let _ = r.event.record((*event_ms).max(1));
        }
    }
}

/// A reading ready for the monitor: what it observed, its row, and when it arrived.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Prepared {
    pub(crate) observed: Observed,
    pub(crate) row: Row,
    /// `scale2` is mapped but was null: the reading is scored on scale 1, and says so.
    pub(crate) scale_missing: bool,
}

struct Prepare(Arc<AlertPlan>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Str(s) => Some(s.to_string()),
        other => Some(match other.to_json() {
            serde_json::Value::String(s) => s,
            j => j.to_string(),
        }),
    }
}

impl Prepare {
    /// The reading, and whether its mapped `scale2` was null.
    fn observed(&self, row: &Row) -> Result<(Observed, bool), String> {
        let p = &self.0;
        let name = &p.name;
        let Some(Value::Timestamp(time)) = row.values.get(p.time) else {
            let field = p.schema.fields.get(p.time).map_or("?", |f| f.name.as_str());
            return Err(format!("`{name}`: event time `{field}` is null"));
        };
        let eval = |c: &Compiled, what: &str| {
            c.eval(&row.values)
                .map_err(|e| format!("`{name}.{what}`: {e}"))
        };
        // The text `anonymize` hashes, so the pseudonyms are the same.
        let patient = identifier_text(&eval(&p.patient, "patient")?)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| format!("`{name}.patient` is null or empty"))?;
        let ward = match &p.ward {
            Some(w) => text(&eval(w, "ward")?),
            None => None,
        };
        // A position is rendered only if an alert names the observation.
        let id = match &p.id {
            ObservationId::Expr(e) => ObservationRef::Text(
                text(&eval(e, "observation-id")?)
                    .ok_or_else(|| format!("`{name}.observation-id` is null"))?
                    .into(),
            ),
            ObservationId::Kafka(_) | ObservationId::Position(_) => {
                ObservationRef::Position(row.sequence)
            }
        };
        let mut readings = Vec::with_capacity(p.params.len());
        let mut oxygen_missing = false;
        for (param, c) in &p.params {
            // Named only when something fails: no text is made per reading.
            let what = || format!("`{name}.news2.{}`", parameter_name(*param));
            let value = c
                .eval(&row.values)
                .map_err(|e| format!("{}: {e}", what()))?;
            let reading = match (value, param) {
                (Value::Null, Parameter::AirOrOxygen) => {
                    oxygen_missing = true;
                    continue;
                }
                (Value::Null, _) => continue,
                (Value::Bool(b), Parameter::AirOrOxygen) => Reading::Oxygen(b),
                (Value::Str(s), Parameter::Consciousness) => {
                    Reading::Consciousness(Acvpu::parse(&s).ok_or_else(|| {
                        format!("{}: not one of A, C, V, P, U (or the words)", what())
                    })?)
                }
                (Value::Int(i), _) => Reading::Number(i as f64),
                (Value::Float(f), _) if f.is_finite() => Reading::Number(f),
                _ => return Err(format!("{}: not a usable value", what())),
            };
            readings.push((*param, reading));
        }
        // A scale that is not known is scored as scale 1, the chart's default, and reported.
        let (scale, scale_missing) = match &p.scale2 {
            Some(c) => match eval(c, "news2.scale2")? {
                Value::Bool(true) => (Spo2Scale::Two, false),
                Value::Bool(false) => (Spo2Scale::One, false),
                _ => (Spo2Scale::One, true),
            },
            None => (Spo2Scale::One, false),
        };
        // Counted only for readings prepared for the monitor (not those dead-lettered here).
        if oxygen_missing {
            p.latency.without_oxygen.fetch_add(1, Ordering::Relaxed);
        }
        if scale_missing {
            p.latency.without_scale.fetch_add(1, Ordering::Relaxed);
        }
        let observed = Observed {
            patient,
            time: *time,
            id,
            ward,
            scale,
            readings,
        };
        Ok((observed, scale_missing))
    }
}

impl StageLogic<Row, Prepared> for Prepare {
    fn process(&mut self, row: Row, out: &mut Vec<Prepared>, dead: &mut Vec<DeadLetter>) {
        match self.observed(&row) {
            Ok((observed, scale_missing)) => out.push(Prepared {
                observed,
                row,
                scale_missing,
            }),
            Err(reason) => dead.push(dead_row(&self.0.name, &self.0.schema, &row, reason)),
        }
    }
}

/// Renders the alert events of one reading, without PHI.
struct Render<'a> {
    plan: &'a AlertPlan,
    /// Cache of the last patient's pseudonym and date shift.
    last: Option<(String, String, Option<i64>)>,
}

impl Render<'_> {
    fn identity(&mut self, patient: &str) -> (String, Option<i64>) {
        if let Some((p, pseudonym, shift)) = &self.last
            && p == patient
        {
            return (pseudonym.clone(), *shift);
        }
        let pseudonym = self.plan.anonymizer.pseudonym(patient);
        let shift = self.plan.anonymizer.date_shift(patient);
        self.last = Some((patient.to_owned(), pseudonym.clone(), shift));
        (pseudonym, shift)
    }

    /// An event time as `anonymize` makes it (one out of range becomes the epoch).
    fn date(&self, ms: i64, shift: Option<i64>) -> DateTime<Utc> {
        let at = self.plan.anonymizer.instant(ms, shift).unwrap_or_default();
        DateTime::from_timestamp_millis(at).unwrap_or_default()
    }

    fn event(&mut self, prepared: &Prepared, fired: Fired) -> AlertEvent {
        let (obs, arrival_us, plan) = (&prepared.observed, prepared.row.arrival_us, self.plan);
        let (pseudonym, days) = self.identity(&obs.patient);
        let rule = fired
            .rule
            .and_then(|i| plan.spec.rules.get(i))
            .map_or("news2", |r| r.name.as_str());
        let change = fired.change;
        let raised_at = self.date(change.raised_at, days);
        let event_time = self.date(obs.time, days);
        let alert_id = uuid_from(&[
            plan.job.as_bytes(),
            plan.name.as_bytes(),
            rule.as_bytes(),
            pseudonym.as_bytes(),
            &raised_at.timestamp_millis().to_le_bytes(),
        ]);
        let critical = fired
            .rule
            .and_then(|i| plan.critical.get(i))
            .and_then(Option::as_ref);
        let event_type = match (critical, change.transition) {
            (Some(_), Transition::Raised | Transition::Escalated | Transition::Repeated) => {
                CRITICAL_VALUE_DETECTED
            }
            _ => change.transition.event_type(),
        };
        let event_id = uuid_from(&[
            alert_id.as_bytes(),
            event_type.as_bytes(),
            &event_time.timestamp_millis().to_le_bytes(),
        ]);
        let mut sub_scores = BTreeMap::new();
        let (mut score, mut spo2_scale, mut missing, mut stale) = (None, None, vec![], vec![]);
        if let Some((news2, absent)) = &fired.news2 {
            score = Some(news2.total);
            spo2_scale = Some(if obs.scale == Spo2Scale::Two { 2 } else { 1 });
            for (p, s) in Parameter::ALL.iter().zip(&news2.sub) {
                if let Some(s) = s {
                    sub_scores.insert(parameter_name(*p).to_owned(), *s);
                }
            }
            for (p, why) in absent {
                let list = if *why == Absence::Stale {
                    &mut stale
                } else {
                    &mut missing
                };
                list.push(parameter_name(*p).to_owned());
            }
            if prepared.scale_missing {
                missing.push("spo2-scale".to_owned());
            }
        }
        let emitted_us = now_us();
        let emitted_at = DateTime::from_timestamp_micros(i64::try_from(emitted_us).unwrap_or(0))
            .unwrap_or_default();
        let mut lab = LabFields::default();
        if let Some(c) = critical {
            let value = match prepared.row.values.get(c.value) {
                Some(Value::Float(v)) => Some(*v),
                Some(Value::Int(v)) => Some(*v as f64),
                _ => None,
            };
            lab.parameter = Some(c.limit.name.clone());
            lab.value = value;
            lab.unit = prepared.row.values.get(c.unit).and_then(text);
            if change.transition != Transition::Resolved {
                let crossed = value.and_then(|v| c.limit.crossed(v));
                lab.threshold = crossed.map(|(_, t)| t);
                lab.direction = crossed.map(|(d, _)| d.as_str().to_owned());
                lab.severity = Some("critical".to_owned());
                lab.detected_at = Some(emitted_at);
            }
        }
        let observations: Vec<String> = fired
            .observations
            .iter()
            .map(|o| plan.id.render(o))
            .collect();
        AlertEvent {
            metadata: EventMetadata {
                event_id,
                event_type: event_type.to_owned(),
                event_source: format!("vitalflow/{}/{}", plan.job, plan.name),
                correlation_id: alert_id.clone(),
                causation_id: observations.first().cloned(),
                timestamp: emitted_at,
                version: ENVELOPE_VERSION.to_owned(),
                trace_id: None,
            },
            payload: AlertPayload {
                alert_id,
                rule: rule.to_owned(),
                patient: pseudonym,
                ward: obs.ward.clone(),
                level: level_name(level_of(change.to)).to_owned(),
                previous_level: level_name(level_of(change.from)).to_owned(),
                score,
                sub_scores,
                spo2_scale,
                missing,
                stale,
                condition: fired
                    .rule
                    .and_then(|i| plan.spec.rules.get(i))
                    .map(|r| r.condition.clone()),
                observations,
                event_time,
                raised_at,
                emitted_at,
                latency_ms: (arrival_us > 0)
                    .then(|| emitted_us.saturating_sub(arrival_us) as f64 / 1000.0),
                parameter: lab.parameter,
                value: lab.value,
                unit: lab.unit,
                threshold: lab.threshold,
                direction: lab.direction,
                severity: lab.severity,
                detected_at: lab.detected_at,
            },
        }
    }
}

/// The fields of a critical laboratory value's event.
#[derive(Default)]
struct LabFields {
    parameter: Option<String>,
    value: Option<f64>,
    unit: Option<String>,
    threshold: Option<f64>,
    direction: Option<String>,
    severity: Option<String>,
    detected_at: Option<DateTime<Utc>>,
}

/// Builds an `alert` node: (alert events, dead letters).
pub fn alerts<'s>(
    input: VecStream<'s, Row>,
    plan: Arc<AlertPlan>,
    counters: Arc<NodeCounters>,
) -> (
    VecStream<'s, AlertEvent>,
    VecStream<'s, ClinicalNotification>,
    VecStream<'s, DeadLetter>,
) {
    let (prepared, dead, _) = prepare_stage(
        input,
        Pipeline,
        &plan.name,
        Prepare(Arc::clone(&plan)),
        Arc::clone(&counters),
    );
    let route = Exchange::new(|p: &Prepared| Value::str(&p.observed.patient).route_hash());
    let name = plan.name.clone();
    let results = prepared
        .unary_frontier::<CapacityContainerBuilder<Vec<Result<Raised, DeadLetter>>>, _, _, _>(
            route,
            &name,
            move |_cap, _info| {
                let mut op = AlertOperator {
                    monitor: Monitor::new(Arc::clone(&plan.spec)),
                    plan,
                    counters,
                    stash: BTreeMap::new(),
                };
                move |(input, frontier), output| {
                    let mut now = Vec::new();
                    input.for_each_stamp(|cap, data| {
                        let cap = cap.retain_least(output.output_index());
                        op.arrive(cap, data, &mut now);
                    });
                    op.complete(frontier, &mut now);
                    op.observe(now, output);
                }
            },
        );
    let (raised, rejected) = split_results(results);
    let (events, notices) = fork("Notify", raised, |batch, events, notices| {
        for (e, n) in batch.drain(..) {
            events.push(e);
            if let Some(n) = n {
                notices.push(*n);
            }
        }
    });
    (events, notices, dead.concat(rejected))
}

/// The batches of readings that came at a time, with the time's capability.
type Readings = (Capability<Time>, Vec<Vec<Prepared>>);

/// The `alert` operator's output handle in an activation.
type AlertOutput<'a> =
    OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<Result<Raised, DeadLetter>>>>;

/// The `alert` operator's state on one worker: its monitor, and (`ordered`) the readings of
/// the times not yet complete.
struct AlertOperator {
    /// The node.
    plan: Arc<AlertPlan>,
    /// The node's counters.
    counters: Arc<NodeCounters>,
    /// The patients' state.
    monitor: Monitor,
    /// The batches of each incomplete time as they came: appending them into one vector, and
    /// then sorting that, moved every reading twice.
    stash: BTreeMap<Time, Readings>,
}

impl AlertOperator {
    /// Readings that arrived (with their capability, `None` if the time is not held): for
    /// the monitor `now`, or (`ordered`) kept until their time is complete.
    fn arrive<'a>(
        &mut self,
        cap: Option<Capability<Time>>,
        data: impl Iterator<Item = &'a mut Vec<Prepared>>,
        now: &mut Vec<Readings>,
    ) {
        let Some(cap) = cap else { return };
        let batches = data.map(std::mem::take).filter(|b| !b.is_empty());
        if self.plan.ordered {
            self.stash
                .entry(*cap.time())
                .or_insert_with(|| (cap, Vec::new()))
                .1
                .extend(batches);
        } else {
            now.push((cap, batches.collect()));
        }
    }

    /// `ordered`: the readings of the times the input `frontier` has passed, for the monitor
    /// `now`.
    fn complete(&mut self, frontier: &MutableAntichain<Time>, now: &mut Vec<Readings>) {
        if !self.plan.ordered {
            return;
        }
        let done: Vec<Time> = self
            .stash
            .keys()
            .copied()
            .filter(|t| !frontier.less_equal(t))
            .collect();
        for t in done {
            if let Some(entry) = self.stash.remove(&t) {
                now.push(entry);
            }
        }
    }

    /// The monitor takes the readings `now`, each time's in order; their alert events (and a
    /// dead letter for each reading it refused) go out at the readings' time, and are counted.
    fn observe(&mut self, now: Vec<Readings>, output: &mut AlertOutput<'_>) {
        let mut render = Render {
            plan: &self.plan,
            last: None,
        };
        for (cap, batches) in now {
            let out = observe_readings(&mut self.monitor, &mut render, &batches);
            // The node's output is its alert events; a reading the monitor refused is
            // rejected here.
            let failed = out.iter().filter(|r| r.is_err()).count() as u64;
            self.counters.add_out(out.len() as u64 - failed);
            self.counters.add_rejected(failed);
            self.counters.add_dead_letters(failed);
            output.session(&cap).give_iterator(out.into_iter());
        }
    }
}

/// The monitor's alert events for one time's readings (in [`reading_order`]), or a dead letter
/// for a reading it refused; the events' counts and latencies go into the node's figures.
fn observe_readings(
    monitor: &mut Monitor,
    render: &mut Render<'_>,
    batches: &[Vec<Prepared>],
) -> Vec<Result<Raised, DeadLetter>> {
    let plan = render.plan;
    let mut out = Vec::new();
    let mut timed = Vec::new();
    for p in reading_order(batches, plan.ordered) {
        match monitor.observe(&p.observed, &p.row.values) {
            Ok(fired) => {
                for f in fired {
                    let raised_at = f.change.raised_at;
                    let e = render.event(p, f);
                    timed.push(timing(&e, p));
                    let notice = plan
                        .notify
                        .as_ref()
                        .map(|n| Box::new(n.notification(&e, p, raised_at)));
                    out.push(Ok((e, notice)));
                }
            }
            Err(e) => out.push(Err(dead_row(
                &plan.name,
                &plan.schema,
                &p.row,
                e.to_string(),
            ))),
        }
    }
    if !timed.is_empty() {
        plan.latency.record(&timed);
    }
    out
}

/// An alert event's figures for [`AlertLatency::record`]: its rule, its type, emission minus
/// the reading's arrival (µs, when known), and emission minus its event time (ms).
fn timing(e: &AlertEvent, p: &Prepared) -> (String, String, Option<u64>, u64) {
    let emitted_ms = e.payload.emitted_at.timestamp_millis();
    (
        e.payload.rule.clone(),
        e.metadata.event_type.clone(),
        e.payload.latency_ms.map(|ms| (ms * 1000.0) as u64),
        u64::try_from(emitted_ms - p.observed.time).unwrap_or(0),
    )
}

/// The readings of one time's batches in the order the monitor takes them: as they came, or
/// (`ordered`) by event time and source position. Only their places are sorted, never the
/// readings themselves.
fn reading_order(
    batches: &[Vec<Prepared>],
    ordered: bool,
) -> Box<dyn Iterator<Item = &Prepared> + '_> {
    if !ordered {
        return Box::new(batches.iter().flatten());
    }
    let mut places: Vec<(i64, u64, usize, usize)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| {
            batch
                .iter()
                .enumerate()
                .map(move |(i, p)| (p.observed.time, p.row.sequence, b, i))
        })
        .collect();
    // The places make equal keys keep their arrival order: as a stable sort of the readings.
    places.sort_unstable();
    Box::new(
        places
            .into_iter()
            .filter_map(|(_, _, b, i)| batches.get(b).and_then(|batch| batch.get(i))),
    )
}

/// The console sink: a line per alert on standard output, at most `limit` a second per worker
/// (the rest are counted in one line when the second is over).
pub fn console(input: VecStream<'_, AlertEvent>, limit: u32, counters: Arc<NodeCounters>) {
    use std::io::Write as _;
    let mut second = std::time::Instant::now();
    let (mut shown, mut held) = (0u32, 0u64);
    input.sink(Pipeline, "console", move |(input, _frontier)| {
        let mut stdout = std::io::stdout().lock();
        let mut n = 0u64;
        input.for_each_stamp(|_, data| {
            for e in data.flat_map(|batch| batch.drain(..)) {
                n += 1;
                if second.elapsed() >= std::time::Duration::from_secs(1) {
                    if held > 0 {
                        let _ = writeln!(stdout, "… {held} more alert event(s) in that second");
                    }
                    second = std::time::Instant::now();
                    (shown, held) = (0, 0);
                }
                if shown < limit {
                    shown += 1;
                    let _ = writeln!(stdout, "{}", e.line());
                } else {
                    held += 1;
                }
            }
        });
        let _ = stdout.flush();
        if n > 0 {
            counters.add(&vitalflow_model::envelope::Counts {
                records_in: n,
                records_out: n,
                rejected: 0,
            });
        }
    });
}

/// An `alert` node's per-reading work in one thread, with no dataflow around it: the throughput
/// harness's straight-line baseline.
#[cfg(feature = "baseline")]
pub(crate) struct AlertLoop {
    plan: Arc<AlertPlan>,
    prepare: Prepare,
    monitor: Monitor,
    last: Option<(String, String, Option<i64>)>,
}

#[cfg(feature = "baseline")]
impl AlertLoop {
    pub(crate) fn new(plan: &Arc<AlertPlan>) -> Self {
        Self {
            plan: Arc::clone(plan),
            prepare: Prepare(Arc::clone(plan)),
            monitor: Monitor::new(Arc::clone(&plan.spec)),
            last: None,
        }
    }

    /// One reading: its alert events, or a dead letter.
    pub(crate) fn observe(
        &mut self,
        row: Row,
        out: &mut Vec<AlertEvent>,
        dead: &mut Vec<DeadLetter>,
    ) {
        let mut prepared = Vec::with_capacity(1);
        self.prepare.process(row, &mut prepared, dead);
        let mut render = Render {
            plan: &self.plan,
            last: self.last.take(),
        };
        for p in prepared {
            match self.monitor.observe(&p.observed, &p.row.values) {
                Ok(fired) => {
                    for f in fired {
                        out.push(render.event(&p, f));
                    }
                }
                Err(e) => dead.push(dead_row(
                    &self.plan.name,
                    &self.plan.schema,
                    &p.row,
                    e.to_string(),
                )),
            }
        }
        self.last = render.last;
    }
}

/// The columns of alert events written as rows (a Parquet sink): the envelope's ids and type,
/// the payload's fields (sub-scores and observations as JSON text, `missing` and `stale`
/// comma-separated; a critical laboratory value's fields last), its times as timestamps. No field is PHI: the patient is the pseudonym,
/// the times are date-shifted.
#[must_use]
pub fn alert_schema() -> Schema {
    use vitalflow_model::row::{Field, Type};
    let field = |name: &str, ty: Type, nullable: bool| Field {
        name: name.to_owned(),
        ty,
        nullable,
        phi: None,
    };
    Schema {
        fields: vec![
            field("event_id", Type::String, false),
            field("event_type", Type::String, false),
            field("event_source", Type::String, false),
            field("causation_id", Type::String, true),
            field("alert_id", Type::String, false),
            field("rule", Type::String, false),
            field("patient", Type::String, false),
            field("ward", Type::String, true),
            field("level", Type::String, false),
            field("previous_level", Type::String, false),
            field("score", Type::Int, true),
            field("sub_scores", Type::String, true),
            field("spo2_scale", Type::Int, true),
            field("missing", Type::String, true),
            field("stale", Type::String, true),
            field("condition", Type::String, true),
            field("observations", Type::String, false),
            field("event_time", Type::Timestamp, false),
            field("raised_at", Type::Timestamp, false),
            field("emitted_at", Type::Timestamp, false),
            field("latency_ms", Type::Float, true),
            field("parameter", Type::String, true),
            field("value", Type::Float, true),
            field("unit", Type::String, true),
            field("threshold", Type::Float, true),
            field("direction", Type::String, true),
            field("severity", Type::String, true),
            field("detected_at", Type::Timestamp, true),
        ],
        time: Some(17),
        key: Some(6),
    }
}

/// An alert event as a row of [`alert_schema`].
#[must_use]
pub fn alert_row(e: &AlertEvent) -> Row {
    let a = &e.payload;
    let opt = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::str);
    let list = |l: &[String]| {
        if l.is_empty() {
            Value::Null
        } else {
            Value::str(&l.join(","))
        }
    };
    let ms = |t: &DateTime<Utc>| Value::Timestamp(t.timestamp_millis());
    Row {
        values: vec![
            Value::str(&e.metadata.event_id),
            Value::str(&e.metadata.event_type),
            Value::str(&e.metadata.event_source),
            opt(&e.metadata.causation_id),
            Value::str(&a.alert_id),
            Value::str(&a.rule),
            Value::str(&a.patient),
            opt(&a.ward),
            Value::str(&a.level),
            Value::str(&a.previous_level),
            a.score.map_or(Value::Null, |s| Value::Int(i64::from(s))),
            if a.sub_scores.is_empty() {
                Value::Null
            } else {
                Value::str(&serde_json::to_string(&a.sub_scores).unwrap_or_default())
            },
            a.spo2_scale
                .map_or(Value::Null, |s| Value::Int(i64::from(s))),
            list(&a.missing),
            list(&a.stale),
            opt(&a.condition),
            Value::str(&serde_json::to_string(&a.observations).unwrap_or_default()),
            ms(&a.event_time),
            ms(&a.raised_at),
            ms(&a.emitted_at),
            a.latency_ms.map_or(Value::Null, Value::Float),
            opt(&a.parameter),
            a.value.map_or(Value::Null, Value::Float),
            opt(&a.unit),
            a.threshold.map_or(Value::Null, Value::Float),
            opt(&a.direction),
            opt(&a.severity),
            a.detected_at.as_ref().map_or(Value::Null, ms),
        ],
        sequence: 0,
        tombstone: false,
        arrival_us: 0,
    }
}
