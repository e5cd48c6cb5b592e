//! Whole-graph validation: edges, port kinds, cycles, per-kind settings. Collects every error.

use std::collections::{BTreeMap, BTreeSet};

use super::{Diagnostic, JobText, Node, NodeKind, PortKind, Section};

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
    for n in &nodes {
        audited(text, n, &nodes, errors);
    }
    let _ = &received;
    drop(by_name);
    nodes
}

/// A clinical delivery sink (one that takes identified notifications) must have its `audit`
/// port read by an `audit` node: every disclosure of PHI is recorded.
fn audited(text: &JobText, n: &Node, nodes: &[Node], errors: &mut Vec<Diagnostic>) {
    if !n.kind.accepts().contains(&PortKind::Notification) {
        return;
    }
    let read = nodes.iter().any(|m| {
        matches!(m.kind, NodeKind::Audit(_))
            && m.inputs
                .iter()
                .any(|i| i.node == n.name && i.port == "audit")
    });
    if !read {
        let path = format!("{}.{}", n.section.as_str(), n.name);
        errors.push(text.diag(
            n.span.start,
            format!(
                "`{path}` delivers identified notifications, and every delivery must be \
                 audited: add `\"{}.audit\"` to the inputs of an `audit` node",
                n.name
            ),
        ));
    }
}

fn check_settings(text: &JobText, n: &Node, path: &str, errors: &mut Vec<Diagnostic>) {
    let mut c = crate::nodes::Check {
        text,
        node: n,
        path,
        errors,
    };
    n.kind.spec().check(&mut c);
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
