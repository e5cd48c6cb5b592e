//! Stopping a run on SIGINT or SIGTERM. The first signal asks the run to stop gracefully: its
//! sources read no more, what they read flows through every operator into the sinks, which
//! write it, a Kafka job writes its final checkpoint and commits its offsets, and the summary is
//! printed (exit code 0). A second signal, or `--stop-timeout` passing after the first, exits at
//! once with 130 (SIGINT) or 143 (SIGTERM), leaving what a crash leaves: the next run recovers
//! from the last checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::log::{Entry, Log};

/// Handles SIGINT and SIGTERM from now on: returns the flag the first one sets. What it does is
/// told on standard error as `log` writes it (in JSON with the signal, and the exit code when
/// it exits at once).
///
/// # Errors
/// The handlers or their thread cannot be set up.
pub fn on_signals(timeout: Duration, log: Log) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("handling SIGINT and SIGTERM")?;
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let code = 128 + signal;
                if flag.swap(true, Ordering::SeqCst) {
                    let text = format!("{name} again: exiting at once (exit code {code})");
                    log.say(&text, || {
                        Entry::error(&text)
                            .field("signal", name)
                            .field("exit_code", code)
                    });
                    std::process::exit(code);
                }
                let text = format!(
                    "{name}: stopping: the sources read no more; what they read is written \
                     (a second signal, or {} passing, exits at once)",
                    humantime::format_duration(timeout)
                );
                log.say(&text, || Entry::warn(&text).field("signal", name));
                let _ = std::thread::Builder::new()
                    .name("stop-timeout".to_owned())
                    .spawn(move || {
                        std::thread::sleep(timeout);
                        let text = format!(
                            "the stop took longer than --stop-timeout ({}): exiting at once \
                             (exit code {code})",
                            humantime::format_duration(timeout)
                        );
                        log.say(&text, || {
                            Entry::error(&text)
                                .field("signal", name)
                                .field("exit_code", code)
                        });
                        std::process::exit(code);
                    });
            }
        })
        .context("starting the signal thread")?;
    Ok(stop)
}
