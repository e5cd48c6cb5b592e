//! MLLP: HL7 v2 messages over TCP, acknowledged once durable.
//!
//! * [`frame`]: the framing (`0x0B` message `0x1C 0x0D`), decoded from bytes as they arrive;
//! * [`ack`]: the message's MSH segment as the listener reads it, and the `ACK` it answers with;
//! * [`log`]: the append-only, fsynced log every acknowledged message is stored in first;
//! * [`server`]: the listener (a tokio runtime on a thread of its own, many connections at once)
//!   and the thread that appends to the log, a batch of messages per sync;
//! * [`tls`]: the listener's TLS configuration (rustls), optionally with client certificates.
//!
//! A message is answered `AA` only once its record in the log is durable; a message that cannot
//! be accepted (not HL7, no control id, too large) is stored as a rejected record and answered
//! `AR`. Whoever reads the log (the engine's `mllp` source) takes the records in order, and knows
//! from the writer up to where they are durable.

pub mod ack;
pub mod frame;
pub mod log;
pub mod server;
pub mod tls;

pub use ack::{Ack, Code, Header, Problem};
pub use frame::{Decoder, Event};
pub use log::{Entry, Kind, Log, LogError, Opened, Reader, Record};
pub use server::{Running, Settings, Shared, Stats, start};
pub use tls::{TlsError, server_config};
