//! End-to-end tests: the real `vitalflow` binary on real job files, outputs read back by
//! independent readers (pyarrow, DuckDB, the FHIR R4 models of `fhir.resources`).

mod support;

mod alerts;
mod audit;
mod bench;
mod checkers;
mod cli;
mod cluster;
mod dedupe;
mod deid;
mod expressions;
mod faults;
mod inputs;
mod kafka;
mod labs;
mod mllp;
mod notify;
mod pipeline;
mod runs;
mod serve;
mod shipped;
mod sinks;
mod windows;
