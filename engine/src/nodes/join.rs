//! `kind = "join"`: each stream record joined to the version of a table valid at its event
//! time (an as-of join). The table is the node's last input.

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_model::row::Schema;
use vitalflow_operators::expression::Compiled;

use super::settings::{Duration, DurationOr, OrForever, words};
use super::{NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::schema::{expression, input_schema, port_key, type_name, unknown_field};
use crate::job::{Diagnostic, PortKind};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::joins::{self, JoinPlan, Missing};

words! {
    /// Which stream records a join passes.
    JoinType, "join type" {
        /// Only records whose key has a table row.
        Inner = "inner",
        /// Every record, the table's fields null when its key has no row.
        Left = "left",
    }
}

words! {
    /// What an inner join does with a record whose key has no table row.
    OnMissing, "on-missing action" {
        /// Drops it.
        Drop = "drop",
        /// Passes it with the table's fields null (a left join).
        Null = "null",
        /// Sends it to the dead-letter port.
        DeadLetter = "dead-letter",
    }
}

/// `kind = "join"`: each stream record joined to the table's version valid at its event time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JoinConfig {
    /// Always `"join"`.
    pub kind: String,
    /// The stream: upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// The table: a rows port (`node` or `node.port`) of upserts, keyed. Required.
    pub table: Option<Spanned<String>>,
    /// The stream's key expression. Default: the stream's declared key.
    pub key: Option<Spanned<String>>,
    /// The table's key field. Default: the table's declared key.
    pub table_key: Option<Spanned<String>>,
    /// The table fields added to each record. Default: all but its key and event time.
    pub fields: Option<Vec<Spanned<String>>>,
    /// Prepended to the names of the added fields. Default: none.
    #[serde(default)]
    pub prefix: String,
    /// `inner` or `left`. Default: `inner`.
    #[serde(rename = "type", default = "inner")]
    pub join: Spanned<JoinType>,
    /// A record whose key has no row at its time: `drop`, `null` (pass it with the table's
    /// fields null) or `dead-letter`. Default: `drop` for inner joins, `null` for left joins.
    pub on_missing: Option<Spanned<OnMissing>>,
    /// How long (in event time, behind the stream's watermark) a superseded table version is
    /// kept for records that arrive late; `forever` keeps every version. Default: `1h`.
    #[serde(default = "history")]
    pub history: OrForever,
    /// The compiled join, once resolved.
    #[serde(skip)]
    pub(crate) parts: Resolved<JoinParts>,
}

fn inner() -> Spanned<JoinType> {
    Spanned::new(0..0, JoinType::Inner)
}

const fn history() -> OrForever {
    DurationOr(Some(Duration::from_millis(3_600_000)))
}

impl NodeSpec for JoinConfig {
    fn parse(d: &mut super::Decode<'_, '_>) -> Option<Self> {
        let c: Self = d.decode()?;
        if c.table.is_none() {
            let path = d.path.to_owned();
            d.at_node(format!(
                "`{path}`: a join needs a `table` (the node whose rows form the table)"
            ));
            return None;
        }
        Some(c)
    }

    fn kind(&self) -> &'static str {
        "join"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        let mut inputs = self.inputs.clone();
        inputs.extend(self.table.clone());
        inputs
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Rows),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Rows]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let (output, parts) = join_check(r, self);
        match parts {
            Ok(p) => self.parts.set(p),
            Err(d) => r.errors.extend(d),
        }
        output.map(|s| vec![("out", s)]).unwrap_or_default()
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let parts = p.resolved(&self.parts)?;
        let plan = JoinPlan {
            name: p.node.name.clone(),
            table: parts.table.0.clone(),
            key: Arc::clone(&parts.key),
            time: parts.time,
            table_key: parts.table_key,
            table_time: parts.table_time,
            take: parts.take.clone(),
            missing: parts.missing,
            history: parts.history,
            bounded_table: !p.kafka.job,
            schema: Arc::new(parts.stream.clone()),
        };
        Some(Box::new(JoinOp {
            plan: Arc::new(plan),
            table: parts.table.clone(),
        }))
    }
}

/// A `join` node, checked and compiled.
pub struct JoinParts {
    /// The stream's key expression.
    pub key: Arc<Compiled>,
    /// The stream's event-time field.
    pub time: usize,
    /// The table node and port.
    pub table: (String, String),
    /// The table's key field.
    pub table_key: usize,
    /// The table's event-time field.
    pub table_time: Option<usize>,
    /// The table fields added.
    pub take: Vec<usize>,
    /// Unmatched records.
    pub missing: Missing,
    /// Version history (ms).
    pub history: i64,
    /// The stream's schema.
    pub stream: Schema,
    /// Stream fields, then the added table fields.
    pub output: Schema,
}

/// Checks a `join` node: the schema of its output, when its inputs have schemas, and the compiled
/// node or every problem.
fn join_check(
    r: &Resolve<'_>,
    c: &JoinConfig,
) -> (Option<Schema>, Result<JoinParts, Vec<Diagnostic>>) {
    let (text, path, schemas) = (r.text, r.path, r.schemas);
    let mut errors = Vec::new();
    let Some((table_ref, stream_refs)) = r.inputs.split_last() else {
        return (None, Err(errors));
    };
    let stream = input_schema(text, stream_refs, path, schemas, &mut errors);
    let table = schemas.get(&port_key(&table_ref.node, &table_ref.port));
    let (Some(stream), Some(table)) = (stream, table) else {
        // Port kinds were reported by the graph check.
        return (None, Err(errors));
    };
    let at_node = |message: String| text.diag(r.span.start, message);
    if stream.time.is_none() {
        errors.push(at_node(format!(
            "`{path}`: the stream has no event-time field: declare `event-time` on its source \
             (a record joins the table version valid at its event time)"
        )));
    }
    let key_source = c.key.clone().or_else(|| {
        stream
            .key
            .map(|k| Spanned::new(r.span.clone(), stream.fields[k].name.clone()))
    });
    let key = match &key_source {
        None => {
            errors.push(at_node(format!(
                "`{path}`: the stream has no declared key: set `key` (an expression)"
            )));
            None
        }
        Some(k) => match expression(text, k, &stream, &format!("{path}.key")) {
            Ok(e) => Some(e),
            Err(d) => {
                errors.extend(d);
                None
            }
        },
    };
    let table_key = match &c.table_key {
        Some(k) => match table.index(k.get_ref()) {
            Some(i) => Some(i),
            None => {
                errors.push(unknown_field(text, k, path, "table-key", table));
                None
            }
        },
        None => {
            if table.key.is_none() {
                errors.push(at_node(format!(
                    "`{path}`: table `{}` has no declared key: set `table-key`",
                    table_ref.node
                )));
            }
            table.key
        }
    };
    if let (Some(k), Some(tk)) = (&key, table_key) {
        let (a, b) = (k.ty(), Some(table.fields[tk].ty));
        if a != b {
            errors.push(at_node(format!(
                "`{path}`: the stream's key is {} but the table's key `{}` is {}",
                type_name(a),
                table.fields[tk].name,
                type_name(b)
            )));
        }
    }
    let take: Vec<usize> = match &c.fields {
        Some(list) => list
            .iter()
            .filter_map(|f| {
                let i = table.index(f.get_ref());
                if i.is_none() {
                    errors.push(unknown_field(text, f, path, "fields", table));
                }
                i
            })
            .collect(),
        None => (0..table.fields.len())
            .filter(|i| Some(*i) != table_key && Some(*i) != table.time)
            .collect(),
    };
    let mut output = stream.clone();
    for i in &take {
        let mut f = table.fields[*i].clone();
        f.name = format!("{}{}", c.prefix, f.name);
        f.nullable = true;
        if output.index(&f.name).is_some() {
            errors.push(at_node(format!(
                "`{path}`: the stream already has a field `{}`: set `prefix` (e.g. `prefix = \"{}_\"`) or list `fields`",
                f.name, table_ref.node
            )));
        }
        output.fields.push(f);
    }
    let inner = *c.join.get_ref() == JoinType::Inner;
    let missing = match (c.on_missing.as_ref().map(|m| *m.get_ref()), inner) {
        (None | Some(OnMissing::Drop), true) => Missing::Drop,
        (None | Some(OnMissing::Null), false) => Missing::Null,
        (Some(OnMissing::DeadLetter), true) => Missing::DeadLetter,
        (Some(m), _) => {
            let span = c
                .on_missing
                .as_ref()
                .map_or(r.span.start, |s| s.span().start);
            let m = m.as_str();
            errors.push(text.diag(
                span,
                if inner {
                    format!("`{path}.on-missing`: an inner join takes `drop` or `dead-letter`, not `{m}` (`null` is a left join)")
                } else {
                    format!("`{path}.on-missing`: a left join passes unmatched records with nulls; `{m}` is for inner joins")
                },
            ));
            Missing::Drop
        }
    };
    let shape = Some(output.clone());
    let (Some(key), Some(time), Some(table_key), true) =
        (key, stream.time, table_key, errors.is_empty())
    else {
        return (shape, Err(errors));
    };
    let parts = JoinParts {
        key: Arc::new(key),
        time,
        table: (table_ref.node.clone(), table_ref.port.clone()),
        table_key,
        table_time: table.time,
        take,
        missing,
        history: c.history.0.map_or(i64::MAX, Duration::millis_i64),
        stream,
        output,
    };
    (shape, Ok(parts))
}

/// A planned join.
pub struct JoinOp {
    /// The compiled join.
    pub plan: Arc<JoinPlan>,
    /// The table's node and port.
    pub table: (String, String),
}

impl Operator for JoinOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let stream_inputs = &node.inputs[..node.inputs.len().saturating_sub(1)];
        let stream = b.inputs(stream_inputs, as_rows);
        let (table_node, table_port) = &self.table;
        let table = b
            .port(table_node, table_port)
            .and_then(|t| as_rows(&t))
            .unwrap_or_else(|| timely::dataflow::operators::generic::operator::empty(b.scope));
        let (o, d) = joins::join(stream, table, Arc::clone(&self.plan), counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
