//! An MLLP client: sends HL7 v2 messages one at a time, each framed (`0x0B` message
//! `0x1C 0x0D`), and waits for its acknowledgement before the next.
//!
//! The acknowledgement's MSA-1 decides: `AA`/`CA` delivered; `AE`/`CE`/`AR`/`CR` refused, which
//! [`NakPolicy`] turns into a dead letter at once or into a failed attempt to retry. MSA-2 must
//! name the control id sent: an acknowledgement of another message means the connection is out
//! of step, and it is closed.
//!
//! The connection is kept for the next message and opened again after any failure. Connection
//! failures, time-outs and answers that are not acknowledgements are retried under the
//! [`RetryPolicy`]. Logs and outcomes hold the acknowledgement code and the receiver's HL7 error
//! code (ERR-3), never a value of the message or a text of the receiver.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::tls::Connector;
use super::{AttemptError, NotifyError, OruMessage, Outcome, RetryPolicy, Stream, connect};
use crate::mllp::frame::{CR, Decoder, END, Event, START};

/// What the client does with a negative acknowledgement (`AE`, `CE`, `AR`, `CR`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NakPolicy {
    /// A failed attempt: sent again under the retry policy, given up when it runs out.
    Retry,
    /// A dead letter at once: [`Outcome::Rejected`].
    #[default]
    DeadLetter,
}

/// TLS to the receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MllpTls {
    /// The CA certificates (PEM) the receiver's certificate must chain to; `None`: the system's
    /// trusted roots.
    pub ca_file: Option<PathBuf>,
    /// The name the receiver's certificate must hold; `None`: the host connected to.
    pub server_name: Option<String>,
}

/// Where and how the client delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MllpClientSettings {
    /// The receiver's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS; `None`: plain TCP.
    pub tls: Option<MllpTls>,
    /// The longest a connection (with its TLS handshake) may take.
    pub connect_timeout: Duration,
    /// The longest to wait for an acknowledgement, from the moment the message is being sent.
    pub ack_timeout: Duration,
    /// Retries and when to give up.
    pub retry: RetryPolicy,
    /// What a negative acknowledgement means.
    pub on_negative_ack: NakPolicy,
    /// The longest acknowledgement taken, in bytes.
    pub max_ack_size: usize,
}

impl MllpClientSettings {
    /// Settings for `host:port` over plain TCP: 10 s to connect, 30 s for an acknowledgement,
    /// the default [`RetryPolicy`], negative acknowledgements as dead letters.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            on_negative_ack: NakPolicy::default(),
            max_ack_size: 64 * 1024,
        }
    }
}

/// What an acknowledgement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckReply {
    /// MSA-1, the acknowledgement code.
    pub code: String,
    /// MSA-2, the control id of the message acknowledged.
    pub control_id: String,
    /// ERR-3's first component (the HL7 table 0357 error code), when present and short:
    /// letters, digits, `.`, `-` and `_`, at most 20 of them; anything else is left out.
    pub error_code: Option<String>,
}

impl AckReply {
    /// Whether the code accepts the message (`AA`, `CA`).
    #[must_use]
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA")
    }
}

/// Keeps a code when it is short and made of safe characters (so it can hold no PHI).
fn safe_code(code: &[u8]) -> Option<String> {
    let code = std::str::from_utf8(code).ok()?.trim();
    let ok = !code.is_empty()
        && code.len() <= 20
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| code.to_owned())
}

/// Reads an acknowledgement (without framing): its delimiters from its MSH segment, then MSA
/// and ERR.
///
/// # Errors
/// A short description (no value of the message) of what is missing: not HL7, no MSA, no or an
/// unknown MSA-1.
pub fn parse_ack(bytes: &[u8]) -> Result<AckReply, &'static str> {
    crate::mllp::Header::read(bytes).map_err(|_| "not an HL7 message")?;
    let start = bytes
        .windows(3)
        .position(|w| w == b"MSH")
        .ok_or("not an HL7 message")?;
    let field = *bytes.get(start + 3).ok_or("not an HL7 message")?;
    let component = *bytes.get(start + 4).ok_or("not an HL7 message")?;
    let segments = || {
        bytes[start..]
            .split(|b| *b == b'\r' || *b == b'\n')
            .filter(|s| !s.is_empty())
    };
    let msa = segments()
        .find(|s| s.starts_with(b"MSA") && s.get(3) == Some(&field))
        .ok_or("no MSA segment")?;
    let mut msa = msa.split(|b| *b == field).skip(1);
    let code = msa.next().unwrap_or_default();
    let code = match code.trim_ascii() {
        c @ (b"AA" | b"AE" | b"AR" | b"CA" | b"CE" | b"CR") => String::from_utf8_lossy(c).into(),
        b"" => return Err("MSA-1 is empty"),
        _ => return Err("MSA-1 is not an acknowledgement code"),
    };
    let control_id = String::from_utf8_lossy(msa.next().unwrap_or_default().trim_ascii()).into();
    let error_code = segments()
        .find(|s| s.starts_with(b"ERR") && s.get(3) == Some(&field))
        .and_then(|s| s.split(|b| *b == field).nth(3))
        .and_then(|f| f.split(|b| *b == component).next())
        .and_then(safe_code);
    Ok(AckReply {
        code,
        control_id,
        error_code,
    })
}

/// An open connection and what was read on it beyond the last acknowledgement.
struct Connection {
    stream: Stream,
    decoder: Decoder,
    events: VecDeque<Event>,
}

/// Delivers HL7 v2 messages to one MLLP receiver. One message at a time: call [`send`]
/// (`&mut self`) again once it returned.
///
/// [`send`]: MllpClient::send
pub struct MllpClient {
    settings: MllpClientSettings,
    tls: Option<Connector>,
    connection: Option<Connection>,
}

impl std::fmt::Debug for MllpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllpClient")
            .field("settings", &self.settings)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl MllpClient {
    /// A client; it connects when it first sends.
    ///
    /// # Errors
    /// The TLS configuration cannot be made (CA file, server name).
    pub fn new(settings: MllpClientSettings) -> Result<Self, NotifyError> {
        let tls = match &settings.tls {
            None => None,
            Some(t) => Some(Connector::new(
                t.ca_file.as_deref(),
                t.server_name.as_deref().unwrap_or(&settings.host),
                &[],
            )?),
        };
        Ok(Self {
            settings,
            tls,
            connection: None,
        })
    }

    /// Sends an `ORU^R01` built by [`oru_r01`](super::oru_r01).
    pub async fn send_oru(&mut self, message: &OruMessage) -> Outcome {
        self.send(&message.bytes, &message.control_id).await
    }

    /// Sends `message` (without framing; its MSH-10 is `control_id`) until it is acknowledged,
    /// refused or the retry policy gives up.
    pub async fn send(&mut self, message: &[u8], control_id: &str) -> Outcome {
        let mut framed = Vec::with_capacity(message.len() + 3);
        framed.push(START);
        framed.extend_from_slice(message);
        framed.extend_from_slice(&[END, CR]);
        let mut backoff = self.settings.retry.start();
        loop {
            let attempt = backoff.begin_attempt();
            let reused = self.connection.is_some();
            let error = match self.attempt(&framed, control_id, &backoff).await {
                Ok(reply) if reply.accepted() => {
                    tracing::debug!(attempt, code = %reply.code, "MLLP message acknowledged");
                    return Outcome::Delivered {
                        attempts: attempt,
                        code: reply.code,
                    };
                }
                Ok(reply) => {
                    tracing::warn!(attempt, code = %reply.code, error_code = reply.error_code.as_deref().unwrap_or(""), "MLLP message refused");
                    if self.settings.on_negative_ack == NakPolicy::DeadLetter {
                        return Outcome::Rejected {
                            attempts: attempt,
                            code: reply.code,
                            text: reply.error_code.unwrap_or_default(),
                        };
                    }
                    AttemptError::Negative {
                        code: reply.code,
                        error_code: reply.error_code,
                    }
                }
                Err(e) => {
                    // The stream may be anywhere in a frame: start afresh.
                    self.connection = None;
                    tracing::warn!(attempt, error = %e, "MLLP delivery attempt failed");
                    e
                }
            };
            match backoff.next_delay(reused && error.stale_connection()) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    return Outcome::GaveUp {
                        attempts: attempt,
                        reason: error.to_string(),
                    };
                }
            }
        }
    }

    /// One attempt: connects if needed, sends, and reads the acknowledgement.
    async fn attempt(
        &mut self,
        framed: &[u8],
        control_id: &str,
        backoff: &super::Backoff,
    ) -> Result<AckReply, AttemptError> {
        if self.connection.is_none() {
            let stream = connect(
                &self.settings.host,
                self.settings.port,
                self.tls.as_ref(),
                backoff.step_timeout(self.settings.connect_timeout),
            )
            .await?;
            self.connection = Some(Connection {
                stream,
                decoder: Decoder::new(self.settings.max_ack_size),
                events: VecDeque::new(),
            });
        }
        let Some(c) = self.connection.as_mut() else {
            return Err(AttemptError::Closed);
        };
        let exchange = async {
            c.stream
                .write_all(framed)
                .await
                .map_err(|e| AttemptError::Io("sending", e))?;
            c.stream
                .flush()
                .await
                .map_err(|e| AttemptError::Io("sending", e))?;
            let mut buf = vec![0u8; 8192];
            loop {
                while let Some(event) = c.events.pop_front() {
                    match event {
                        Event::Message(ack) => return Ok(ack),
                        Event::Oversize { .. } => {
                            return Err(AttemptError::Protocol(
                                "the acknowledgement is longer than allowed",
                            ));
                        }
                        Event::Garbage(_) | Event::Abandoned(_) => {}
                    }
                }
                let n = c
                    .stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| AttemptError::Io("reading the acknowledgement", e))?;
                if n == 0 {
                    return Err(AttemptError::Closed);
                }
                let mut events = Vec::new();
                c.decoder.push(&buf[..n], &mut events);
                c.events.extend(events);
            }
        };
        let ack = tokio::time::timeout(backoff.step_timeout(self.settings.ack_timeout), exchange)
            .await
            .map_err(|_| AttemptError::Timeout("waiting for the acknowledgement"))??;
        let reply = parse_ack(&ack).map_err(AttemptError::Protocol)?;
        if reply.control_id != control_id {
            return Err(AttemptError::Protocol(
                "the acknowledgement names another message's control id",
            ));
        }
        Ok(reply)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::thread;
    use std::time::Instant;

    use tokio_rustls::rustls::{ServerConnection, StreamOwned};

    use super::*;
    use crate::mllp::{Ack, Code, Header, Problem};
    use crate::notify::testing::{certificates, notification};
    use crate::notify::{OruSettings, oru_r01};

    /// What the test receiver does with a connection.
    #[derive(Clone, Copy, Debug)]
    enum Script {
        /// Closes it before reading anything.
        Drop,
        /// Answers each message with this code (AR with an ERR segment).
        Answer(Code),
        /// Reads and never answers.
        Silent,
    }

    /// A receiver on a thread: connection `i` follows `scripts[i]` (the last one for later
    /// connections). It records the messages it read.
    struct Receiver {
        port: u16,
        messages: Arc<Mutex<Vec<Vec<u8>>>>,
        connections: Arc<Mutex<usize>>,
    }

    fn serve<S: std::io::Read + std::io::Write>(
        mut s: S,
        script: Script,
        messages: &Mutex<Vec<Vec<u8>>>,
    ) {
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = [0u8; 4096];
        loop {
            let Ok(n) = s.read(&mut buf) else { return };
            if n == 0 {
                return;
            }
            let mut events = Vec::new();
            decoder.push(&buf[..n], &mut events);
            for e in events {
                let Event::Message(m) = e else { continue };
                messages.lock().unwrap().push(m.clone());
                let Script::Answer(code) = script else {
                    continue;
                };
                let header = Header::read(&m).ok();
                let problem = Problem::NotStored;
                let ack = Ack {
                    header: header.as_ref(),
                    code,
                    problem: (code != Code::Accept).then_some(&problem),
                    control_id: "ACK1",
                    time: "20260101000000",
                }
                .render();
                let framed = [&[START][..], &ack, &[END, CR]].concat();
                if s.write_all(&framed).and_then(|()| s.flush()).is_err() {
                    return;
                }
            }
        }
    }

    impl Receiver {
        fn start(
            scripts: Vec<Script>,
            tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let messages = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(Mutex::new(0));
            let (m, c) = (Arc::clone(&messages), Arc::clone(&connections));
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let i = {
                        let mut c = c.lock().unwrap();
                        *c += 1;
                        *c - 1
                    };
                    let script = scripts[i.min(scripts.len() - 1)];
                    let (m, tls) = (Arc::clone(&m), tls.clone());
                    thread::spawn(move || {
                        if matches!(script, Script::Drop) {
                            drop(stream);
                            return;
                        }
                        match tls {
                            None => serve(stream, script, &m),
                            Some(config) => {
                                let conn = ServerConnection::new(config).unwrap();
                                serve(StreamOwned::new(conn, stream), script, &m);
                            }
                        }
                    });
                }
            });
            Self {
                port,
                messages,
                connections,
            }
        }
    }

    fn settings(port: u16) -> MllpClientSettings {
        MllpClientSettings {
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
                give_up_after: Duration::from_secs(20),
            },
            ..MllpClientSettings::new("127.0.0.1", port)
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn message() -> OruMessage {
        oru_r01(&notification(), &OruSettings::default(), chrono::Utc::now()).unwrap()
    }

    #[test]
    fn an_accepted_message_is_delivered_and_the_connection_kept() {
        let r = Receiver::start(vec![Script::Answer(Code::Accept)], None);
        let mut client = MllpClient::new(settings(r.port)).unwrap();
        let m = message();
        let outcome = run(async {
            let first = client.send_oru(&m).await;
            let second = client.send_oru(&m).await;
            (first, second)
        });
        let want = Outcome::Delivered {
            attempts: 1,
            code: "AA".into(),
        };
        assert_eq!(outcome, (want.clone(), want));
        assert_eq!(*r.connections.lock().unwrap(), 1);
        let got = r.messages.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], m.bytes);
    }

    #[test]
    fn a_dropped_connection_is_opened_again() {
        let r = Receiver::start(vec![Script::Drop, Script::Answer(Code::Accept)], None);
        let mut client = MllpClient::new(settings(r.port)).unwrap();
        let outcome = run(client.send_oru(&message()));
        assert_eq!(
            outcome,
            Outcome::Delivered {
                attempts: 2,
                code: "AA".into()
            }
        );
        assert_eq!(*r.connections.lock().unwrap(), 2);
    }

    #[test]
    fn a_reject_is_a_dead_letter_or_retried_as_the_policy_says() {
        let r = Receiver::start(vec![Script::Answer(Code::Reject)], None);
        let mut client = MllpClient::new(settings(r.port)).unwrap();
        let outcome = run(client.send_oru(&message()));
        assert_eq!(
            outcome,
            Outcome::Rejected {
                attempts: 1,
                code: "AR".into(),
                text: "207".into()
            }
        );

        let mut s = settings(r.port);
        s.on_negative_ack = NakPolicy::Retry;
        s.retry.give_up_after = Duration::from_millis(300);
        let mut client = MllpClient::new(s).unwrap();
        match run(client.send_oru(&message())) {
            Outcome::GaveUp { attempts, reason } => {
                assert!(attempts >= 2, "{attempts}");
                assert_eq!(reason, "negative acknowledgement AR (error 207)");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_receiver_that_never_answers_is_given_up_on_in_time() {
        let r = Receiver::start(vec![Script::Silent], None);
        let mut s = settings(r.port);
        s.ack_timeout = Duration::from_millis(150);
        s.retry.give_up_after = Duration::from_millis(700);
        let mut client = MllpClient::new(s).unwrap();
        let started = Instant::now();
        let outcome = run(client.send_oru(&message()));
        let took = started.elapsed();
        match outcome {
            Outcome::GaveUp { attempts, reason } => {
                assert!(attempts >= 2, "{attempts}");
                assert_eq!(reason, "timed out waiting for the acknowledgement");
            }
            other => panic!("{other:?}"),
        }
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        // Each attempt after a time-out was on a new connection.
        assert!(*r.connections.lock().unwrap() >= 2);
    }

    #[test]
    fn nothing_listening_is_given_up_on() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = settings(port);
        s.retry.give_up_after = Duration::from_millis(200);
        let mut client = MllpClient::new(s).unwrap();
        let outcome = run(client.send(b"MSH|^~\\&|A", "X"));
        assert!(
            matches!(&outcome, Outcome::GaveUp { reason, .. } if reason.starts_with("connecting")),
            "{outcome:?}"
        );
    }

    #[test]
    fn an_acknowledgement_of_another_message_is_not_taken() {
        let r = Receiver::start(vec![Script::Answer(Code::Accept)], None);
        let mut s = settings(r.port);
        s.retry.give_up_after = Duration::from_millis(200);
        let mut client = MllpClient::new(s).unwrap();
        let outcome = run(client.send(b"MSH|^~\\&|A|B|C|D|2026||ORU^R01|ONE|P|2.5\r", "TWO"));
        assert!(
            matches!(&outcome, Outcome::GaveUp { reason, .. } if reason.contains("another message")),
            "{outcome:?}"
        );
    }

    #[test]
    fn acknowledgements_are_read_without_keeping_their_texts() {
        let a = parse_ack(b"MSH|^~\\&|R|F|S|G|2026||ACK|1|P|2.5\rMSA|CA|X1\r").unwrap();
        assert!(a.accepted());
        assert_eq!((a.code.as_str(), a.control_id.as_str()), ("CA", "X1"));
        let a = parse_ack(
            b"MSH|^~\\&|R|F|S|G|2026||ACK|1|P|2.5\rMSA|AE|X1|Mary Smith not found\rERR|||204^Unknown key identifier^HL70357|E||||Mary Smith\r",
        )
        .unwrap();
        assert!(!a.accepted());
        assert_eq!(a.error_code.as_deref(), Some("204"));
        let a = parse_ack(b"MSH|^~\\&|R\rMSA|AR|X1\rERR|||Mary Smith^x\r").unwrap();
        assert_eq!(a.error_code, None);
        for bad in [
            &b"hello"[..],
            b"MSH|^~\\&|R\r",
            b"MSH|^~\\&|R\rMSA||X1\r",
            b"MSH|^~\\&|R\rMSA|OK|X1\r",
            b"MSH",
        ] {
            assert!(parse_ack(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_to_a_receiver_with_a_certificate_the_ca_signed() {
        let dir = tempfile::tempdir().unwrap();
        if !certificates(dir.path()) {
            return;
        }
        let p = |f: &str| dir.path().join(f);
        let server = crate::mllp::server_config(&p("server.pem"), &p("server.key"), None).unwrap();
        let r = Receiver::start(vec![Script::Answer(Code::Accept)], Some(server));
        let mut s = settings(r.port);
        s.tls = Some(MllpTls {
            ca_file: Some(p("ca.pem")),
            server_name: Some("localhost".into()),
        });
        let mut client = MllpClient::new(s.clone()).unwrap();
        let m = message();
        assert_eq!(
            run(client.send_oru(&m)),
            Outcome::Delivered {
                attempts: 1,
                code: "AA".into()
            }
        );
        assert_eq!(r.messages.lock().unwrap()[0], m.bytes);

        // A certificate for another name is not trusted: no delivery.
        s.tls = Some(MllpTls {
            ca_file: Some(p("ca.pem")),
            server_name: Some("elsewhere.example".into()),
        });
        s.retry.give_up_after = Duration::from_millis(200);
        let mut client = MllpClient::new(s).unwrap();
        let outcome = run(client.send_oru(&m));
        assert!(
            matches!(&outcome, Outcome::GaveUp { reason, .. } if reason.starts_with("connecting")),
            "{outcome:?}"
        );
    }
}
