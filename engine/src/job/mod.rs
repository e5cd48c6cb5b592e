//! The declarative job file.
//!
//! A job is a TOML file with a `[job]` table and three tables of nodes: `[sources.NAME]`,
//! `[operators.NAME]` and `[sinks.NAME]`. Every node has a `kind`; operators and sinks name their
//! upstream ports in `inputs` (`node` for its `out` port, or `node.port`). The reference is
//! `docs/job-files.md`.
//!
//! Loading never stops at the first mistake: [`Job::parse`] returns every error it finds, each
//! with the file, line and column.

pub mod config;
mod graph_check;
mod rejections;
pub mod schema;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use crate::nodes::NodeKind;
pub use crate::nodes::settings::parse_duration;
use crate::nodes::{Decode, find, kind_names};
use config::{EmbeddedConfig, JobSection};
pub use rejections::MaxRejected;
pub use text::JobText;

/// One problem in a job file, at a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The job file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
    /// The offending text, underlined under its line (expressions).
    pub underline: Option<Underline>,
}

/// A stretch of one line of the job file to show under a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underline {
    /// The line's text.
    pub line_text: String,
    /// How many characters from the diagnostic's column to underline (at least 1).
    pub len: usize,
}

impl Diagnostic {
    /// The job file's key the problem is at, when the message starts with one in backquotes, as
    /// the messages about a table or a value do: `sources.g.count` for
    /// `` `sources.g.count`: invalid type… ``, and `sources.g.colour` for an unknown key
    /// (`` `sources.g`: unknown field `colour` ``).
    #[must_use]
    pub fn key(&self) -> Option<String> {
        fn is_key(s: &str) -> bool {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
        let (key, rest) = self.message.strip_prefix('`')?.split_once('`')?;
        if !is_key(key) {
            return None;
        }
        let unknown = rest
            .strip_prefix(": unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(field, _)| field)
            .filter(|field| is_key(field));
        Some(unknown.map_or_else(|| key.to_owned(), |field| format!("{key}.{field}")))
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )?;
        if let Some(u) = &self.underline {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            let text = u.line_text.replace('\t', " ");
            let lead = " ".repeat(self.col.saturating_sub(1));
            write!(
                f,
                "\n{pad} |\n{number} | {text}\n{pad} | {lead}{}",
                "^".repeat(u.len.max(1))
            )?;
        }
        Ok(())
    }
}

/// Every problem found in a job file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The three sections nodes are declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// `[sources.NAME]`
    Sources,
    /// `[operators.NAME]`
    Operators,
    /// `[sinks.NAME]`
    Sinks,
}

impl Section {
    /// The table name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sources => "sources",
            Self::Operators => "operators",
            Self::Sinks => "sinks",
        }
    }
}

/// What flows through a port. Edges must connect ports of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortKind {
    /// Unparsed input records.
    Raw,
    /// Parsed clinical records (PHI: only anonymization takes them).
    Clinical,
    /// De-identified records.
    Deidentified,
    /// Canonical FHIR R4 resources.
    Fhir,
    /// Stage domain events.
    DomainEvent,
    /// Hash-chained audit records.
    AuditRecord,
    /// Rejected input with reasons (raw PHI: only the dead-letter sink takes them).
    DeadLetter,
    /// Records of a declared schema (their schema says which fields are PHI).
    Rows,
    /// Alert events (no PHI).
    Alert,
    /// Identified clinical notifications (PHI: only clinical delivery sinks take them).
    Notification,
}

impl PortKind {
    /// How the kind is named in messages.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Raw => "raw input records",
            Self::Clinical => "parsed clinical records (with PHI)",
            Self::Deidentified => "de-identified records",
            Self::Fhir => "FHIR resources",
            Self::DomainEvent => "domain events",
            Self::AuditRecord => "audit records",
            Self::DeadLetter => "dead letters",
            Self::Rows => "records of a declared schema",
            Self::Alert => "alert events",
            Self::Notification => "identified clinical notifications (with PHI)",
        }
    }
}

/// A reference to an upstream port, as written in `inputs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    /// Upstream node name.
    pub node: String,
    /// Upstream port name (`out` when omitted).
    pub port: String,
    /// Byte span of the reference in the substituted text.
    pub span: std::ops::Range<usize>,
}

/// A node of the job graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name (the table key).
    pub name: String,
    /// Its section.
    pub section: Section,
    /// Its kind and settings.
    pub kind: NodeKind,
    /// Its upstream ports.
    pub inputs: Vec<InputRef>,
    /// Byte span of its table name.
    pub span: std::ops::Range<usize>,
}

impl Node {
    /// The kind of an output port, if the node has it.
    #[must_use]
    pub fn port_kind(&self, port: &str) -> Option<PortKind> {
        self.kind
            .outputs()
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, k)| *k)
    }
}

/// A parsed and validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// The `[job]` table.
    pub settings: JobSection,
    /// The `[embedded]` table: what the embedded Kafka broker is filled with.
    pub embedded: Option<EmbeddedConfig>,
    /// The nodes, in dependency order (every node after its inputs).
    pub nodes: Vec<Node>,
    /// The job file's text, to report problems found later (at run time) at their place.
    pub text: JobText,
    /// The schema of the rows each node outputs (nodes whose `out` port carries rows).
    pub schemas: schema::Schemas,
}

impl Job {
    /// Reads, substitutes, parses and validates a job file. `${VAR}` substitutions come from
    /// the environment; the job's name is the file's stem unless `[job] name` sets it.
    ///
    /// # Examples
    ///
    /// ```
    /// use vitalflow_engine::Job;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("tiny.toml");
    /// std::fs::write(
    ///     &path,
    ///     r#"
    /// [sources.generator]
    /// kind = "generator"
    /// count = 100
    ///
    /// [operators.ingest]
    /// kind = "ingest"
    /// inputs = ["generator"]
    ///
    /// [operators.anonymize]
    /// kind = "anonymize"
    /// inputs = ["ingest"]
    /// key = "ephemeral"
    ///
    /// [operators.canonize]
    /// kind = "canonize"
    /// inputs = ["anonymize"]
    ///
    /// [sinks.fhir]
    /// kind = "parquet"
    /// inputs = ["canonize"]
    /// "#,
    /// )?;
    ///
    /// let job = Job::load(&path)?;
    /// assert_eq!(job.name, "tiny");
    /// assert_eq!(job.nodes.len(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Every problem found, each at its line and column.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic {
                path: path.to_owned(),
                line: 1,
                col: 1,
                message: format!("cannot read the job file: {e}"),
                underline: None,
            }])
        })?;
        Self::parse(path, source, &|name| std::env::var(name).ok())
    }

    /// Parses and validates a job file's text; `env` looks up `${VAR}` substitutions. `path`
    /// names the text in diagnostics, and relative paths in the job are resolved against its
    /// folder.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    ///
    /// use vitalflow_engine::Job;
    ///
    /// let text = r#"
    /// [sources.generator]
    /// kind = "generator"
    /// count = ${COUNT:-100}
    ///
    /// [operators.ingest]
    /// kind = "ingest"
    /// inputs = ["generator"]
    ///
    /// [operators.anonymize]
    /// kind = "anonymize"
    /// inputs = ["ingest"]
    /// key = "ephemeral"
    ///
    /// [operators.canonize]
    /// kind = "canonize"
    /// inputs = ["anonymize"]
    ///
    /// [sinks.fhir]
    /// kind = "parquet"
    /// inputs = ["canonize"]
    /// "#;
    /// let env = |name: &str| (name == "COUNT").then(|| "500".to_owned());
    /// let job = Job::parse(Path::new("tiny.toml"), text.to_owned(), &env)?;
    /// assert_eq!(job.nodes.len(), 5);
    ///
    /// // Every problem is reported at its line and column.
    /// let misspelt = text.replace(r#"inputs = ["anonymize"]"#, r#"inputs = ["anonymise"]"#);
    /// let Err(problems) = Job::parse(Path::new("tiny.toml"), misspelt, &env) else {
    ///     panic!("a misspelt input was accepted");
    /// };
    /// assert_eq!(problems.0.len(), 1);
    /// assert!(problems.to_string().starts_with("tiny.toml:17:11: "));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Every problem found, each at its line and column.
    pub fn parse(
        path: &Path,
        source: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Diagnostics> {
        let (text, mut errors) = JobText::new(path, source, env);
        let root = match DeTable::parse(&text.text) {
            Ok(root) => root,
            Err(e) => {
                errors.push(text.diag_span(e.span(), clean_message(e.message())));
                return Err(Diagnostics(errors));
            }
        };
        let mut settings = JobSection::default();
        let mut embedded = None;
        let mut nodes = Vec::new();
        // Nodes declared but not understood (reported): other nodes may still name them.
        let mut unparsed = BTreeMap::new();
        let mut keys: Vec<_> = root.get_ref().iter().collect();
        keys.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in keys {
            match key.get_ref().as_ref() {
                "job" => {
                    if let Some(s) = decode::<JobSection>(&text, value, "job", &mut errors) {
                        settings = s;
                    }
                }
                "embedded" => {
                    embedded = decode::<EmbeddedConfig>(&text, value, "embedded", &mut errors);
                    if let Some(e) = &embedded
                        && *e.feed.get_ref() == crate::nodes::generator::Feed::Labs
                    {
                        errors.push(text.diag(
                            e.feed.span().start,
                            "`embedded.feed`: `labs` is a generator format, not an embedded \
                             feed (`envelope` or `flat`)",
                        ));
                    }
                }
                "sources" => collect_nodes(
                    &text,
                    Section::Sources,
                    value,
                    &mut nodes,
                    &mut unparsed,
                    &mut errors,
                ),
                "operators" => {
                    collect_nodes(
                        &text,
                        Section::Operators,
                        value,
                        &mut nodes,
                        &mut unparsed,
                        &mut errors,
                    );
                }
                "sinks" => collect_nodes(
                    &text,
                    Section::Sinks,
                    value,
                    &mut nodes,
                    &mut unparsed,
                    &mut errors,
                ),
                other => errors.push(text.diag_span(
                    Some(key.span()),
                    format!(
                        "unknown table `{other}`{} (expected `job`, `embedded`, `sources`, \
                         `operators` or `sinks`)",
                        did_you_mean(other, ["job", "embedded", "sources", "operators", "sinks"])
                    ),
                )),
            }
        }
        if let Some(0) = settings.workers {
            errors.push(text.diag(0, "job.workers must be at least 1"));
        }
        if let Some(0) = settings.batch_size {
            errors.push(text.diag(0, "job.batch-size must be at least 1"));
        }
        if let Some(m) = &settings.max_rejected
            && let Err(e) = m.get_ref().parse::<MaxRejected>()
        {
            errors.push(text.diag(m.span().start, format!("`job.max-rejected`: {e}")));
        }
        let mut nodes = graph_check::check(&text, nodes, &unparsed, &mut errors);
        let schemas = schema::infer(&text, &mut nodes, &mut errors);
        if !errors.is_empty() {
            errors.sort_by_key(|d| (d.line, d.col));
            errors.dedup();
            return Err(Diagnostics(errors));
        }
        let name = settings.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or_else(|| "job".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        Ok(Self {
            name,
            settings,
            embedded,
            nodes,
            text,
            schemas,
        })
    }

    /// The folder relative paths in the job file are resolved against.
    #[must_use]
    pub fn base_dir(&self) -> PathBuf {
        self.text
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// A node by name.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A diagnostic at a byte span of the job file (for problems found when the job starts).
    #[must_use]
    pub fn diag(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Diagnostic {
        self.text.diag(span.start, message)
    }
}

/// TOML parser messages end with a newline and sometimes repeat the position; keep one line.
fn clean_message(message: &str) -> String {
    message
        .trim()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .to_owned()
}

fn collect_nodes(
    text: &JobText,
    section: Section,
    value: &Spanned<DeValue<'_>>,
    nodes: &mut Vec<Node>,
    unparsed: &mut BTreeMap<String, Section>,
    errors: &mut Vec<Diagnostic>,
) {
    let DeValue::Table(table) = value.get_ref() else {
        errors.push(text.diag_span(
            Some(value.span()),
            format!(
                "`{}` must be a table of nodes, like [{}.NAME]",
                section.as_str(),
                section.as_str()
            ),
        ));
        return;
    };
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (key, node) in entries {
        let name = key.get_ref().to_string();
        let path = format!("{}.{name}", section.as_str());
        match parse_node(text, section, &name, &path, key.span(), node, errors) {
            Some(node) => nodes.push(node),
            None => {
                unparsed.insert(name, section);
            }
        }
    }
}

fn parse_node(
    text: &JobText,
    section: Section,
    name: &str,
    path: &str,
    span: std::ops::Range<usize>,
    value: &Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Node> {
    let DeValue::Table(table) = value.get_ref() else {
        errors.push(text.diag_span(Some(value.span()), format!("`{path}` must be a table")));
        return None;
    };
    let Some((_, kind_value)) = table.iter().find(|(k, _)| k.get_ref() == "kind") else {
        errors.push(text.diag_span(Some(span), format!("`{path}` has no `kind`")));
        return None;
    };
    let DeValue::String(kind) = kind_value.get_ref() else {
        errors.push(text.diag_span(
            Some(kind_value.span()),
            format!("`{path}.kind` must be a string"),
        ));
        return None;
    };
    let Some(entry) = find(section, kind) else {
        let allowed = kind_names(section);
        errors.push(text.diag_span(
            Some(kind_value.span()),
            format!(
                "unknown {} kind `{kind}`{} (expected one of: {})",
                &section.as_str()[..section.as_str().len() - 1],
                did_you_mean(kind, allowed.iter().copied()),
                allowed.join(", ")
            ),
        ));
        return None;
    };
    let mut d = Decode {
        text,
        value,
        table,
        path,
        span: span.clone(),
        errors,
    };
    let kind = (entry.parse)(&mut d)?;
    let inputs = kind.spec().inputs();
    let inputs = inputs
        .into_iter()
        .map(|s| {
            let span = s.span();
            let raw = s.into_inner();
            let (node, port) = match raw.split_once('.') {
                Some((n, p)) => (n.to_owned(), p.to_owned()),
                None => (raw, "out".to_owned()),
            };
            InputRef { node, port, span }
        })
        .collect();
    Some(Node {
        name: name.to_owned(),
        section,
        kind,
        inputs,
        span,
    })
}

/// A table of `name = "text"` (a `map`'s `fields`, a `window`'s `aggregates`), in declared
/// order, with positions.
pub(crate) fn named_strings(
    text: &JobText,
    table: &DeTable<'_>,
    path: &str,
    key: &str,
    what: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<Vec<(Spanned<String>, Spanned<String>)>> {
    let (_, value) = table.iter().find(|(k, _)| k.get_ref() == key)?;
    let DeValue::Table(fields) = value.get_ref() else {
        errors.push(text.diag_span(
            Some(value.span()),
            format!("`{path}.{key}` must be a table of `name = \"...\"`"),
        ));
        return None;
    };
    let mut entries: Vec<_> = fields.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = Vec::new();
    for (name, expr) in entries {
        match expr.get_ref() {
            DeValue::String(e) => out.push((
                Spanned::new(name.span(), name.get_ref().to_string()),
                Spanned::new(expr.span(), e.to_string()),
            )),
            _ => errors.push(text.diag_span(
                Some(expr.span()),
                format!(
                    "`{path}.{key}.{}` must be {what} in a string",
                    name.get_ref()
                ),
            )),
        }
    }
    if out.is_empty() {
        errors.push(text.diag_span(
            Some(value.span()),
            format!("`{path}.{key}` is empty: name at least one output field"),
        ));
        return None;
    }
    Some(out)
}

/// Deserializes one table, reporting every unknown field and every value of the wrong type (not
/// just the first), each at its position. A wrong value is dropped and decoding goes on, so a
/// field with a default still gives a node whose connections and expressions are checked.
pub(crate) fn decode<T: DeserializeOwned>(
    text: &JobText,
    value: &Spanned<DeValue<'_>>,
    path: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut value = value.clone();
    let mut dropped: Vec<String> = Vec::new();
    for _ in 0..64 {
        let e = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let message = clean_message(e.message());
        let span = e.span();
        if let (Some(field), Some(span)) = (unknown_field(&message), span.clone()) {
            let expected = expected_fields(&message);
            errors.push(text.diag(
                span.start,
                format!(
                    "`{path}`: unknown field `{field}`{}{}",
                    did_you_mean(field, expected.iter().copied()),
                    expected_suffix(&message)
                ),
            ));
            if remove_key(&mut value, field) {
                continue;
            }
            return None;
        }
        if let Some(field) = missing_field(&message) {
            // A required field dropped for its wrong value was reported already.
            if !dropped.iter().any(|d| d == field) {
                errors.push(
                    text.diag_span(span.or(Some(value.span())), format!("`{path}`: {message}")),
                );
            }
            return None;
        }
        let at = span.as_ref().map_or(value.span().start, |s| s.start);
        let Some(keys) = remove_entry_at(&mut value, at) else {
            errors.push(text.diag(at, format!("`{path}`: {}", plain_types(&message))));
            return None;
        };
        errors.push(text.diag(
            at,
            format!("`{path}.{}`: {}", keys.join("."), plain_types(&message)),
        ));
        if let Some(last) = keys.last() {
            dropped.push(last.clone());
        }
    }
    None
}

/// Removes key `field` from a table; whether it was there.
fn remove_key(value: &mut Spanned<DeValue<'_>>, field: &str) -> bool {
    let DeValue::Table(t) = value.get_mut() else {
        return false;
    };
    let key = t.keys().find(|k| k.get_ref() == field).cloned();
    key.is_some_and(|key| t.remove(&key).is_some())
}

/// Removes the innermost table entry whose key or value holds byte `at`; returns its keys from
/// `value` down.
fn remove_entry_at(value: &mut Spanned<DeValue<'_>>, at: usize) -> Option<Vec<String>> {
    match value.get_mut() {
        DeValue::Table(t) => {
            let key = t
                .iter()
                .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                .map(|(k, _)| k.clone())?;
            let name = key.get_ref().to_string();
            let inner = t
                .get_mut(&key)
                .filter(|v| v.span().contains(&at))
                .and_then(|v| remove_entry_at(v, at));
            match inner {
                Some(mut keys) => {
                    keys.insert(0, name);
                    Some(keys)
                }
                None => {
                    t.remove(&key);
                    Some(vec![name])
                }
            }
        }
        DeValue::Array(items) => items
            .iter_mut()
            .find(|v| v.span().contains(&at))
            .and_then(|v| remove_entry_at(v, at)),
        _ => None,
    }
}

/// A deserializer's message with the Rust type names said the way a job file's author says them.
fn plain_types(message: &str) -> String {
    let Some(i) = message.find("expected ") else {
        return message.to_owned();
    };
    let (head, expected) = message.split_at(i + "expected ".len());
    let plain = match expected {
        "usize" | "u8" | "u16" | "u32" | "u64" => "a whole number (0 or more)",
        "isize" | "i8" | "i16" | "i32" | "i64" => "a whole number",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "a table",
        "a borrowed string" => "a string",
        other => other,
    };
    format!("{head}{plain}")
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    Some(&rest[..rest.find('`')?])
}

/// The field names a deserializer's "unknown field" message lists as expected.
fn expected_fields(message: &str) -> Vec<&str> {
    let Some(i) = message.find(", expected") else {
        return Vec::new();
    };
    message[i..].split('`').skip(1).step_by(2).collect()
}

/// ` (did you mean `x`?)` for the candidate closest to `name` (within about a third of its
/// length in edits, at least one), or nothing.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let limit = name.chars().count().div_ceil(3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| {
            (
                vitalflow_operators::expression::edit_distance(
                    &name.to_lowercase(),
                    &c.to_lowercase(),
                ),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(&rest[..rest.find('`')?])
}

fn expected_suffix(message: &str) -> String {
    message
        .find(", expected")
        .map(|i| format!(" ({})", &message[i + 2..]))
        .unwrap_or_default()
}

/// Node names by section, for graph rendering.
#[must_use]
pub fn nodes_by_section(job: &Job) -> BTreeMap<Section, Vec<&Node>> {
    let mut map: BTreeMap<Section, Vec<&Node>> = BTreeMap::new();
    for n in &job.nodes {
        map.entry(n.section).or_default().push(n);
    }
    map
}
