//! `kind = "alert"`: NEWS2 and critical-value rules over vital-sign rows, and critical
//! laboratory values over lab rows; outputs alert events with no PHI (the patient pseudonymized
//! and event times date-shifted here).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_model::row::{Field, Schema, Type};
use vitalflow_operators::alert::critical::{CriticalLimit, default_limits};
use vitalflow_operators::alert::lifecycle::LifecycleConfig;
use vitalflow_operators::alert::monitor::{MonitorSpec, RULE_AGGREGATES, RuleAggregate, RuleSpec};
use vitalflow_operators::alert::news2::{Level as News2Level, Parameter};
use vitalflow_operators::anonymize::{AnonymizeConfig as Anonymization, Anonymizer, Policy};
use vitalflow_operators::expression::{self, Compiled};
use vitalflow_operators::window::AggFn;

use super::anonymize::{self, check_dates};
use super::settings::{Dates, Duration, KeySource, Level};
use super::{Check, NodeKind, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::schema::{aggregate_call, event_time, expression, phi_read, type_name, whole};
use crate::job::{Diagnostic, Job, JobText, Node, PortKind};
use crate::runtime::alerts::{
    self, AlertLatency, AlertPlan, CriticalRule, NotifyPlan, ObservationId,
};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};

/// `kind = "alert"`: NEWS2 and critical-value rules over vital-sign rows; outputs alert events
/// (no PHI: the patient is pseudonymized and event times date-shifted here, with the same key
/// and policy as `anonymize`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertConfig {
    /// Always `"alert"`.
    pub kind: String,
    /// Upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// The patient: an expression. Default: the rows' declared key.
    pub patient: Option<Spanned<String>>,
    /// The patient's ward (a text expression). Default: none.
    pub ward: Option<Spanned<String>>,
    /// The observation's id (an expression), named as the alert's cause. Default: the reading's
    /// place in its source (`topic/partition@offset` for Kafka, `source#record` for files).
    pub observation_id: Option<Spanned<String>>,
    /// NEWS2: a reading counts for this long. Default: `1h`.
    #[serde(default = "freshness")]
    pub freshness: Duration,
    /// An alert resolves once its condition has been normal this long. Default: `15m`.
    #[serde(default = "resolve_after")]
    pub resolve_after: Duration,
    /// Repeats at the same level are suppressed for this long. Default: `30m`.
    #[serde(default = "suppress_for")]
    pub suppress_for: Duration,
    /// Where the pseudonymization key comes from, as for `anonymize`: `env:NAME`, `file:PATH`
    /// or `ephemeral`. Required.
    pub key: Spanned<KeySource>,
    /// `shift` or `year`, as for `anonymize`. Default: `shift`.
    #[serde(default = "anonymize::dates")]
    pub dates: Spanned<Dates>,
    /// Largest date shift, in days, either way. Default: 365.
    #[serde(default = "anonymize::max_shift_days")]
    pub max_shift_days: u32,
    /// The NEWS2 parameters, each an expression over the rows.
    pub news2: Option<News2Config>,
    /// Critical-value and trend rules, by name.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
    /// Critical laboratory values, over laboratory rows (`tabulate`'s `labs` port).
    pub critical_values: Option<CriticalValuesConfig>,
    /// What the identified notifications of the `notify` port show of the patient.
    pub notify: Option<NotifyConfig>,
    /// The compiled rules and parameters, once resolved.
    #[serde(skip)]
    pub(crate) parts: Resolved<AlertParts>,
}

/// `[operators.NAME.notify]`: the patient as the identified notifications (port `notify`)
/// show them, each an expression over the rows (PHI allowed: only clinical delivery sinks take
/// the port). Every field but `mrn` is left out when not given.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NotifyConfig {
    /// The medical record number. Default: the patient expression.
    pub mrn: Option<Spanned<String>>,
    /// Family name.
    pub family_name: Option<Spanned<String>>,
    /// Given name.
    pub given_name: Option<Spanned<String>>,
    /// Room.
    pub room: Option<Spanned<String>>,
    /// Bed.
    pub bed: Option<Spanned<String>>,
}

/// `[operators.NAME.news2]`: where each NEWS2 parameter comes from. A parameter left out is
/// always missing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct News2Config {
    /// Breaths per minute.
    pub respiration_rate: Option<Spanned<String>>,
    /// Saturation, %.
    pub spo2: Option<Spanned<String>>,
    /// On supplemental oxygen (boolean).
    pub oxygen: Option<Spanned<String>>,
    /// SpO2 scale 2 applies (boolean: a prescribed 88–92 % target). Default: scale 1.
    pub scale2: Option<Spanned<String>>,
    /// Systolic blood pressure, mmHg.
    pub systolic: Option<Spanned<String>>,
    /// Beats per minute.
    pub pulse: Option<Spanned<String>>,
    /// ACVPU as text (`A`, `C`, `V`, `P`, `U` or the words).
    pub consciousness: Option<Spanned<String>>,
    /// °C.
    pub temperature: Option<Spanned<String>>,
    /// The level from which an alert is raised: `low`, `low-medium`, `medium` or `high`.
    /// Default: `low-medium`.
    #[serde(default = "raise_at")]
    pub raise_at: Level,
}

/// `[operators.NAME.rules.RULE]`: a critical-value or trend rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleConfig {
    /// The condition: a boolean expression over the row and the rule's aggregates. Required.
    pub when: Spanned<String>,
    /// How long the condition must hold at every reading before the alert is raised. Default:
    /// at once.
    #[serde(rename = "for")]
    pub sustain: Option<Spanned<Duration>>,
    /// The alert's level: `low`, `low-medium`, `medium` or `high`. Default: `high`.
    #[serde(default = "rule_level")]
    pub level: Spanned<Level>,
    /// The window of the aggregates, back from each reading. Required with `aggregates`.
    pub window: Option<Spanned<Duration>>,
    /// Name → aggregate over the patient's readings in the window (`max(sbp)`; `count`, `sum`,
    /// `min`, `max`, `mean`, `first`, `last`).
    #[serde(default)]
    pub aggregates: BTreeMap<String, Spanned<String>>,
}

/// `[operators.NAME.critical-values]`: critical laboratory values, read from the fields
/// `code`, `value`, `unit`, `comparator` and `status` of laboratory rows (`tabulate`'s `labs`
/// port). Each limit is a rule named `critical-value/NAME`; its events are
/// `critical_value_detected`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CriticalValuesConfig {
    /// Whether the default limits apply (docs/laboratory.md). Default: `true`.
    #[serde(default = "yes")]
    pub defaults: bool,
    /// The level of their alerts: `low`, `low-medium`, `medium` or `high`. Default: `high`.
    #[serde(default = "rule_level")]
    pub level: Spanned<Level>,
    /// Limits by name: one named as a default replaces it, another is added.
    #[serde(default)]
    pub limits: BTreeMap<String, LimitConfig>,
}

/// `[operators.NAME.critical-values.limits.LIMIT]`: critical limits of one analyte.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitConfig {
    /// The LOINC codes it applies to. Required.
    pub codes: Vec<String>,
    /// The units (UCUM) it applies to; `""` for results without a unit. Required.
    pub units: Vec<String>,
    /// Critical at or below this value.
    pub low: Option<f64>,
    /// Critical at or above this value.
    pub high: Option<f64>,
}

const fn yes() -> bool {
    true
}

const fn freshness() -> Duration {
    Duration::from_millis(3_600_000)
}
const fn resolve_after() -> Duration {
    Duration::from_millis(900_000)
}
const fn suppress_for() -> Duration {
    Duration::from_millis(1_800_000)
}
const fn raise_at() -> Level {
    Level(News2Level::LowMedium)
}
fn rule_level() -> Spanned<Level> {
    Spanned::new(0..0, Level(News2Level::High))
}

impl NodeSpec for AlertConfig {
    fn kind(&self) -> &'static str {
        "alert"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Alert),
            ("notify", PortKind::Notification),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Rows]
    }

    fn check(&self, c: &mut Check<'_>) {
        check_dates(c, &self.dates, self.max_shift_days);
        let path = c.path.to_owned();
        if self.news2.is_none() && self.rules.is_empty() && self.critical_values.is_none() {
            c.at_node(format!(
                "`{path}`: an alert needs `[{path}.news2]` (where the NEWS2 parameters \
                 come from), rules (`[{path}.rules.NAME]` with `when = \"...\"`), \
                 `[{path}.critical-values]`, or some of them"
            ));
        }
        for (name, r) in &self.rules {
            if r.window.is_none() && !r.aggregates.is_empty() {
                c.at(
                    r.when.span().start,
                    format!(
                        "`{path}.rules.{name}` has `aggregates` but no `window` (how far back \
                         they look, e.g. `window = \"15m\"`)"
                    ),
                );
            }
        }
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let Some(input) = r.input() else {
            return Vec::new();
        };
        match alert_parts(r.text, r.span.start, r.path, self, &input) {
            Ok(p) => self.parts.set(p),
            Err(d) => r.errors.extend(d),
        }
        Vec::new()
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let key = match self.key.get_ref().load(&p.base, p.ephemeral) {
            Ok(k) => k,
            Err(message) => {
                let path = p.path.clone();
                p.at(self.key.span(), format!("{path}.key: {message}"));
                return None;
            }
        };
        let parts = p.resolved(&self.parts)?;
        let input = p.rows()?;
        let name = p.node.name.clone();
        let id = match (&parts.observation_id, origin_source(p.job, p.node)) {
            (Some(e), _) => ObservationId::Expr(Arc::clone(e)),
            (None, Some((_, Some(topic)))) => ObservationId::Kafka(topic),
            (None, Some((source, None))) => ObservationId::Position(source),
            (None, None) => ObservationId::Position(name.clone()),
        };
        let latency = Arc::new(AlertLatency::default());
        p.alerts.insert(name.clone(), Arc::clone(&latency));
        // Kafka and paced generator readings are taken as they arrive.
        let paced = p
            .job
            .nodes
            .iter()
            .any(|n| matches!(&n.kind, NodeKind::Generator(g) if g.rate > 0.0));
        let plan = AlertPlan {
            name,
            job: p.job.name.clone(),
            spec: Arc::new(parts.spec.clone()),
            patient: Arc::clone(&parts.patient),
            time: parts.time,
            ward: parts.ward.clone(),
            id,
            params: parts.params.clone(),
            scale2: parts.scale2.clone(),
            anonymizer: Arc::new(Anonymizer::new(Anonymization {
                key,
                dates: self.dates.get_ref().policy(self.max_shift_days),
                restricted_zip3: Vec::new(),
                policy: Policy::default(),
            })),
            ordered: !p.kafka.job && !paced,
            notify: consumed(p.job, &p.node.name, "notify").then(|| parts.notify.clone()),
            schema: Arc::new(input),
            latency,
            critical: parts.critical.clone(),
        };
        Some(Box::new(AlertOp {
            plan: Arc::new(plan),
        }))
    }
}

/// Whether some node reads port `port` of node `node`.
fn consumed(job: &Job, node: &str, port: &str) -> bool {
    job.nodes
        .iter()
        .any(|n| n.inputs.iter().any(|i| i.node == node && i.port == port))
}

/// The source a node's records come from (following first inputs), with its Kafka topic.
fn origin_source(job: &Job, node: &Node) -> Option<(String, Option<String>)> {
    let mut n = node;
    for _ in 0..job.nodes.len() {
        match &n.kind {
            NodeKind::Kafka(k) => return Some((n.name.clone(), Some(k.topic.get_ref().clone()))),
            NodeKind::File(_) | NodeKind::Generator(_) | NodeKind::Mllp(_) => {
                return Some((n.name.clone(), None));
            }
            _ => {}
        }
        let up = n.inputs.first()?;
        n = job.nodes.iter().find(|m| m.name == up.node)?;
    }
    None
}

/// An `alert` node, checked and compiled.
pub struct AlertParts {
    /// What the monitor watches.
    pub spec: MonitorSpec,
    /// The patient expression.
    pub patient: Arc<Compiled>,
    /// The input's event-time field.
    pub time: usize,
    /// The ward expression.
    pub ward: Option<Arc<Compiled>>,
    /// The observation-id expression.
    pub observation_id: Option<Arc<Compiled>>,
    /// Each NEWS2 parameter mapped, with its expression.
    pub params: Vec<(Parameter, Arc<Compiled>)>,
    /// Whether SpO2 scale 2 applies.
    pub scale2: Option<Arc<Compiled>>,
    /// The identified notifications' patient fields.
    pub notify: NotifyPlan,
    /// By rule index: the critical laboratory limit of the rule, if it is one.
    pub critical: Vec<Option<CriticalRule>>,
}

/// Checks and compiles an `alert` node over rows of `input`: every problem, at its place.
fn alert_parts(
    text: &JobText,
    at: usize,
    path: &str,
    c: &AlertConfig,
    input: &Schema,
) -> Result<AlertParts, Vec<Diagnostic>> {
    let mut k = AlertCheck {
        text,
        at,
        path,
        input,
        errors: Vec::new(),
    };
    let time = event_time(text, at, path, input, &mut k.errors);
    let patient = match (&c.patient, input.key) {
        (Some(p), _) => k.typed(p, "patient", None, "a value"),
        (None, Some(key)) => {
            expression::compile(&format!("`{}`", input.fields[key].name), input).ok()
        }
        (None, None) => None,
    };
    let ward = c
        .ward
        .as_ref()
        .and_then(|w| k.typed(w, "ward", None, "a value"));
    let observation_id = c
        .observation_id
        .as_ref()
        .and_then(|o| k.typed(o, "observation-id", None, "a value"));
    let notify = k.notify(c.notify.as_ref().cloned().unwrap_or_default());
    let (params, scale2, raise_at) = match &c.news2 {
        Some(n2) => k.news2(n2),
        None => (Vec::new(), None, News2Level::LowMedium),
    };
    // Alert events leave the job as they are (only the patient is pseudonymized): the ward and
    // the observation ids they show must not be read from PHI.
    k.no_phi("ward", c.ward.as_ref(), ward.as_ref());
    k.no_phi(
        "observation-id",
        c.observation_id.as_ref(),
        observation_id.as_ref(),
    );
    if c.patient.is_none() && input.key.is_none() {
        k.at_node(format!(
            "`{path}`: the rows have no declared key: say which field is the patient with \
             `patient = \"...\"`"
        ));
    }
    let mut rules: Vec<RuleSpec> = c
        .rules
        .iter()
        .filter_map(|(name, r)| k.rule(name, r))
        .collect();
    let mut critical: Vec<Option<CriticalRule>> = vec![None; rules.len()];
    if let Some(cv) = &c.critical_values {
        for (rule, limit) in k.critical_values(cv) {
            rules.push(rule);
            critical.push(Some(limit));
        }
    }
    let (Some(patient), Some(time), true) = (patient, time, k.errors.is_empty()) else {
        return Err(k.errors);
    };
    Ok(AlertParts {
        spec: MonitorSpec {
            news2: !params.is_empty(),
            freshness: c.freshness.millis_i64(),
            raise_at,
            lifecycle: LifecycleConfig {
                resolve_after: c.resolve_after.millis_i64(),
                suppress_for: c.suppress_for.millis_i64(),
            },
            rules,
        },
        patient: Arc::new(patient),
        time,
        ward: ward.map(Arc::new),
        observation_id: observation_id.map(Arc::new),
        params: params.into_iter().map(|(p, e)| (p, Arc::new(e))).collect(),
        scale2: scale2.map(Arc::new),
        notify,
        critical,
    })
}

/// An `alert` node's expressions being checked against its rows, with the problems found.
struct AlertCheck<'a> {
    text: &'a JobText,
    at: usize,
    path: &'a str,
    input: &'a Schema,
    errors: Vec<Diagnostic>,
}

/// The NEWS2 parameters compiled, the SpO2 scale 2 expression and the level alerts rise from.
type News2Parts = (Vec<(Parameter, Compiled)>, Option<Compiled>, News2Level);

impl AlertCheck<'_> {
    fn at_node(&mut self, message: String) {
        self.errors.push(self.text.diag(self.at, message));
    }

    fn whole(&mut self, source: &Spanned<String>, message: String) {
        self.errors.push(whole(self.text, source, message));
    }

    /// An expression of one of `types` (`None`: any type).
    fn typed(
        &mut self,
        source: &Spanned<String>,
        field: &str,
        types: Option<&[Type]>,
        what: &str,
    ) -> Option<Compiled> {
        let field_path = format!("{}.{field}", self.path);
        match expression(self.text, source, self.input, &field_path) {
            Ok(e) => match (e.ty(), types) {
                (None, _) => {
                    self.whole(source, format!("`{field_path}` is always null"));
                    None
                }
                (Some(t), Some(types)) if !types.contains(&t) => {
                    self.whole(
                        source,
                        format!("`{field_path}` must be {what}, not {}", type_name(Some(t))),
                    );
                    None
                }
                _ => Some(e),
            },
            Err(d) => {
                self.errors.extend(d);
                None
            }
        }
    }

    /// `[….notify]`: each field's expression (any type: shown as text).
    fn notify(&mut self, n: NotifyConfig) -> NotifyPlan {
        let mut field = |source: Option<Spanned<String>>, name: &str| {
            source.and_then(|s| {
                self.typed(&s, &format!("notify.{name}"), None, "a value")
                    .map(Arc::new)
            })
        };
        NotifyPlan {
            mrn: field(n.mrn, "mrn"),
            family_name: field(n.family_name, "family-name"),
            given_name: field(n.given_name, "given-name"),
            room: field(n.room, "room"),
            bed: field(n.bed, "bed"),
        }
    }

    /// `[….news2]`: each parameter's expression, of the type the score takes.
    fn news2(&mut self, n2: &News2Config) -> News2Parts {
        let numbers: &[Type] = &[Type::Int, Type::Float];
        let mut params = Vec::new();
        for (p, field, source) in [
            (
                Parameter::RespirationRate,
                "respiration-rate",
                &n2.respiration_rate,
            ),
            (Parameter::Spo2, "spo2", &n2.spo2),
            (Parameter::AirOrOxygen, "oxygen", &n2.oxygen),
            (Parameter::SystolicBp, "systolic", &n2.systolic),
            (Parameter::Pulse, "pulse", &n2.pulse),
            (Parameter::Consciousness, "consciousness", &n2.consciousness),
            (Parameter::Temperature, "temperature", &n2.temperature),
        ] {
            let Some(source) = source else { continue };
            let field = format!("news2.{field}");
            let compiled = match p {
                Parameter::AirOrOxygen => {
                    self.typed(source, &field, Some(&[Type::Bool]), "a boolean")
                }
                Parameter::Consciousness => self.typed(
                    source,
                    &field,
                    Some(&[Type::String]),
                    "text (A, C, V, P or U)",
                ),
                _ => self.typed(source, &field, Some(numbers), "a number"),
            };
            if let Some(e) = compiled {
                params.push((p, e));
            }
        }
        let scale2 = n2
            .scale2
            .as_ref()
            .and_then(|s| self.typed(s, "news2.scale2", Some(&[Type::Bool]), "a boolean"));
        if params.is_empty() && self.errors.is_empty() {
            let path = self.path;
            self.at_node(format!(
                "`{path}.news2` maps no parameter: give at least one of respiration-rate, spo2, \
                 oxygen, systolic, pulse, consciousness, temperature"
            ));
        }
        (params, scale2, n2.raise_at.0)
    }

    /// A value the alert events show must not be read from PHI.
    fn no_phi(&mut self, field: &str, source: Option<&Spanned<String>>, e: Option<&Compiled>) {
        let (Some(source), Some(e)) = (source, e) else {
            return;
        };
        let phi = phi_read(e, self.input);
        if !phi.is_empty() {
            let path = self.path;
            self.whole(
                source,
                format!(
                    "`{path}.{field}` reads PHI ({}): alert events leave the job with it; \
                     read fields that are not PHI, or `anonymize` the rows before the alert",
                    phi.join(", ")
                ),
            );
        }
    }

    /// `[….rules.NAME]`: its aggregates and condition.
    fn rule(&mut self, name: &str, r: &RuleConfig) -> Option<RuleSpec> {
        let rule_path = format!("{}.rules.{name}", self.path);
        let mut extended = self.input.clone();
        let mut aggregates = Vec::new();
        for (agg_name, source) in &r.aggregates {
            let what = format!("{rule_path}.aggregates.{agg_name}");
            if let Some((field, aggregate)) = self.rule_aggregate(agg_name, source, &what) {
                extended.fields.push(field);
                aggregates.push(aggregate);
            }
        }
        let when = match expression(self.text, &r.when, &extended, &format!("{rule_path}.when")) {
            Ok(e) if e.ty() == Some(Type::Bool) => e,
            Ok(e) => {
                self.whole(
                    &r.when,
                    format!(
                        "`{rule_path}.when` must be a boolean expression, not {}",
                        type_name(e.ty())
                    ),
                );
                return None;
            }
            Err(d) => {
                self.errors.extend(d);
                return None;
            }
        };
        Some(RuleSpec {
            name: name.to_owned(),
            condition: r.when.get_ref().clone(),
            when: Arc::new(when),
            level: r.level.get_ref().0,
            sustain: r.sustain.as_ref().map_or(0, |d| d.get_ref().millis_i64()),
            window: r.window.as_ref().map_or(0, |d| d.get_ref().millis_i64()),
            aggregates,
        })
    }

    /// `[….critical-values]`: a rule per limit (the defaults, replaced or added to by the
    /// job's), over the laboratory fields of the rows.
    fn critical_values(&mut self, cv: &CriticalValuesConfig) -> Vec<(RuleSpec, CriticalRule)> {
        let path = format!("{}.critical-values", self.path);
        let mut fields = [0usize; 5];
        for (slot, (name, types)) in fields.iter_mut().zip([
            ("code", &[Type::String][..]),
            ("value", &[Type::Float, Type::Int][..]),
            ("unit", &[Type::String][..]),
            ("comparator", &[Type::String][..]),
            ("status", &[Type::String][..]),
        ]) {
            match self.input.index(name) {
                Some(i) if types.contains(&self.input.fields[i].ty) => *slot = i,
                _ => {
                    self.errors.push(self.text.diag(
                        cv.level.span().start.max(self.at),
                        format!(
                            "`{path}` reads the fields `code`, `value` (a number), `unit`, \
                             `comparator` and `status` of laboratory rows (`tabulate`'s `labs` \
                             port): the rows have no usable `{name}`"
                        ),
                    ));
                    return Vec::new();
                }
            }
        }
        let mut limits: Vec<CriticalLimit> = if cv.defaults {
            default_limits()
        } else {
            Vec::new()
        };
        for (name, l) in &cv.limits {
            let limit = CriticalLimit {
                name: name.clone(),
                codes: l.codes.clone(),
                units: l.units.clone(),
                low: l.low,
                high: l.high,
            };
            let bad = |s: &String| s.contains(['\'', '\\']) || s.trim() != s;
            if limit.codes.is_empty()
                || limit.units.is_empty()
                || (limit.low.is_none() && limit.high.is_none())
                || limit.codes.iter().chain(&limit.units).any(bad)
                || [limit.low, limit.high]
                    .iter()
                    .flatten()
                    .any(|v| !v.is_finite())
            {
                self.at_node(format!(
                    "`{path}.limits.{name}` needs `codes` and `units` (lists of text without \
                     quotes or surrounding blanks) and `low`, `high` or both (finite numbers)"
                ));
                continue;
            }
            match limits.iter_mut().find(|d| d.name == *name) {
                Some(d) => *d = limit,
                None => limits.push(limit),
            }
        }
        let [code, value, unit, comparator, status] =
            fields.map(|i| format!("`{}`", self.input.fields[i].name.replace('`', "")));
        let quoted = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("'{s}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = Vec::new();
        for limit in limits {
            let beyond: Vec<String> = [
                limit.low.map(|l| format!("{value} <= {l:?}")),
                limit.high.map(|h| format!("{value} >= {h:?}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            // Null (no verdict) for results of other analytes or units, so that they neither
            // raise nor resolve this limit's alert.
            let when = format!(
                "if {code} in ({}) and coalesce({unit}, '') in ({}) then ({comparator} is null \
                 and {status} not in ('cancelled', 'entered-in-error') and ({})) else null",
                quoted(&limit.codes),
                quoted(&limit.units),
                beyond.join(" or ")
            );
            let compiled = match expression::compile(&when, self.input) {
                Ok(e) => e,
                Err(errors) => {
                    let why: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    self.at_node(format!(
                        "`{path}.limits.{}`: its condition does not compile: {}",
                        limit.name,
                        why.join("; ")
                    ));
                    continue;
                }
            };
            let condition = format!(
                "{} {} ({}; LOINC {})",
                limit.name,
                [
                    limit.low.map(|l| format!("<= {l}")),
                    limit.high.map(|h| format!(">= {h}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" or "),
                limit.units.join(", "),
                limit.codes.join(", ")
            );
            out.push((
                RuleSpec {
                    name: format!("critical-value/{}", limit.name),
                    condition,
                    when: Arc::new(compiled),
                    level: cv.level.get_ref().0,
                    sustain: 0,
                    window: 0,
                    aggregates: Vec::new(),
                },
                CriticalRule {
                    limit,
                    value: fields[1],
                    unit: fields[2],
                },
            ));
        }
        out
    }

    /// A rule's aggregate: the field its condition reads, and how it is computed.
    fn rule_aggregate(
        &mut self,
        agg_name: &str,
        source: &Spanned<String>,
        what: &str,
    ) -> Option<(Field, RuleAggregate)> {
        if self.input.index(agg_name).is_some() {
            self.whole(
                source,
                format!("`{what}`: the rows already have a field `{agg_name}`"),
            );
            return None;
        }
        let (func, _, compiled) =
            aggregate_call(self.text, source, self.input, what, &mut self.errors)?;
        if !RULE_AGGREGATES.contains(&func) {
            self.whole(
                source,
                format!("`{what}`: rules take count, sum, min, max, mean, first or last"),
            );
            return None;
        }
        let arg_ty = compiled.as_ref().and_then(Compiled::ty);
        let ty = match (func, arg_ty) {
            (AggFn::Count, _) => Type::Int,
            (AggFn::Sum | AggFn::Mean, Some(Type::Int | Type::Float)) => Type::Float,
            (AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last, Some(t)) => t,
            _ => {
                self.whole(
                    source,
                    format!("`{what}`: `{}` needs a number", source.get_ref().trim()),
                );
                return None;
            }
        };
        let field = Field {
            name: agg_name.to_owned(),
            ty,
            nullable: true,
            phi: None,
        };
        Some((
            field,
            RuleAggregate {
                func,
                arg: compiled.map(Arc::new),
            },
        ))
    }
}

/// A planned alert node.
pub struct AlertOp {
    /// The compiled rules, key and schema.
    pub plan: Arc<AlertPlan>,
}

impl Operator for AlertOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let (o, n, d) = alerts::alerts(input, Arc::clone(&self.plan), counters);
        b.output(name, "out", Port::Alerts(o));
        b.output(name, "notify", Port::Notices(n));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
