//! What `vitalflow run` writes to standard error, in one of two formats: text for people (the
//! default), or with `--log-format json` one JSON object a line for log shippers. Every JSON
//! line has `ts` (RFC 3339, UTC), `level` (`info`, `warn`, `error`; `debug` and `trace` for logs
//! asked for with `VITALFLOW_LOG`) and `msg`, then the fields of what it reports: a progress
//! line's figures, the summary's, an error's fault, node, file, line and field, and on the last
//! line the exit code. The engine's logs (`tracing`) are written the same way, so standard error
//! holds nothing else.

use std::fmt::Display;
use std::io::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::ValueEnum;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How standard error is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people; the live progress line on a terminal.
    #[default]
    Text,
    /// One JSON object a line, for log shippers; no live line.
    Json,
}

/// How much a line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail of the engine's logs.
    Trace,
    /// Detail of the engine's logs.
    Debug,
    /// What the run does: progress, messages, the summary.
    Info,
    /// Something the user should look at: rejected records, a signal.
    Warn,
    /// The run failed, or could not start.
    Error,
}

impl Level {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One JSON line: its level, its message and its fields, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    level: Level,
    msg: String,
    fields: Vec<(String, Value)>,
}

impl Entry {
    /// A line at `level` saying `msg`.
    pub fn new(level: Level, msg: impl Into<String>) -> Self {
        Self {
            level,
            msg: msg.into(),
            fields: Vec::new(),
        }
    }

    /// An `info` line.
    pub fn info(msg: impl Into<String>) -> Self {
        Self::new(Level::Info, msg)
    }

    /// A `warn` line.
    pub fn warn(msg: impl Into<String>) -> Self {
        Self::new(Level::Warn, msg)
    }

    /// An `error` line.
    pub fn error(msg: impl Into<String>) -> Self {
        Self::new(Level::Error, msg)
    }

    /// Adds a field. `ts`, `level` and `msg` are the line's own: a field of one of those names
    /// is written as `field.NAME`.
    #[must_use]
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        let key = if matches!(key, "ts" | "level" | "msg") {
            format!("field.{key}")
        } else {
            key.to_owned()
        };
        self.fields.push((key, value.into()));
        self
    }

    /// Adds a field when there is a value.
    #[must_use]
    pub fn field_opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// The line, stamped `ts`, without its newline.
    pub fn line_at(&self, ts: DateTime<Utc>) -> String {
        let mut line = String::with_capacity(128);
        line.push_str("{\"ts\":");
        line.push_str(&json(ts.to_rfc3339_opts(SecondsFormat::Millis, true)));
        line.push_str(",\"level\":");
        line.push_str(&json(self.level.as_str()));
        line.push_str(",\"msg\":");
        line.push_str(&json(self.msg.as_str()));
        for (key, value) in &self.fields {
            line.push(',');
            line.push_str(&json(key.as_str()));
            line.push(':');
            line.push_str(&value.to_string());
        }
        line.push('}');
        line
    }

    /// Writes the line, stamped now, to standard error in one piece (lines written from several
    /// threads never interleave).
    pub fn emit(&self) {
        let mut line = self.line_at(Utc::now());
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// A string as JSON.
fn json(s: impl Into<Value>) -> String {
    s.into().to_string()
}

/// How `vitalflow run` writes to standard error: its `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log(LogFormat);

impl Log {
    /// Writes in `format`.
    pub const fn new(format: LogFormat) -> Self {
        Self(format)
    }

    /// Whether lines are JSON.
    pub fn json(self) -> bool {
        self.0 == LogFormat::Json
    }

    /// Writes `text` as a line, or in JSON the line `entry` makes.
    pub fn say(self, text: impl Display, entry: impl FnOnce() -> Entry) {
        if self.json() {
            entry().emit();
        } else {
            eprintln!("{text}");
        }
    }

    /// The last line of a run in JSON: its exit code (text says nothing more).
    pub fn exit(self, code: u8) {
        if self.json() {
            exit_entry(code).emit();
        }
    }
}

/// The last line of a run that exits with `code`: `error` unless it is 0.
pub fn exit_entry(code: impl Into<i32>) -> Entry {
    let code = code.into();
    let level = if code == 0 { Level::Info } else { Level::Error };
    Entry::new(level, format!("exit code {code}")).field("exit_code", code)
}

/// Whether the arguments (the program's name left out) are `run …` with `--log-format json`:
/// for a usage error, which is told before the options are parsed.
pub fn asked_for_json(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "run")
        && (args.iter().any(|a| a == "--log-format=json")
            || args
                .windows(2)
                .any(|w| w[0] == "--log-format" && w[1] == "json"))
}

/// Starts the engine's logs (`tracing`) on standard error at the level `VITALFLOW_LOG` asks for
/// (`warn` by default): as text, coloured on a terminal, or as JSON lines.
pub fn start_tracing(format: LogFormat, terminal: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VITALFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only on a terminal: in a log file or a pipe they are noise.
        LogFormat::Text => logs.with_ansi(terminal).init(),
        LogFormat::Json => logs.with_ansi(false).event_format(JsonEvents).init(),
    }
}

/// A panic as a JSON line (in place of the text the default hook writes), with the code
/// location and the thread.
pub fn json_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        let thread = std::thread::current();
        Entry::error(format!("panic: {message}"))
            .field_opt("thread", thread.name())
            .field_opt("source_file", info.location().map(|l| l.file()))
            .field_opt("source_line", info.location().map(|l| l.line()))
            .emit();
    }));
}

/// Writes the engine's log events as [`Entry`] lines: the event's message as `msg`, its fields
/// as fields (numbers and booleans as such, anything else as text), and its `target`.
struct JsonEvents;

impl<S, N> FormatEvent<S, N> for JsonEvents
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::TRACE => Level::Trace,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::ERROR => Level::Error,
        };
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let mut entry = Entry::new(level, fields.message.unwrap_or_default());
        for (key, value) in fields.fields {
            entry = entry.field(key, value);
        }
        let entry = entry.field("target", meta.target());
        writeln!(writer, "{}", entry.line_at(Utc::now()))
    }
}

/// The fields of a log event.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl EventFields {
    fn add(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::{Entry, Level, asked_for_json, exit_entry};

    #[test]
    fn a_line_is_its_timestamp_level_message_and_fields_in_order() {
        let ts = Utc
            .with_ymd_and_hms(2025, 3, 1, 12, 30, 5)
            .single()
            .expect("a valid time");
        let line = Entry::warn("2 record(s) \"rejected\"")
            .field("rejected", 2)
            .field("msg", "kept apart")
            .field_opt("node", None::<&str>)
            .field("share", 12.5)
            .line_at(ts);
        assert_eq!(
            line,
            r#"{"ts":"2025-03-01T12:30:05.000Z","level":"warn","msg":"2 record(s) \"rejected\"","rejected":2,"field.msg":"kept apart","share":12.5}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed["msg"], "2 record(s) \"rejected\"");
        assert_eq!(
            exit_entry(0u8).line_at(ts),
            r#"{"ts":"2025-03-01T12:30:05.000Z","level":"info","msg":"exit code 0","exit_code":0}"#
        );
        assert_eq!(exit_entry(143).level, Level::Error);
    }

    #[test]
    fn json_is_asked_for_with_either_spelling() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(asked_for_json(&args(&["run", "--log-format", "json", "x"])));
        assert!(asked_for_json(&args(&["run", "x", "--log-format=json"])));
        assert!(!asked_for_json(&args(&[
            "run",
            "x",
            "--log-format",
            "text"
        ])));
        assert!(!asked_for_json(&args(&["run", "json"])));
        assert!(!asked_for_json(&args(&[
            "validate",
            "--log-format",
            "json"
        ])));
    }
}
