//! The per-worker alert state: every patient's latest NEWS2 parameters, every rule's recent
//! history, and the life of every alert. One reading in, the alert events it causes out.
//!
//! * **NEWS2**: each reading updates the patient's latest value of the parameters it carries;
//!   the score uses the values read within the freshness window, on the patient's SpO2 scale.
//!   Its level, once at or above `raise_at`, is the alert's severity.
//! * **Rules**: a condition over the reading (and, with a `window`, over aggregates of the
//!   patient's readings within it, such as `max(sbp)` over 15 minutes). With `sustain`, the
//!   condition must have held at every reading for that long. A condition that is null (a
//!   parameter missing from the reading) neither holds nor breaks a run.
//! * **Lifecycle**: per patient and rule, see [`super::lifecycle`].
//!
//! Readings are taken in arrival order; a patient's clock never goes back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use vitalflow_model::row::Value;

use super::latest::{Absence, Latest, Reading};
use super::lifecycle::{AlertChange, Lifecycle, LifecycleConfig};
use super::news2::{Level, News2, Parameter, Spo2Scale, score};
use crate::expression::Compiled;
use crate::window::AggFn;

/// How many triggering observation ids a sustained rule keeps.
const MAX_CAUSES: usize = 32;

/// A level's severity (0: none).
#[must_use]
pub const fn severity(level: Level) -> u8 {
    match level {
        Level::None => 0,
        Level::Low => 1,
        Level::LowMedium => 2,
        Level::Medium => 3,
        Level::High => 4,
    }
}

/// The level of a severity.
#[must_use]
pub const fn level_of(severity: u8) -> Level {
    match severity {
        0 => Level::None,
        1 => Level::Low,
        2 => Level::LowMedium,
        3 => Level::Medium,
        _ => Level::High,
    }
}

/// A level's name (`none`, `low`, `low-medium`, `medium`, `high`).
#[must_use]
pub const fn level_name(level: Level) -> &'static str {
    match level {
        Level::None => "none",
        Level::Low => "low",
        Level::LowMedium => "low-medium",
        Level::Medium => "medium",
        Level::High => "high",
    }
}

/// Parses a level name.
#[must_use]
pub fn parse_level(name: &str) -> Option<Level> {
    Some(match name {
        "low" => Level::Low,
        "low-medium" => Level::LowMedium,
        "medium" => Level::Medium,
        "high" => Level::High,
        _ => return None,
    })
}

/// A parameter's name in alert events (`respiration-rate`, `spo2`, …).
#[must_use]
pub const fn parameter_name(p: Parameter) -> &'static str {
    match p {
        Parameter::RespirationRate => "respiration-rate",
        Parameter::Spo2 => "spo2",
        Parameter::AirOrOxygen => "air-or-oxygen",
        Parameter::SystolicBp => "systolic-bp",
        Parameter::Pulse => "pulse",
        Parameter::Consciousness => "consciousness",
        Parameter::Temperature => "temperature",
    }
}

/// An aggregate of a rule over the patient's readings within the rule's window.
#[derive(Clone, Debug)]
pub struct RuleAggregate {
    /// The function: `count`, `sum`, `min`, `max`, `mean`, `first` or `last`.
    pub func: AggFn,
    /// Its argument over the input row (`None`: `count()`).
    pub arg: Option<Arc<Compiled>>,
}

/// A critical-value or trend rule.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    /// Its name in the job file.
    pub name: String,
    /// The condition as written.
    pub condition: String,
    /// The condition, over the input row followed by the aggregates' values.
    pub when: Arc<Compiled>,
    /// The level of its alert.
    pub level: Level,
    /// How long the condition must hold (ms; 0: at once).
    pub sustain: i64,
    /// The aggregates' window (ms).
    pub window: i64,
    /// Aggregates the condition may use, after the row's fields.
    pub aggregates: Vec<RuleAggregate>,
}

/// What a monitor watches.
#[derive(Clone, Debug)]
pub struct MonitorSpec {
    /// Score NEWS2 (the job maps at least one parameter).
    pub news2: bool,
    /// A reading counts for this long (ms).
    pub freshness: i64,
    /// The NEWS2 level from which an alert is raised.
    pub raise_at: Level,
    /// Resolution and suppression.
    pub lifecycle: LifecycleConfig,
    /// The rules.
    pub rules: Vec<RuleSpec>,
}

/// An observation's id as the monitor keeps it. A record's position in its source is kept as
/// a number and rendered (`source#n`, `topic/partition@offset`) by whoever knows the source,
/// and only when an alert names it: most readings never are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ObservationRef {
    /// An id given as text.
    Text(Arc<str>),
    /// The record's sequence number in its source.
    Position(u64),
}

/// One reading, as the monitor needs it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    /// The patient (a source id: it never leaves the operator).
    pub patient: String,
    /// Event time (ms).
    pub time: i64,
    /// The observation's id.
    pub id: ObservationRef,
    /// The patient's ward, if known.
    pub ward: Option<String>,
    /// The patient's SpO2 scale.
    pub scale: Spo2Scale,
    /// The NEWS2 parameters the reading carries.
    pub readings: Vec<(Parameter, Reading)>,
}

/// An alert event, before it is rendered.
#[derive(Clone, Debug)]
pub struct Fired {
    /// The rule (index into [`MonitorSpec::rules`]); `None` for NEWS2.
    pub rule: Option<usize>,
    /// The transition.
    pub change: AlertChange,
    /// NEWS2: the score and the parameters that did not count.
    pub news2: Option<(News2, Vec<(Parameter, Absence)>)>,
    /// The ids of the triggering observations.
    pub observations: Vec<ObservationRef>,
}

#[derive(Debug, Default)]
struct RuleState {
    /// Since when, and through which readings, the condition has held.
    since: Option<i64>,
    causes: VecDeque<ObservationRef>,
    /// The aggregates' arguments of the readings within the window, by event time.
    history: VecDeque<(i64, Vec<Value>)>,
}

#[derive(Debug, Default)]
struct PatientState {
    latest: Latest,
    rules: Vec<RuleState>,
}

/// A rule or the monitor failed on a reading (names the rule, never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}`: {message}")]
pub struct RuleError {
    /// The rule.
    pub rule: String,
    /// What failed.
    pub message: String,
}

/// The alert state of one worker.
#[derive(Debug)]
pub struct Monitor {
    spec: Arc<MonitorSpec>,
    patients: HashMap<Arc<str>, PatientState, foldhash::fast::RandomState>,
    lifecycle: Lifecycle<(Arc<str>, usize)>,
    scratch: Vec<Value>,
}

impl Monitor {
    /// No patient seen yet.
    #[must_use]
    pub fn new(spec: Arc<MonitorSpec>) -> Self {
        let lifecycle = Lifecycle::new(spec.lifecycle);
        Self {
            spec,
            patients: HashMap::default(),
            lifecycle,
            scratch: Vec::new(),
        }
    }

    /// Patients with state.
    #[must_use]
    pub fn patients(&self) -> usize {
        self.patients.len()
    }

    /// Alerts currently active.
    #[must_use]
    pub fn active(&self) -> usize {
        self.lifecycle.active()
    }

    /// Takes one reading (`row`: its values, which rule conditions read); returns the alert
    /// events it causes: NEWS2 first, then the rules in declared order.
    ///
    /// # Errors
    /// When a rule's condition or aggregate fails on the reading; nothing is changed then.
    pub fn observe(&mut self, obs: &Observed, row: &[Value]) -> Result<Vec<Fired>, RuleError> {
        let spec = Arc::clone(&self.spec);
        // Evaluate every rule's inputs first, so a failure changes nothing.
        let mut args: Vec<Vec<Value>> = Vec::with_capacity(spec.rules.len());
        for rule in &spec.rules {
            let values = rule
                .aggregates
                .iter()
                .map(|a| match &a.arg {
                    None => Ok(Value::Bool(true)),
                    Some(c) => c.eval(row).map_err(|e| RuleError {
                        rule: rule.name.clone(),
                        message: e.to_string(),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            args.push(values);
        }
        let patient: Arc<str> = match self.patients.get_key_value(obs.patient.as_str()) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(obs.patient.as_str()),
        };
        let id = &obs.id;
        let state = self
            .patients
            .entry(Arc::clone(&patient))
            .or_insert_with(|| PatientState {
                latest: Latest::default(),
                rules: (0..spec.rules.len())
                    .map(|_| RuleState::default())
                    .collect(),
            });
        let mut verdicts: Vec<Option<bool>> = Vec::with_capacity(spec.rules.len());
        for ((rule, rs), values) in spec.rules.iter().zip(&state.rules).zip(&args) {
            let result = if rule.aggregates.is_empty() {
                rule.when.eval(row)
            } else {
                // The row, then each aggregate over the window with this reading in it.
                self.scratch.clear();
                self.scratch.extend_from_slice(row);
                let horizon = obs.time.saturating_sub(rule.window);
                let current = (obs.time, values.clone());
                for (i, a) in rule.aggregates.iter().enumerate() {
                    let window = rs.history.iter().chain(std::iter::once(&current));
                    self.scratch
                        .push(aggregate(a.func, window, i, horizon, obs.time));
                }
                rule.when.eval(&self.scratch)
            };
            let verdict = match result {
                Ok(Value::Bool(b)) => Some(b),
                Ok(_) => None,
                Err(e) => {
                    return Err(RuleError {
                        rule: rule.name.clone(),
                        message: e.to_string(),
                    });
                }
            };
            verdicts.push(verdict);
        }
        // Every rule could judge the reading: it joins the windows.
        for ((rule, rs), values) in spec.rules.iter().zip(&mut state.rules).zip(args) {
            if !rule.aggregates.is_empty() {
                insert_sorted(&mut rs.history, obs.time, values);
                let horizon = obs.time.saturating_sub(rule.window);
                while rs.history.front().is_some_and(|(t, _)| *t < horizon) {
                    rs.history.pop_front();
                }
            }
        }

        let mut fired = Vec::new();
        if spec.news2 && !obs.readings.is_empty() {
            for (p, r) in &obs.readings {
                state.latest.update_observed(*p, *r, obs.time, id);
            }
            let (observations, absent) = state.latest.at(obs.time, spec.freshness);
            let news2 = score(&observations, obs.scale);
            let sev = if news2.level >= spec.raise_at {
                severity(news2.level)
            } else {
                0
            };
            let key = (Arc::clone(&patient), 0);
            if let Some(change) = self.lifecycle.observe(&key, sev, obs.time) {
                fired.push(Fired {
                    rule: None,
                    change,
                    observations: state.latest.fresh_ids(obs.time, spec.freshness),
                    news2: Some((news2, absent)),
                });
            }
        }
        for (i, ((rule, rs), verdict)) in spec
            .rules
            .iter()
            .zip(&mut state.rules)
            .zip(verdicts)
            .enumerate()
        {
            let Some(holds) = verdict else { continue };
            let sev = if holds {
                let since = *rs.since.get_or_insert(obs.time);
                rs.causes.push_back(id.clone());
                if rs.causes.len() > MAX_CAUSES {
                    rs.causes.pop_front();
                }
                if obs.time - since >= rule.sustain {
                    severity(rule.level)
                } else {
                    0
                }
            } else {
                rs.since = None;
                rs.causes.clear();
                0
            };
            let key = (Arc::clone(&patient), i + 1);
            if let Some(change) = self.lifecycle.observe(&key, sev, obs.time) {
                let observations = if sev > 0 {
                    rs.causes.iter().cloned().collect()
                } else {
                    vec![id.clone()]
                };
                fired.push(Fired {
                    rule: Some(i),
                    change,
                    news2: None,
                    observations,
                });
            }
        }
        Ok(fired)
    }
}

fn insert_sorted(history: &mut VecDeque<(i64, Vec<Value>)>, time: i64, values: Vec<Value>) {
    let at = history.partition_point(|(t, _)| *t <= time);
    history.insert(at, (time, values));
}

/// Aggregate `i` over the readings of `window` within `[from, to]`.
fn aggregate<'a>(
    func: AggFn,
    window: impl Iterator<Item = &'a (i64, Vec<Value>)>,
    i: usize,
    from: i64,
    to: i64,
) -> Value {
    let timed = window
        .filter(|(t, _)| *t >= from && *t <= to)
        .filter_map(|(t, v)| Some((*t, v.get(i)?)))
        .filter(|(_, v)| !v.is_null());
    // First and last by event time (a late reading comes last in the window, not in time).
    match func {
        AggFn::First => {
            return timed
                .fold(None, |best: Option<(i64, &Value)>, (t, v)| match best {
                    Some((bt, _)) if bt <= t => best,
                    _ => Some((t, v)),
                })
                .map_or(Value::Null, |(_, v)| v.clone());
        }
        AggFn::Last => {
            return timed
                .fold(None, |best: Option<(i64, &Value)>, (t, v)| match best {
                    Some((bt, _)) if bt > t => best,
                    _ => Some((t, v)),
                })
                .map_or(Value::Null, |(_, v)| v.clone());
        }
        _ => {}
    }
    let values = timed.map(|(_, v)| v);
    match func {
        AggFn::Count => Value::Int(i64::try_from(values.count()).unwrap_or(i64::MAX)),
        AggFn::Min | AggFn::Max => {
            let want = if func == AggFn::Min {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            };
            values.fold(Value::Null, |best, v| {
                if best.is_null() || v.compare(&best) == Some(want) {
                    v.clone()
                } else {
                    best
                }
            })
        }
        AggFn::Sum | AggFn::Mean => {
            let (mut n, mut sum) = (0u32, 0.0f64);
            for v in values {
                let x = match v {
                    Value::Int(x) => *x as f64,
                    Value::Float(x) => *x,
                    _ => continue,
                };
                n += 1;
                sum += x;
            }
            match (func, n) {
                (_, 0) => Value::Null,
                (AggFn::Mean, _) => Value::Float(sum / f64::from(n)),
                _ => Value::Float(sum),
            }
        }
        _ => Value::Null,
    }
}

/// The aggregate functions rules may use.
pub const RULE_AGGREGATES: [AggFn; 7] = [
    AggFn::Count,
    AggFn::Sum,
    AggFn::Min,
    AggFn::Max,
    AggFn::Mean,
    AggFn::First,
    AggFn::Last,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
