//! vitalflow's engine: job files, their validation, and the runtime that plans a job onto timely
//! dataflow.
//!
//! * [`job`]: the declarative job file (TOML), parsed with source spans so every mistake is reported
//!   as `path:line:col: message`, and validated as a whole (every error, not the first);
//! * [`graph`]: the job's graph rendered as Mermaid or Graphviz DOT;
//! * [`runtime`]: builds the timely dataflow for a job and runs it on N workers;
//! * [`audit_trail`]: the audit records' hash chain and its verifier.
#![forbid(unsafe_code)]

pub mod audit_trail;
#[cfg(feature = "baseline")]
pub mod baseline;
pub mod graph;
pub mod job;
pub mod nodes;
pub mod runtime;

pub use job::{Diagnostic, Diagnostics, Job};
pub use runtime::{Fault, Progress, RunError, RunObserver, RunOptions, RunSummary, run};
