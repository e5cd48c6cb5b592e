//! The job graph as Mermaid (renders on GitHub) or Graphviz DOT.

use std::fmt::Write as _;

use crate::job::{Job, Section};

/// Output formats of `vitalflow graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Renders the job graph.
#[must_use]
pub fn render(job: &Job, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            let _ = writeln!(out, "flowchart LR");
            for n in &job.nodes {
                let label = format!("{}<br/><i>{}</i>", n.name, n.kind.name());
                let id = ident(&n.name);
                let _ = match n.section {
                    Section::Sources => writeln!(out, "    {id}([\"{label}\"])"),
                    Section::Operators => writeln!(out, "    {id}[\"{label}\"]"),
                    Section::Sinks => writeln!(out, "    {id}[(\"{label}\")]"),
                };
            }
            for n in &job.nodes {
                for i in &n.inputs {
                    let arrow = if i.port == "out" { "-->" } else { "-.->" };
                    let _ = writeln!(
                        out,
                        "    {} {arrow}|{}| {}",
                        ident(&i.node),
                        i.port,
                        ident(&n.name)
                    );
                }
            }
        }
        GraphFormat::Dot => {
            let _ = writeln!(out, "digraph \"{}\" {{\n    rankdir=LR;", job.name);
            for n in &job.nodes {
                let shape = match n.section {
                    Section::Sources => "ellipse",
                    Section::Operators => "box",
                    Section::Sinks => "cylinder",
                };
                let _ = writeln!(
                    out,
                    "    \"{}\" [shape={shape}, label=\"{}\\n({})\"];",
                    n.name,
                    n.name,
                    n.kind.name()
                );
            }
            for n in &job.nodes {
                for i in &n.inputs {
                    let style = if i.port == "out" { "solid" } else { "dashed" };
                    let _ = writeln!(
                        out,
                        "    \"{}\" -> \"{}\" [label=\"{}\", style={style}];",
                        i.node, n.name, i.port
                    );
                }
            }
            let _ = writeln!(out, "}}");
        }
    }
    out
}
