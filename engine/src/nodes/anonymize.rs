//! `kind = "anonymize"`: HIPAA Safe Harbor de-identification of clinical records or of rows
//! with PHI fields.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use toml::Spanned;
use vitalflow_model::clinical::Ingested;
use vitalflow_model::ids::route_hash;
use vitalflow_model::row::{Phi, Schema, Type};
use vitalflow_operators::anonymize::{
    AnonymizeConfig as Anonymization, Anonymizer, DeidReport, Policy, RowPlan,
};

use super::settings::{Dates, KeySource, check_shift};
use super::{Check, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::{PortKind, schema};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_clinical, as_rows};
use crate::runtime::ops::stage;
use crate::runtime::rows::AnonymizeRowsLogic;
use crate::runtime::saga::SagaRole;
use crate::runtime::stages::AnonymizeLogic;

/// `kind = "anonymize"`: HIPAA Safe Harbor de-identification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnonymizeConfig {
    /// Always `"anonymize"`.
    pub kind: String,
    /// Upstream ports.
    pub inputs: Vec<Spanned<String>>,
    /// Where the pseudonymization key comes from: `env:NAME` (an environment variable),
    /// `file:PATH` (a file; relative to the job file), or `ephemeral` (a random key for this run
    /// only: pseudonyms change every run; for demos). Required.
    pub key: Spanned<KeySource>,
    /// `shift` (every date of a patient moved by one consistent random number of days) or `year`
    /// (dates generalized to their year). Default: `shift`.
    #[serde(default = "dates")]
    pub dates: Spanned<Dates>,
    /// Largest date shift, in days, either way. Default: 365.
    #[serde(default = "max_shift_days")]
    pub max_shift_days: u32,
    /// Three-digit ZIP prefixes replaced by `000`. Default: the HHS list of ZIP3 areas with
    /// 20,000 people or fewer.
    pub restricted_zip3: Option<Vec<String>>,
    /// The action of each identifier class, where it differs from Safe Harbor's (`name`,
    /// `address`, `zip`, `birth-date`, `phone`, `fax`, `email`, `url`, `ip`, `mrn`, `ssn`,
    /// `health-plan`, `account`, `licence`, `vehicle`, `device`, `biometric`, `other-id`,
    /// `photo`, `free-text` → `redact`, `crypto-hash`, `keep`, `generalize`, `drop`, `scrub`, as
    /// each class allows).
    #[serde(default)]
    pub actions: BTreeMap<String, Spanned<String>>,
    /// The actions, once checked.
    #[serde(skip)]
    pub(crate) policy: Resolved<Policy>,
}

/// Default: `shift` (shared with `alert`).
pub(crate) fn dates() -> Spanned<Dates> {
    Spanned::new(0..0, Dates::Shift)
}

/// Default: 365 days (shared with `alert`).
pub(crate) const fn max_shift_days() -> u32 {
    365
}

/// The check `anonymize` and `alert` share: a shift of at least a day.
pub(crate) fn check_dates(c: &mut Check<'_>, dates: &Spanned<Dates>, max_shift_days: u32) {
    if let Some(message) = check_shift(*dates.get_ref(), max_shift_days) {
        let path = c.path.to_owned();
        c.at(
            dates.span().start,
            format!("`{path}.max-shift-days` {message}"),
        );
    }
}

impl NodeSpec for AnonymizeConfig {
    fn kind(&self) -> &'static str {
        "anonymize"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Deidentified),
            ("events", PortKind::DomainEvent),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Clinical, PortKind::Rows]
    }

    fn is_stage(&self) -> bool {
        true
    }

    fn check(&self, c: &mut Check<'_>) {
        check_dates(c, &self.dates, self.max_shift_days);
        let path = c.path.to_owned();
        for z in self.restricted_zip3.iter().flatten() {
            if z.len() != 3 || !z.bytes().all(|b| b.is_ascii_digit()) {
                c.at_node(format!(
                    "`{path}.restricted-zip3`: `{z}` is not three digits"
                ));
            }
        }
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let mut policy = Policy::default();
        let mut ok = true;
        for (class, action) in &self.actions {
            match Policy::with([(class.as_str(), action.get_ref().as_str())]) {
                Ok(_) => {}
                Err(e) => {
                    ok = false;
                    let d = r
                        .text
                        .diag_span(Some(action.span()), format!("`{}.actions`: {e}", r.path));
                    r.errors.push(d);
                }
            }
        }
        if ok {
            let all = self
                .actions
                .iter()
                .map(|(c, a)| (c.as_str(), a.get_ref().as_str()));
            if let Ok(p) = Policy::with(all) {
                policy = p;
            }
            self.policy.set(policy);
        }
        match r.input() {
            Some(input) => vec![("out", anonymized(r, *self.dates.get_ref(), input))],
            None => Vec::new(),
        }
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let key = match self.key.get_ref().load(&p.base, p.ephemeral) {
            Ok(key) => key,
            Err(message) => {
                let path = p.path.clone();
                p.at(self.key.span(), format!("{path}.key: {message}"));
                return None;
            }
        };
        let rows = p.input_schema().map(|input| {
            let plan = RowPlan::new(input, schema::patient_field(input));
            (Arc::new(plan), Arc::new(input.clone()))
        });
        let anonymizer = Anonymizer::new(Anonymization {
            key,
            dates: self.dates.get_ref().policy(self.max_shift_days),
            restricted_zip3: self
                .restricted_zip3
                .clone()
                .unwrap_or_else(Anonymization::default_restricted_zip3),
            policy: self.policy.get().map(|p| (**p).clone())?,
        });
        Some(Box::new(AnonymizeOp {
            anonymizer: Arc::new(anonymizer),
            rows,
        }))
    }
}

/// The rows an `anonymize` node outputs: every PHI field de-identified.
fn anonymized(r: &mut Resolve<'_>, dates: Dates, mut schema: Schema) -> Schema {
    if dates == Dates::Shift
        && schema.fields.iter().any(|f| f.phi == Some(Phi::Date))
        && schema::patient_field(&schema).is_none()
    {
        let path = r.path.to_owned();
        r.at_node(format!(
            "`{path}`: shifting dates needs the patient of each record: mark the patient id \
             field `phi = \"hash\"` (or use `dates = \"year\"`)"
        ));
    }
    for f in &mut schema.fields {
        match f.phi.take() {
            Some(Phi::Hash) => f.ty = Type::String,
            Some(Phi::Redact) => f.nullable = true,
            Some(Phi::Zip3) => {
                f.ty = Type::String;
                f.nullable = true;
            }
            Some(Phi::Date | Phi::Age) | None => {}
        }
    }
    schema
}

/// A planned anonymize node.
pub struct AnonymizeOp {
    /// The key, date policy and actions.
    pub anonymizer: Arc<Anonymizer>,
    /// Over rows: what to do with each field, and the rows' schema.
    pub rows: Option<(Arc<RowPlan>, Arc<Schema>)>,
}

impl Operator for AnonymizeOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let upstream = b.upstream_stage(&node.inputs);
        match &self.rows {
            Some((row_plan, schema)) => {
                let input = b.inputs(&node.inputs, as_rows);
                let logic = AnonymizeRowsLogic {
                    stage: name.to_owned(),
                    anonymizer: Arc::clone(&self.anonymizer),
                    plan: Arc::clone(row_plan),
                    schema: Arc::clone(schema),
                    report: DeidReport::default(),
                };
                let (o, d, s) = stage(input, Pipeline, name, logic, counters);
                b.output(name, "out", Port::Rows(o));
                b.output(name, "dead-letter", Port::Dead(d));
                b.stage_stats(name, s, SagaRole::Anonymization, upstream);
            }
            None => {
                let input = b.inputs(&node.inputs, as_clinical);
                let logic = AnonymizeLogic {
                    stage: name.to_owned(),
                    anonymizer: Arc::clone(&self.anonymizer),
                    report: DeidReport::default(),
                };
                let pact = Exchange::new(|r: &Ingested| route_hash(r.record.patient_id()));
                let (o, d, s) = stage(input, pact, name, logic, counters);
                b.output(name, "out", Port::Deid(o));
                b.output(name, "dead-letter", Port::Dead(d));
                b.stage_stats(name, s, SagaRole::Anonymization, upstream);
            }
        }
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
