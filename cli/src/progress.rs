//! How `vitalflow run` shows a run on standard error: the engine's messages as lines, and its
//! progress as a live line on a terminal or a plain line every `--progress-interval` elsewhere
//! (a log file, a pipe, CI, and always with `--log-format json`, where every line is JSON).

use std::io::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use vitalflow_engine::{Progress, RunObserver};

use crate::log::{Entry, Log};

/// How often the live line is redrawn.
const LIVE_REDRAW: Duration = Duration::from_millis(250);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A terminal: one line, redrawn four times a second, cleared at the end.
    Live,
    /// Not a terminal: a plain line at this interval.
    Lines(Duration),
    /// None.
    Off,
}

impl Display {
    /// The live line on a terminal (`live`: standard error is one, and lines are not JSON);
    /// elsewhere a line every `interval` (none for zero); nothing with `--no-progress`.
    pub fn choose(no_progress: bool, live: bool, interval: Duration) -> Self {
        if no_progress {
            Self::Off
        } else if live {
            Self::Live
        } else if interval.is_zero() {
            Self::Off
        } else {
            Self::Lines(interval)
        }
    }

    /// How often the engine should hand over a snapshot.
    pub const fn interval(self) -> Option<Duration> {
        match self {
            Self::Live => Some(LIVE_REDRAW),
            Self::Lines(interval) => Some(interval),
            Self::Off => None,
        }
    }
}

/// The run's observer: writes to standard error, as text or JSON lines.
pub struct Stderr {
    display: Display,
    log: Log,
}

impl Stderr {
    pub const fn new(display: Display, log: Log) -> Self {
        Self { display, log }
    }
}

impl RunObserver for Stderr {
    fn progress(&self, snapshot: &Progress) {
        match self.display {
            Display::Live => {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{}", line(snapshot, false));
                let _ = err.flush();
            }
            Display::Lines(_) => self.log.say(line(snapshot, true), || entry(snapshot)),
            Display::Off => {}
        }
    }

    fn finished(&self, _snapshot: &Progress) {
        if self.display == Display::Live {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }

    fn message(&self, message: &str) {
        self.log.say(message, || Entry::info(message));
    }
}

/// A count for people: `1.23M`, `4.5k`, `678`.
fn human(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.0}")
    }
}

/// One progress report: per source the records it emitted, per other node in → out and
/// rejections, and the sources' rate so far. `plain` spells it without symbols, for logs:
/// `progress 10.0s: g 120 | none 120 -> 120 | 12 records/s`.
pub fn line(snapshot: &Progress, plain: bool) -> String {
    let secs = snapshot.elapsed.as_secs_f64().max(1e-3);
    let parts: Vec<String> = snapshot
        .nodes
        .iter()
        .map(|n| {
            let (i, o, r) = (n.records_in as f64, n.records_out as f64, n.rejected);
            let mut part = if n.source {
                format!("{} {}", n.name, human(o))
            } else if plain {
                format!("{} {} -> {}", n.name, human(i), human(o))
            } else {
                format!("{} {}→{}", n.name, human(i), human(o))
            };
            if r > 0 && plain {
                part.push_str(&format!(" ({} rejected)", human(r as f64)));
            } else if r > 0 {
                part.push_str(&format!(" ✗{}", human(r as f64)));
            }
            part
        })
        .collect();
    let rate = human(snapshot.rate);
    if plain {
        format!(
            "progress {secs:.1}s: {} | {rate} records/s",
            parts.join(" | ")
        )
    } else {
        format!("{secs:6.1}s | {} | {rate}/s", parts.join(" | "))
    }
}

/// Seconds with millisecond precision, for JSON.
pub fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// A rate rounded to a tenth, for JSON.
pub fn per_second(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

/// One progress report as a JSON line: the plain line as its message; the elapsed seconds,
/// the records the sources read, their rate (records/s) and per node (in job order) its name,
/// kind, whether it is a source, and its counts in, out and rejected.
pub fn entry(snapshot: &Progress) -> Entry {
    let nodes: Vec<Value> = snapshot
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "kind": n.kind,
                "source": n.source,
                "in": n.records_in,
                "out": n.records_out,
                "rejected": n.rejected,
            })
        })
        .collect();
    Entry::info(line(snapshot, true))
        .field("elapsed_s", seconds(snapshot.elapsed))
        .field("records_read", snapshot.source_records())
        .field("rate", per_second(snapshot.rate))
        .field("nodes", nodes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vitalflow_engine::Progress;
    use vitalflow_engine::runtime::NodeSummary;

    use super::{Display, entry, line};

    fn node(name: &str, source: bool, counts: (u64, u64, u64)) -> NodeSummary {
        NodeSummary {
            name: name.to_owned(),
            kind: if source { "generator" } else { "filter" }.to_owned(),
            source,
            records_in: counts.0,
            records_out: counts.1,
            rejected: counts.2,
            dropped: 0,
            dead_letters: counts.2,
            files: 0,
            late: 0,
            bytes_in: 0,
            bytes_written: 0,
            read_by_worker: std::collections::BTreeMap::new(),
            failing_for_ms: 0,
        }
    }

    #[test]
    fn the_live_line_and_the_plain_line_read_as_before() {
        let snapshot = Progress {
            elapsed: Duration::from_millis(2_500),
            nodes: vec![
                node("g", true, (1_500, 1_500, 0)),
                node("high", false, (1_500, 900, 12)),
                node("rows", false, (900, 900, 0)),
            ],
            rate: 600.0,
            watermarks: Vec::new(),
            checkpoints: None,
            alerts: Vec::new(),
            partitions: Vec::new(),
            alert_latency: Vec::new(),
            end_to_end: None,
        };
        assert_eq!(
            line(&snapshot, true),
            "progress 2.5s: g 1.5k | high 1.5k -> 900 (12 rejected) | rows 900 -> 900 | 600 records/s"
        );
        assert_eq!(
            line(&snapshot, false),
            "   2.5s | g 1.5k | high 1.5k→900 ✗12 | rows 900→900 | 600/s"
        );
        let big = Progress {
            elapsed: Duration::ZERO,
            nodes: vec![node("g", true, (2_345_678, 2_345_678, 0))],
            rate: 2_345_678.0,
            watermarks: Vec::new(),
            checkpoints: None,
            alerts: Vec::new(),
            partitions: Vec::new(),
            alert_latency: Vec::new(),
            end_to_end: None,
        };
        assert_eq!(line(&big, true), "progress 0.0s: g 2.35M | 2.35M records/s");
    }

    #[test]
    fn a_json_progress_line_carries_the_figures_of_the_plain_line() {
        let snapshot = Progress {
            elapsed: Duration::from_millis(2_500),
            nodes: vec![
                node("g", true, (1_500, 1_500, 0)),
                node("high", false, (1_500, 900, 12)),
            ],
            rate: 600.04,
            watermarks: Vec::new(),
            checkpoints: None,
            alerts: Vec::new(),
            partitions: Vec::new(),
            alert_latency: Vec::new(),
            end_to_end: None,
        };
        let line = entry(&snapshot).line_at(chrono::DateTime::UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({
                "ts": "1970-01-01T00:00:00.000Z",
                "level": "info",
                "msg": "progress 2.5s: g 1.5k | high 1.5k -> 900 (12 rejected) | 600 records/s",
                "elapsed_s": 2.5,
                "records_read": 1500,
                "rate": 600.0,
                "nodes": [
                    {"name": "g", "kind": "generator", "source": true, "in": 1500, "out": 1500, "rejected": 0},
                    {"name": "high", "kind": "filter", "source": false, "in": 1500, "out": 900, "rejected": 12},
                ],
            })
        );
    }

    #[test]
    fn a_terminal_gets_the_live_line_a_log_its_lines_and_no_progress_none() {
        let ten = Duration::from_secs(10);
        assert_eq!(Display::choose(false, true, ten), Display::Live);
        assert_eq!(Display::choose(false, false, ten), Display::Lines(ten));
        assert_eq!(Display::choose(false, false, Duration::ZERO), Display::Off);
        assert_eq!(Display::choose(true, true, ten), Display::Off);
        assert_eq!(Display::choose(true, false, ten), Display::Off);
        assert_eq!(Display::Off.interval(), None);
        assert_eq!(Display::Lines(ten).interval(), Some(ten));
    }
}
