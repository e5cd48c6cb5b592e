//! `kind = "window"`: event-time windows per key (tumbling, sliding, session), with aggregates.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;
use vitalflow_model::row::{Field, Schema, Type};
use vitalflow_operators::expression::Compiled;
use vitalflow_operators::window::{AggFn, AggSpec, WindowKind, WindowSpec};

use super::settings::{Duration, words};
use super::{Decode, NodeSpec, Operator, Output, Prepare, Resolve, Resolved};
use crate::job::schema::{Gaps, aggregate_call, bare_field, event_time, expression, taint, whole};
use crate::job::{Diagnostic, JobText, PortKind};
use crate::runtime::builder::{Builder, PlannedNode, Port, as_rows};
use crate::runtime::windows::{self, WindowPlan};

words! {
    /// A window's shape.
    Shape, "window" {
        /// Fixed, non-overlapping windows of `size`.
        Tumbling = "tumbling",
        /// Windows of `size` starting every `slide`.
        Sliding = "sliding",
        /// Windows of activity ended by a `gap`.
        Session = "session",
    }
}

/// `kind = "window"`: event-time windows per key, with aggregates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WindowConfig {
    /// Always `"window"`.
    pub kind: String,
    /// Upstream ports (rows of one schema, with an event-time field).
    pub inputs: Vec<Spanned<String>>,
    /// `tumbling`, `sliding` or `session`. Required.
    pub window: Option<Spanned<Shape>>,
    /// The key expression: windows are per value of it. Required.
    pub key: Option<Spanned<String>>,
    /// The output field of a computed key. Default: `key` (a bare field keeps its name).
    #[serde(rename = "as")]
    pub key_as: Option<String>,
    /// Tumbling and sliding windows: their length (`5m`, `30s`). Required for them.
    pub size: Option<Spanned<Duration>>,
    /// Sliding windows: how far apart window starts are; at most `size`. Required for them.
    pub slide: Option<Spanned<Duration>>,
    /// Session windows: the inactivity that ends a session. Required for them.
    pub gap: Option<Spanned<Duration>>,
    /// How long after a window's end (in event time) late records still correct it. Default:
    /// `0s`.
    #[serde(default)]
    pub allowed_lateness: Duration,
    /// How far the watermark stays behind the largest event time seen (bounded
    /// out-of-orderness). Default: `0s`.
    #[serde(default)]
    pub watermark_delay: Duration,
    /// Output field name → aggregate (`count()`, `mean(hr)`, ...), in order. Required.
    #[serde(rename = "aggregates")]
    pub aggregates_table: Option<Spanned<serde::de::IgnoredAny>>,
    /// The aggregates, in declared order, with their places in the job file.
    #[serde(skip)]
    pub aggregates: Vec<(Spanned<String>, Spanned<String>)>,
    /// The compiled window, once resolved.
    #[serde(skip)]
    pub(crate) parts: Resolved<WindowParts>,
}

impl NodeSpec for WindowConfig {
    fn parse(d: &mut Decode<'_, '_>) -> Option<Self> {
        let mut c: Self = d.decode()?;
        if c.aggregates_table.is_none() {
            let path = d.path.to_owned();
            d.at_node(format!(
                "`{path}`: a window needs `aggregates`, e.g. \
                 `[{path}.aggregates]` with `n = \"count()\"`"
            ));
            return None;
        }
        c.aggregates = d.named_strings("aggregates", "an aggregate")?;
        Some(c)
    }

    fn kind(&self) -> &'static str {
        "window"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        &[
            ("out", PortKind::Rows),
            ("late", PortKind::Rows),
            ("dead-letter", PortKind::DeadLetter),
        ]
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Rows]
    }

    fn resolve(&mut self, r: &mut Resolve<'_>) -> Vec<(&'static str, Schema)> {
        let Some(input) = r.input() else {
            return Vec::new();
        };
        let (output, gaps, parts) = window_check(r.text, r.span.start, r.path, self, &input);
        match parts {
            Ok(p) => self.parts.set(p),
            Err(d) => r.errors.extend(d),
        }
        r.gaps.extend(&gaps);
        vec![("out", output), ("late", input)]
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let parts = p.resolved(&self.parts)?;
        let input = p.rows()?;
        let plan = WindowPlan {
            name: p.node.name.clone(),
            spec: Arc::new(WindowSpec {
                kind: parts.kind,
                lateness: parts.lateness,
                aggs: parts.aggs.iter().map(|(a, _)| a.clone()).collect(),
            }),
            key: Arc::clone(&parts.key),
            time: parts.time,
            args: parts.aggs.iter().map(|(_, a)| a.clone()).collect(),
            delay: parts.delay,
            granularity_ms: p.kafka.granularity_ms,
            schema: Arc::new(input),
        };
        Some(Box::new(WindowOp {
            plan: Arc::new(plan),
        }))
    }
}

/// A `window` node, checked and compiled.
pub struct WindowParts {
    /// Window shape.
    pub kind: WindowKind,
    /// Allowed lateness (ms).
    pub lateness: i64,
    /// Watermark delay (ms).
    pub delay: i64,
    /// The key expression.
    pub key: Arc<Compiled>,
    /// The input's event-time field.
    pub time: usize,
    /// Each aggregate and its compiled argument.
    pub aggs: Vec<(AggSpec, Option<Arc<Compiled>>)>,
    /// The output rows: key, `window_start`, `window_end`, aggregates, `revision`, `diff`.
    pub output: Schema,
}

/// Fields every window output has besides the key and the aggregates.
const WINDOW_FIELDS: [&str; 4] = ["window_start", "window_end", "revision", "diff"];

/// Checks a `window` node: the schema of its output without what failed, what failed, and the
/// compiled node or every problem.
fn window_check(
    text: &JobText,
    at: usize,
    path: &str,
    c: &WindowConfig,
    input: &Schema,
) -> (Schema, Gaps, Result<WindowParts, Vec<Diagnostic>>) {
    let mut errors = Vec::new();
    let mut gaps = Gaps::default();
    let time = event_time(text, at, path, input, &mut errors);
    let key = window_key(text, at, path, c, input, &mut errors);
    let kind = window_kind(text, at, path, c, &mut errors);
    let key_name = match (&c.key, &key) {
        (Some(k), Some(_)) => bare_field(k.get_ref(), input)
            .map(|i| input.fields[i].name.clone())
            .unwrap_or_else(|| c.key_as.clone().unwrap_or_else(|| "key".to_owned())),
        _ => "key".to_owned(),
    };
    let mut output = Schema {
        fields: Vec::new(),
        time: Some(1),
        key: Some(0),
    };
    if let (Some(k), Some(src)) = (&key, &c.key) {
        let ty = k.ty().unwrap_or(Type::String);
        output.fields.push(Field {
            name: key_name.clone(),
            ty,
            nullable: k.nullable(),
            phi: taint(k, src.get_ref(), input, ty),
        });
    }
    // Window bounds are dates of the individual a PHI key identifies: they keep the event
    // time's PHI action. Bounds of groups (wards, codes) are not about one person.
    let key_is_phi = output.fields.first().is_some_and(|f| f.phi.is_some());
    let bound_phi = time
        .and_then(|t| input.fields.get(t))
        .and_then(|f| f.phi)
        .filter(|_| key_is_phi);
    let stamp = |name: &str| Field {
        name: name.to_owned(),
        ty: Type::Timestamp,
        nullable: false,
        phi: bound_phi,
    };
    output.fields.push(stamp("window_start"));
    output.fields.push(stamp("window_end"));
    let aggs = window_aggregates(
        text,
        path,
        c,
        input,
        &key_name,
        &mut output,
        &mut gaps,
        &mut errors,
    );
    for name in ["revision", "diff"] {
        output.fields.push(Field {
            name: name.to_owned(),
            ty: Type::Int,
            nullable: false,
            phi: None,
        });
    }
    if key.is_none() {
        output.time = Some(0);
        output.key = None;
        gaps.key = true;
        gaps.fields.insert(key_name);
    }
    let shape = output.clone();
    let (Some(kind), Some(key), Some(time), true) = (kind, key, time, errors.is_empty()) else {
        return (shape, gaps, Err(errors));
    };
    let parts = WindowParts {
        kind,
        lateness: c.allowed_lateness.millis_i64(),
        delay: c.watermark_delay.millis_i64(),
        key: Arc::new(key),
        time,
        aggs,
        output,
    };
    (shape, gaps, Ok(parts))
}

/// A window's key expression, compiled.
fn window_key(
    text: &JobText,
    at: usize,
    path: &str,
    c: &WindowConfig,
    input: &Schema,
    errors: &mut Vec<Diagnostic>,
) -> Option<Compiled> {
    let at_node = |message: String| text.diag(at, message);
    match &c.key {
        None => {
            errors.push(at_node(format!(
                "`{path}`: a window needs a `key` (an expression: windows are per value of it)"
            )));
            None
        }
        Some(k) => match expression(text, k, input, &format!("{path}.key")) {
            Ok(e) if e.ty().is_none() => {
                errors.push(whole(
                    text,
                    k,
                    format!("`{path}.key`: a key cannot be `null`"),
                ));
                None
            }
            Ok(e) => Some(e),
            Err(d) => {
                errors.extend(d);
                None
            }
        },
    }
}

/// A window's shape and lengths (ms).
fn window_kind(
    text: &JobText,
    at: usize,
    path: &str,
    c: &WindowConfig,
    errors: &mut Vec<Diagnostic>,
) -> Option<WindowKind> {
    let at_node = |message: String| text.diag(at, message);
    let positive =
        |v: &Option<Spanned<Duration>>, field: &str, errors: &mut Vec<Diagnostic>| match v {
            None => {
                errors.push(at_node(format!("`{path}`: this window needs `{field}`")));
                None
            }
            Some(d) if d.get_ref().millis_i64() <= 0 => {
                errors.push(text.diag(
                    d.span().start,
                    format!("`{path}.{field}` must be longer than 0"),
                ));
                None
            }
            Some(d) => Some(d.get_ref().millis_i64()),
        };
    let unused =
        |v: &Option<Spanned<Duration>>, field: &str, shape: &str, errors: &mut Vec<Diagnostic>| {
            if let Some(d) = v {
                errors.push(text.diag(
                    d.span().start,
                    format!("`{path}.{field}` does not apply to {shape} windows"),
                ));
            }
        };
    match c.window.as_ref().map(|w| *w.get_ref()) {
        None => {
            errors.push(at_node(format!(
                "`{path}`: a window needs `window = \"tumbling\"`, `\"sliding\"` or `\"session\"`"
            )));
            None
        }
        Some(Shape::Tumbling) => {
            unused(&c.slide, "slide", "tumbling", errors);
            unused(&c.gap, "gap", "tumbling", errors);
            positive(&c.size, "size", errors).map(|size| WindowKind::Tumbling { size })
        }
        Some(Shape::Sliding) => {
            unused(&c.gap, "gap", "sliding", errors);
            let size = positive(&c.size, "size", errors);
            let slide = positive(&c.slide, "slide", errors);
            match (size, slide) {
                (Some(size), Some(slide)) if slide > size => {
                    if let Some(s) = &c.slide {
                        errors.push(text.diag(
                            s.span().start,
                            format!("`{path}.slide` must be at most `size` (a record would fall in no window)"),
                        ));
                    }
                    None
                }
                (Some(size), Some(slide)) => Some(WindowKind::Sliding { size, slide }),
                _ => None,
            }
        }
        Some(Shape::Session) => {
            unused(&c.size, "size", "session", errors);
            unused(&c.slide, "slide", "session", errors);
            positive(&c.gap, "gap", errors).map(|gap| WindowKind::Session { gap })
        }
    }
}

/// A window's aggregates, each added to `output` (those that fail are noted in `gaps`).
#[allow(clippy::too_many_arguments)]
fn window_aggregates(
    text: &JobText,
    path: &str,
    c: &WindowConfig,
    input: &Schema,
    key_name: &str,
    output: &mut Schema,
    gaps: &mut Gaps,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(AggSpec, Option<Arc<Compiled>>)> {
    let mut aggs = Vec::new();
    let mut names = BTreeSet::new();
    for (name, source) in &c.aggregates {
        let what = format!("{path}.aggregates.{}", name.get_ref());
        if WINDOW_FIELDS.contains(&name.get_ref().as_str()) || *name.get_ref() == *key_name {
            errors.push(text.diag(
                name.span().start,
                format!(
                    "`{what}`: `{}` is a field every window row has; name the aggregate otherwise",
                    name.get_ref()
                ),
            ));
            continue;
        }
        if !names.insert(name.get_ref().clone()) {
            errors.push(text.diag(
                name.span().start,
                format!("`{path}.aggregates`: `{}` is given twice", name.get_ref()),
            ));
            continue;
        }
        let Some((func, arg, compiled)) = aggregate_call(text, source, input, &what, errors) else {
            gaps.fields.insert(name.get_ref().clone());
            continue;
        };
        let arg_ty = compiled.as_ref().and_then(Compiled::ty);
        let ty = match func.result_type(arg_ty) {
            Ok(t) => t,
            Err(message) => {
                errors.push(whole(
                    text,
                    source,
                    format!("`{what}`: `{}` {message}", source.get_ref().trim()),
                ));
                gaps.fields.insert(name.get_ref().clone());
                continue;
            }
        };
        // Counts are not PHI; every other aggregate is a value of its argument.
        let counts = matches!(func, AggFn::Count | AggFn::CountDistinct);
        let phi = match (&compiled, arg) {
            (Some(e), Some((arg_text, _))) if !counts => taint(e, arg_text, input, ty),
            _ => None,
        };
        output.fields.push(Field {
            name: name.get_ref().clone(),
            ty,
            nullable: !counts,
            phi,
        });
        aggs.push((AggSpec { func, arg: arg_ty }, compiled.map(Arc::new)));
    }
    aggs
}

/// A planned window.
pub struct WindowOp {
    /// The compiled window.
    pub plan: Arc<WindowPlan>,
}

impl Operator for WindowOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_rows);
        let (o, late, d) = windows::window(input, Arc::clone(&self.plan), counters);
        b.output(name, "out", Port::Rows(o));
        b.output(name, "late", Port::Rows(late));
        b.output(name, "dead-letter", Port::Dead(d));
    }

    fn output(&self) -> Output {
        Output::Ports
    }
}
