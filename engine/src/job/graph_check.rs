//! Whole-graph validation: edges, port kinds, cycles, per-kind settings. Collects every error.

use std::collections::{BTreeMap, BTreeSet};

use vitalflow_operators::anonymize::Policy;

use super::{Diagnostic, JobText, Node, NodeKind, PortKind, Section, parse_duration};

/// Checks the graph and returns the nodes in dependency order. `unparsed` are the names of nodes
/// declared but not understood (already reported): inputs naming them are left unchecked.
pub(super) fn check(
    text: &JobText,
    nodes: Vec<Node>,
    unparsed: &BTreeMap<String, Section>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Node> {
    // A name used twice is reported at its second node, which is left out of the graph: the
    // edges naming it are checked against the first.
    let mut first: BTreeMap<String, Section> = BTreeMap::new();
    let mut nodes = nodes;
    nodes.retain(|n| match first.get(&n.name) {
        Some(section) => {
            errors.push(text.diag(
                n.span.start,
                format!(
                    "node name `{}` is already used by `{}.{}`: names must be unique across sections",
                    n.name,
                    section.as_str(),
                    n.name
                ),
            ));
            false
        }
        None => {
            first.insert(n.name.clone(), n.section);
            true
        }
    });
    let declares = |section: Section| {
        nodes.iter().any(|n| n.section == section) || unparsed.values().any(|s| *s == section)
    };
    if !declares(Section::Sources) {
        errors.push(text.diag(0, "the job has no source: add a [sources.NAME] table"));
    }
    if !declares(Section::Sinks) {
        errors.push(text.diag(0, "the job has no sink: add a [sinks.NAME] table"));
    }

    for n in &nodes {
        let path = format!("{}.{}", n.section.as_str(), n.name);
        check_settings(text, n, &path, errors);
        if n.section != Section::Sources && n.inputs.is_empty() {
            errors.push(text.diag(
                n.span.start,
                format!("`{path}.inputs` is empty: name at least one upstream port"),
            ));
        }
    }
    let nodes = topo_order(text, nodes, errors);
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    // The kinds reaching each node, resolved in dependency order (an `anonymize` node over rows
    // outputs rows).
    let mut received: BTreeMap<&str, BTreeSet<PortKind>> = BTreeMap::new();
    for n in &nodes {
        let path = format!("{}.{}", n.section.as_str(), n.name);
        let mut kinds = BTreeSet::new();
        for input in &n.inputs {
            let Some(up) = by_name.get(input.node.as_str()) else {
                if !unparsed.contains_key(&input.node) {
                    let names = by_name
                        .keys()
                        .copied()
                        .chain(unparsed.keys().map(String::as_str));
                    errors.push(text.diag(
                        input.span.start,
                        format!(
                            "`{path}.inputs`: no node named `{}`{}",
                            input.node,
                            super::did_you_mean(&input.node, names)
                        ),
                    ));
                }
                continue;
            };
            let Some(mut kind) = up.port_kind(&input.port) else {
                let ports: Vec<_> = up.kind.outputs().iter().map(|(p, _)| *p).collect();
                errors.push(text.diag(
                    input.span.start,
                    if ports.is_empty() {
                        format!(
                            "`{path}.inputs`: `{}` is a sink and has no output ports",
                            input.node
                        )
                    } else {
                        format!(
                            "`{path}.inputs`: `{}` has no port `{}`{} (its ports: {})",
                            input.node,
                            input.port,
                            super::did_you_mean(&input.port, ports.iter().copied()),
                            ports.join(", ")
                        )
                    },
                ));
                continue;
            };
            if matches!(up.kind, NodeKind::Anonymize(_))
                && input.port == "out"
                && received
                    .get(up.name.as_str())
                    .is_some_and(|k| k.contains(&PortKind::Rows))
            {
                kind = PortKind::Rows;
            }
            if !n.kind.accepts().contains(&kind) {
                let accepted: Vec<_> = n.kind.accepts().iter().map(|k| k.describe()).collect();
                errors.push(text.diag(
                    input.span.start,
                    format!(
                        "`{path}.inputs`: `{}.{}` carries {}, but a {} node takes {}",
                        input.node,
                        input.port,
                        kind.describe(),
                        n.kind.name(),
                        accepted.join(" or ")
                    ),
                ));
            }
            kinds.insert(kind);
        }
        if kinds.len() > 1 {
            errors.push(text.diag(
                n.span.start,
                format!(
                    "`{path}.inputs` mixes kinds ({}): a node takes one kind",
                    kinds
                        .iter()
                        .map(|k| k.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        received.insert(&n.name, kinds);
    }
    let _ = &received;
    drop(by_name);
    nodes
}

fn check_settings(text: &JobText, n: &Node, path: &str, errors: &mut Vec<Diagnostic>) {
    let duration = |s: &toml::Spanned<String>, field: &str, errors: &mut Vec<Diagnostic>| {
        if parse_duration(s.get_ref()).is_none() {
            errors.push(text.diag(
                s.span().start,
                format!(
                    "`{path}.{field}`: `{}` is not a duration (use e.g. `500ms`, `5s`, `1m`)",
                    s.get_ref()
                ),
            ));
        }
    };
    match &n.kind {
        NodeKind::File(f) => {
            check_file(text, n, f, path, errors);
            let formats = ["envelope", "fhir", "vitals-csv", "hl7v2", "json", "csv"];
            check_format(text, &f.format, &formats, "", path, errors);
            if f.format.get_ref() == "vitals-csv" && f.patient_id.is_none() {
                errors.push(text.diag(n.span.start, format!("`{path}`: format `vitals-csv` needs `patient-id` (the CSV has no patient column)")));
            }
        }
        NodeKind::Generator(g) if !["envelope", "flat"].contains(&g.format.get_ref().as_str()) => {
            errors.push(text.diag(
                g.format.span().start,
                format!(
                    "`{path}.format` must be `envelope` or `flat`, not `{}`",
                    g.format.get_ref()
                ),
            ));
        }
        NodeKind::Generator(g) => {
            if g.patients == 0 {
                errors.push(text.diag(
                    n.span.start,
                    format!("`{path}.patients` must be at least 1"),
                ));
            }
            if !(g.rate >= 0.0 && g.rate.is_finite()) {
                errors.push(text.diag(
                    n.span.start,
                    format!("`{path}.rate` must be 0 (unlimited) or a positive number"),
                ));
            }
            if let Some(start) = &g.start
                && chrono::DateTime::parse_from_rfc3339(start).is_err()
            {
                errors.push(text.diag(
                    n.span.start,
                    format!("`{path}.start`: not an RFC 3339 time"),
                ));
            }
        }
        NodeKind::Anonymize(a) => {
            key_and_dates(text, path, &a.key, &a.dates, a.max_shift_days, errors);
            for (class, action) in &a.actions {
                if let Err(e) = Policy::with([(class.as_str(), action.get_ref().as_str())]) {
                    errors.push(
                        text.diag_span(Some(action.span()), format!("`{path}.actions`: {e}")),
                    );
                }
            }
            for z in a.restricted_zip3.iter().flatten() {
                if z.len() != 3 || !z.bytes().all(|b| b.is_ascii_digit()) {
                    errors.push(text.diag(
                        n.span.start,
                        format!("`{path}.restricted-zip3`: `{z}` is not three digits"),
                    ));
                }
            }
        }
        NodeKind::Kafka(k) => {
            let f = k.as_file();
            check_file(text, n, &f, path, errors);
            let formats = ["envelope", "fhir", "hl7v2", "json", "csv"];
            check_format(
                text,
                &k.format,
                &formats,
                " for a Kafka topic",
                path,
                errors,
            );
            duration(&k.out_of_orderness, "out-of-orderness", errors);
            duration(&k.idle_timeout, "idle-timeout", errors);
            if k.max_drift.get_ref() != "off" && parse_duration(k.max_drift.get_ref()).is_none() {
                errors.push(text.diag(
                    k.max_drift.span().start,
                    format!(
                        "`{path}.max-drift`: `{}` is neither a duration (e.g. `30s`, `1m`) nor `off`",
                        k.max_drift.get_ref()
                    ),
                ));
            }
            duration(&k.granularity, "granularity", errors);
            if parse_duration(k.granularity.get_ref()).is_some_and(|d| d.is_zero()) {
                errors.push(text.diag(
                    k.granularity.span().start,
                    format!("`{path}.granularity` must be at least 1ms"),
                ));
            }
            if !matches!(k.stop.get_ref().as_str(), "never" | "end") {
                errors.push(text.diag(
                    k.stop.span().start,
                    format!(
                        "`{path}.stop`: `{}` is not `never` or `end`",
                        k.stop.get_ref()
                    ),
                ));
            }
            kafka_common(text, n, &k.topic, k.partitions, path, errors);
        }
        NodeKind::KafkaSink(k) => kafka_common(text, n, &k.topic, k.partitions, path, errors),
        NodeKind::Parquet(p) => duration(&p.roll_interval, "roll-interval", errors),
        NodeKind::Jsonl(j) => duration(&j.roll_interval, "roll-interval", errors),
        NodeKind::Window(w, _) => {
            for (field, value) in [
                ("size", w.size.as_ref()),
                ("slide", w.slide.as_ref()),
                ("gap", w.gap.as_ref()),
                ("allowed-lateness", Some(&w.allowed_lateness)),
                ("watermark-delay", Some(&w.watermark_delay)),
            ] {
                if let Some(v) = value {
                    duration(v, field, errors);
                }
            }
        }
        NodeKind::Join(j) if j.history.get_ref() != "forever" => {
            duration(&j.history, "history", errors);
        }
        NodeKind::Alert(a) => {
            key_and_dates(text, path, &a.key, &a.dates, a.max_shift_days, errors);
            duration(&a.freshness, "freshness", errors);
            duration(&a.resolve_after, "resolve-after", errors);
            duration(&a.suppress_for, "suppress-for", errors);
            let level = |v: &toml::Spanned<String>, field: &str, errors: &mut Vec<Diagnostic>| {
                if vitalflow_operators::alert::monitor::parse_level(v.get_ref()).is_none() {
                    errors.push(text.diag(
                        v.span().start,
                        format!(
                            "`{path}.{field}` must be `low`, `low-medium`, `medium` or `high`, \
                             not `{}`",
                            v.get_ref()
                        ),
                    ));
                }
            };
            if let Some(n2) = &a.news2 {
                level(&n2.raise_at, "news2.raise-at", errors);
            }
            if a.news2.is_none() && a.rules.is_empty() {
                errors.push(text.diag(
                    n.span.start,
                    format!(
                        "`{path}`: an alert needs `[{path}.news2]` (where the NEWS2 parameters \
                         come from), rules (`[{path}.rules.NAME]` with `when = \"...\"`), or both"
                    ),
                ));
            }
            for (name, r) in &a.rules {
                level(&r.level, &format!("rules.{name}.level"), errors);
                if let Some(f) = &r.sustain {
                    duration(f, &format!("rules.{name}.for"), errors);
                }
                match &r.window {
                    Some(w) => duration(w, &format!("rules.{name}.window"), errors),
                    None if !r.aggregates.is_empty() => errors.push(text.diag(
                        r.when.span().start,
                        format!(
                            "`{path}.rules.{name}` has `aggregates` but no `window` (how far back \
                             they look, e.g. `window = \"15m\"`)"
                        ),
                    )),
                    None => {}
                }
            }
        }
        NodeKind::Ingest(c) => {
            for (code, target) in &c.codes {
                if vitalflow_operators::ingest::CodeTarget::parse(target.get_ref()).is_none() {
                    errors.push(text.diag_span(
                        Some(target.span()),
                        format!(
                            "`{path}.codes.\"{code}\"`: `{}` is neither the LOINC code of a \
                             vital sign (or 8480-6 / 8462-4) nor a vital-sign name",
                            target.get_ref()
                        ),
                    ));
                }
            }
        }
        NodeKind::Canonize
        | NodeKind::Audit
        | NodeKind::DeadLetter(_)
        | NodeKind::Filter(_)
        | NodeKind::Map { .. }
        | NodeKind::KeyBy(_)
        | NodeKind::Join(_)
        | NodeKind::Console(_)
        | NodeKind::Blackhole(_) => {}
    }
}

fn check_format(
    text: &JobText,
    format: &toml::Spanned<String>,
    formats: &[&str],
    context: &str,
    path: &str,
    errors: &mut Vec<Diagnostic>,
) {
    if !formats.contains(&format.get_ref().as_str()) {
        errors.push(text.diag(
            format.span().start,
            format!(
                "`{path}.format`: unknown format `{}`{context} (expected one of: {})",
                format.get_ref(),
                formats.join(", ")
            ),
        ));
    }
}

fn kafka_common(
    text: &JobText,
    n: &Node,
    topic: &toml::Spanned<String>,
    partitions: i32,
    path: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let name = topic.get_ref();
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 249 || !name.chars().all(legal) {
        errors.push(text.diag(
            topic.span().start,
            format!(
                "`{path}.topic`: `{name}` is not a Kafka topic name \
                 (1 to 249 of a-z, A-Z, 0-9, `.`, `_`, `-`)"
            ),
        ));
    }
    if partitions < 1 {
        errors.push(text.diag(
            n.span.start,
            format!("`{path}.partitions` must be at least 1"),
        ));
    }
}

/// A file source's schema settings belong to the `json` and `csv` formats, which need them.
fn check_file(
    text: &JobText,
    n: &Node,
    f: &super::config::FileConfig,
    path: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let format = f.format.get_ref().as_str();
    let declared = matches!(format, "json" | "csv");
    if declared && f.fields.is_none() {
        errors.push(text.diag(
            f.format.span().start,
            format!(
                "`{path}`: format `{format}` needs a declared schema: \
                 `fields = [{{ name = \"...\", type = \"...\" }}, ...]`"
            ),
        ));
    }
    if !declared {
        let misplaced = [
            ("fields", f.fields.as_ref().map(toml::Spanned::span)),
            ("event-time", f.event_time.as_ref().map(toml::Spanned::span)),
            ("key", f.key.as_ref().map(toml::Spanned::span)),
        ];
        for (field, span) in misplaced {
            if let Some(span) = span {
                errors.push(text.diag(
                    span.start,
                    format!(
                        "`{path}.{field}` applies to the `json` and `csv` formats only, \
                         not `{format}`"
                    ),
                ));
            }
        }
    }
    if f.header.is_some() && format != "csv" {
        errors.push(text.diag(
            n.span.start,
            format!("`{path}.header` applies to the `csv` format only"),
        ));
    }
}

/// Kahn's algorithm; reports the nodes of a cycle if there is one.
fn topo_order(text: &JobText, nodes: Vec<Node>, errors: &mut Vec<Diagnostic>) -> Vec<Node> {
    let names: BTreeSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let mut indegree: BTreeMap<&str, usize> = names.iter().map(|n| (*n, 0)).collect();
    for n in &nodes {
        let ups: BTreeSet<&str> = n
            .inputs
            .iter()
            .map(|i| i.node.as_str())
            .filter(|u| names.contains(u))
            .collect();
        *indegree.entry(&n.name).or_default() = ups.len();
    }
    let mut order: Vec<String> = Vec::new();
    let mut ready: Vec<&str> = nodes
        .iter()
        .filter(|n| indegree.get(n.name.as_str()) == Some(&0))
        .map(|n| n.name.as_str())
        .collect();
    ready.reverse();
    while let Some(done) = ready.pop() {
        order.push(done.to_owned());
        for n in &nodes {
            let ups: BTreeSet<&str> = n.inputs.iter().map(|i| i.node.as_str()).collect();
            if ups.contains(done)
                && let Some(d) = indegree.get_mut(n.name.as_str())
                && *d > 0
            {
                *d -= 1;
                if *d == 0 {
                    ready.insert(0, &n.name);
                }
            }
        }
    }
    if order.len() < names.len() {
        let in_cycle: Vec<&Node> = nodes.iter().filter(|n| !order.contains(&n.name)).collect();
        let cycle: Vec<&str> = in_cycle.iter().map(|n| n.name.as_str()).collect();
        if let Some(first) = in_cycle.first() {
            errors.push(text.diag(
                first.span.start,
                format!(
                    "the graph has a cycle through: {} (a job must be a DAG)",
                    cycle.join(" → ")
                ),
            ));
        }
    }
    let mut nodes = nodes;
    nodes.sort_by_key(|n| {
        order
            .iter()
            .position(|o| *o == n.name)
            .unwrap_or(usize::MAX)
    });
    nodes
}

/// Port kinds that are never written by a general sink (documented safety rule).
#[allow(dead_code)]
pub(super) const PHI_KINDS: [PortKind; 2] = [PortKind::Clinical, PortKind::DeadLetter];

/// A pseudonymization key source and a date policy (`anonymize`, `alert`).
fn key_and_dates(
    text: &JobText,
    path: &str,
    key: &toml::Spanned<String>,
    dates: &toml::Spanned<String>,
    max_shift_days: u32,
    errors: &mut Vec<Diagnostic>,
) {
    let k = key.get_ref();
    let ok = k == "ephemeral"
        || k.strip_prefix("env:").is_some_and(|v| !v.is_empty())
        || k.strip_prefix("file:").is_some_and(|v| !v.is_empty());
    if !ok {
        errors.push(text.diag(
            key.span().start,
            format!("`{path}.key` must be `env:NAME`, `file:PATH` or `ephemeral`"),
        ));
    }
    if !["shift", "year"].contains(&dates.get_ref().as_str()) {
        errors.push(text.diag(
            dates.span().start,
            format!(
                "`{path}.dates` must be `shift` or `year`, not `{}`",
                dates.get_ref()
            ),
        ));
    }
    // A shift is 1 to `max-shift-days` days: never 0, which would keep the true dates.
    if dates.get_ref() == "shift" && max_shift_days == 0 {
        errors.push(text.diag(
            dates.span().start,
            format!("`{path}.max-shift-days` must be at least 1 when dates are shifted"),
        ));
    }
}
