//! Clinical delivery sinks: `kind = "mllp-notify"` (HL7 v2 `ORU^R01` over MLLP, each message
//! acknowledged by the receiver) and `kind = "fhir-notify"` (FHIR R4 `Communication`
//! resources POSTed to a FHIR server with a bearer token).
//!
//! They are the only sinks that take identified clinical notifications (the `notify` port of
//! an `alert` node), and a job validates only when each one's `audit` port goes to an `audit`
//! node: every delivery is a PHI-disclosure audit event. The operator is
//! [`crate::runtime::deliver`]; the transports are in [`vitalflow_connectors::notify`].

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::settings::{Duration, words};
use super::{Check, NodeSpec, Operator, Output, Prepare};
use crate::job::PortKind;
use crate::runtime::builder::{Builder, PlannedNode, Port, as_notices};
use crate::runtime::deliver::{self, DeliveryPlan, MakeTransport, OnGiveUp};

words! {
    /// What a receiver's refusal does.
    OnRefusal, "refusal policy" {
        /// The notification is dead-lettered with the receiver's code.
        DeadLetter = "dead-letter",
        /// It is sent again, as after a connection failure, until `give-up-after`.
        Retry = "retry",
    }
}

words! {
    /// What a notification not delivered within `give-up-after` does.
    GiveUp, "give-up policy" {
        /// The run fails naming the sink; a restart sends the notification again.
        Fail = "fail",
        /// It is dead-lettered and the run goes on.
        DeadLetter = "dead-letter",
    }
}

/// Retries, shared by the clinical delivery sinks.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// The first pause after a failed send; each next one doubles.
    pub initial: std::time::Duration,
    /// The longest pause.
    pub max: std::time::Duration,
    /// A notification not delivered this long after its first send is given up.
    pub give_up_after: std::time::Duration,
    /// How long an answer is waited for.
    pub timeout: std::time::Duration,
}

fn d(ms: u64) -> Duration {
    Duration(std::time::Duration::from_millis(ms))
}
fn retry_initial() -> Duration {
    d(200)
}
fn retry_max() -> Duration {
    d(30_000)
}
fn give_up_after() -> Duration {
    d(600_000)
}
fn timeout() -> Duration {
    d(10_000)
}
fn on_refusal() -> OnRefusal {
    OnRefusal::DeadLetter
}
fn on_give_up() -> GiveUp {
    GiveUp::Fail
}

/// `kind = "mllp-notify"`: each notification as an HL7 v2 `ORU^R01` message sent over MLLP to
/// a receiving system, which must acknowledge it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MllpNotifyConfig {
    /// Always `"mllp-notify"`.
    pub kind: String,
    /// Upstream ports: `notify` ports of `alert` nodes.
    pub inputs: Vec<Spanned<String>>,
    /// The receiver, `host:port`.
    pub address: Spanned<String>,
    /// TLS: the CA certificates (PEM) the receiver's certificate must chain to, relative to the
    /// job file's folder. Default: plain TCP.
    pub tls_ca: Option<Spanned<String>>,
    /// The name the receiver's certificate must carry. Default: the host of `address`.
    pub tls_server_name: Option<String>,
    /// MSH-4. Default: `VITALFLOW`.
    #[serde(default = "vitalflow")]
    pub sending_facility: String,
    /// MSH-5. Default: empty.
    #[serde(default)]
    pub receiving_application: String,
    /// MSH-6. Default: empty.
    #[serde(default)]
    pub receiving_facility: String,
    /// How long an acknowledgement is waited for. Default: `10s`.
    #[serde(default = "timeout")]
    pub ack_timeout: Duration,
    /// The first pause after a failed send (doubling up to `retry-max`). Default: `200ms`.
    #[serde(default = "retry_initial")]
    pub retry_initial: Duration,
    /// The longest pause between sends. Default: `30s`.
    #[serde(default = "retry_max")]
    pub retry_max: Duration,
    /// A notification not acknowledged this long after its first send is given up.
    /// Default: `10m`.
    #[serde(default = "give_up_after")]
    pub give_up_after: Duration,
    /// An `AE`/`AR` answer: `dead-letter` or `retry`. Default: `dead-letter`.
    #[serde(default = "on_refusal")]
    pub on_nak: OnRefusal,
    /// A notification given up: `fail` or `dead-letter`. Default: `fail`.
    #[serde(default = "on_give_up")]
    pub on_give_up: GiveUp,
}

fn vitalflow() -> String {
    "VITALFLOW".to_owned()
}

/// `kind = "fhir-notify"`: each notification as a FHIR R4 `Communication` resource POSTed to
/// `{base-url}/Communication` (a conditional create on its identifier).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FhirNotifyConfig {
    /// Always `"fhir-notify"`.
    pub kind: String,
    /// Upstream ports: `notify` ports of `alert` nodes.
    pub inputs: Vec<Spanned<String>>,
    /// The FHIR server's base URL, `https://…`.
    pub base_url: Spanned<String>,
    /// The bearer token: `env:NAME` or `file:PATH` (relative to the job file's folder).
    pub token: Spanned<String>,
    /// CA certificates (PEM) the server's certificate must chain to. Default: the system's.
    pub tls_ca: Option<Spanned<String>>,
    /// The system of the patients' MRN identifiers.
    #[serde(default = "mrn_system")]
    pub mrn_system: String,
    /// Allow an `http://` base URL (the token then travels in clear). Default: false.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// How long an answer is waited for. Default: `10s`.
    #[serde(default = "timeout")]
    pub timeout: Duration,
    /// The first pause after a failed send (doubling up to `retry-max`). Default: `200ms`.
    #[serde(default = "retry_initial")]
    pub retry_initial: Duration,
    /// The longest pause between sends. Default: `30s`.
    #[serde(default = "retry_max")]
    pub retry_max: Duration,
    /// A notification not accepted this long after its first send is given up. Default: `10m`.
    #[serde(default = "give_up_after")]
    pub give_up_after: Duration,
    /// A notification given up: `fail` or `dead-letter`. Default: `fail`.
    #[serde(default = "on_give_up")]
    pub on_give_up: GiveUp,
}

fn mrn_system() -> String {
    "urn:vitalflow:mrn".to_owned()
}

/// The ports of a clinical delivery sink.
const PORTS: &[(&str, PortKind)] = &[
    ("audit", PortKind::DomainEvent),
    ("dead-letter", PortKind::DeadLetter),
];

/// A retry policy's checks: pauses and give-up time in order.
fn check_retry(c: &mut Check<'_>, r: &Retry) {
    let path = c.path.to_owned();
    if r.initial.is_zero() || r.initial > r.max {
        c.at_node(format!(
            "`{path}`: `retry-initial` must be above zero and at most `retry-max`"
        ));
    }
    if r.timeout.is_zero() {
        c.at_node(format!("`{path}`: the answer timeout must be above zero"));
    }
}

impl MllpNotifyConfig {
    fn retry(&self) -> Retry {
        Retry {
            initial: self.retry_initial.0,
            max: self.retry_max.0,
            give_up_after: self.give_up_after.0,
            timeout: self.ack_timeout.0,
        }
    }
}

impl FhirNotifyConfig {
    fn retry(&self) -> Retry {
        Retry {
            initial: self.retry_initial.0,
            max: self.retry_max.0,
            give_up_after: self.give_up_after.0,
            timeout: self.timeout.0,
        }
    }
}

impl NodeSpec for MllpNotifyConfig {
    fn kind(&self) -> &'static str {
        "mllp-notify"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        PORTS
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Notification]
    }

    fn check(&self, c: &mut Check<'_>) {
        check_retry(c, &self.retry());
        let address = self.address.get_ref();
        if address
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            let path = c.path.to_owned();
            c.at(
                self.address.span().start,
                format!("`{path}.address`: `{address}` is not `host:port`"),
            );
        }
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let ca = self.tls_ca.as_ref().map(|ca| p.base.join(ca.get_ref()));
        let make = transports::mllp(self, ca, self.retry());
        Some(Box::new(DeliverOp {
            destination: format!(
                "{}://{}",
                if self.tls_ca.is_some() {
                    "mllps"
                } else {
                    "mllp"
                },
                self.address.get_ref()
            ),
            make,
            on_give_up: on_give_up_of(self.on_give_up),
        }))
    }
}

impl NodeSpec for FhirNotifyConfig {
    fn kind(&self) -> &'static str {
        "fhir-notify"
    }

    fn inputs(&self) -> Vec<Spanned<String>> {
        self.inputs.clone()
    }

    fn outputs(&self) -> &'static [(&'static str, PortKind)] {
        PORTS
    }

    fn accepts(&self) -> &'static [PortKind] {
        &[PortKind::Notification]
    }

    fn check(&self, c: &mut Check<'_>) {
        check_retry(c, &self.retry());
        let path = c.path.to_owned();
        let url = self.base_url.get_ref();
        let allowed =
            url.starts_with("https://") || (self.allow_plain_http && url.starts_with("http://"));
        if !allowed {
            c.at(
                self.base_url.span().start,
                format!(
                    "`{path}.base-url`: `{url}` is not an `https://` URL (the bearer token and \
                     the patients' identities travel in it; `allow-plain-http = true` allows \
                     `http://` for a server on this machine)"
                ),
            );
        }
        let token = self.token.get_ref();
        if !(token.starts_with("env:") || token.starts_with("file:")) {
            c.at(
                self.token.span().start,
                format!(
                    "`{path}.token` must be `env:NAME` or `file:PATH` (a token is never written \
                     in a job file)"
                ),
            );
        }
    }

    fn prepare(&self, p: &mut Prepare<'_>) -> Option<Box<dyn Operator>> {
        let ca = self.tls_ca.as_ref().map(|ca| p.base.join(ca.get_ref()));
        let make = match transports::fhir(self, &p.base, ca, self.retry()) {
            Ok(m) => m,
            Err(message) => {
                let path = p.path.clone();
                p.at(self.token.span(), format!("{path}.token: {message}"));
                return None;
            }
        };
        Some(Box::new(DeliverOp {
            destination: self.base_url.get_ref().trim_end_matches('/').to_owned(),
            make,
            on_give_up: on_give_up_of(self.on_give_up),
        }))
    }
}

const fn on_give_up_of(g: GiveUp) -> OnGiveUp {
    match g {
        GiveUp::Fail => OnGiveUp::Fail,
        GiveUp::DeadLetter => OnGiveUp::DeadLetter,
    }
}

/// A planned clinical delivery sink.
pub struct DeliverOp {
    /// Where it sends (no PHI, no secret).
    pub destination: String,
    /// Its transport, per worker.
    pub make: MakeTransport,
    /// What a notification not delivered does.
    pub on_give_up: OnGiveUp,
}

impl Operator for DeliverOp {
    fn build<'s>(&self, b: &mut Builder<'s, '_>, node: &PlannedNode) {
        let name = node.name.as_str();
        let counters = b.counters(name);
        let input = b.inputs(&node.inputs, as_notices);
        let plan = DeliveryPlan {
            sink: name.to_owned(),
            destination: self.destination.clone(),
            make: Arc::clone(&self.make),
            run: b.plan.run.clone(),
            on_give_up: self.on_give_up,
        };
        let (events, dead, commits) = deliver::deliver(input, plan, counters, b.failure.clone());
        b.output(name, "audit", Port::Events(events));
        b.output(name, "dead-letter", Port::Dead(dead));
        b.commit(name, commits);
    }

    fn output(&self) -> Output {
        Output::External
    }
}

/// The transports behind the two kinds: the connectors' clients, each on a runtime of its own
/// on the delivery thread.
mod transports {
    use std::path::Path;

    use vitalflow_connectors::notify::{
        FhirHttpClient, FhirHttpSettings, FhirSettings, MllpClient, MllpClientSettings, MllpTls,
        NakPolicy, OruSettings, Outcome, RetryPolicy, communication, load_token, oru_r01,
    };
    use vitalflow_model::notification::ClinicalNotification;

    use super::{
        Arc, FhirNotifyConfig, MakeTransport, MllpNotifyConfig, OnRefusal, PathBuf, Retry,
    };
    use crate::runtime::deliver::Transport;

    fn policy(r: Retry) -> RetryPolicy {
        RetryPolicy {
            initial_delay: r.initial,
            max_delay: r.max,
            give_up_after: r.give_up_after,
        }
    }

    fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start its delivery runtime: {e}"))
    }

    /// A notification that cannot be made into a message is refused, naming why (no PHI).
    fn unmade(e: impl std::fmt::Display) -> Outcome {
        Outcome::Rejected {
            attempts: 0,
            code: "unsendable".to_owned(),
            text: e.to_string(),
        }
    }

    struct Mllp {
        runtime: tokio::runtime::Runtime,
        client: MllpClient,
        oru: OruSettings,
    }

    impl Transport for Mllp {
        fn deliver(&mut self, n: &ClinicalNotification) -> Outcome {
            let message = match oru_r01(n, &self.oru, chrono::Utc::now()) {
                Ok(m) => m,
                Err(e) => return unmade(e),
            };
            self.runtime.block_on(self.client.send_oru(&message))
        }
    }

    pub(super) fn mllp(c: &MllpNotifyConfig, ca: Option<PathBuf>, retry: Retry) -> MakeTransport {
        let (host, port) = c
            .address
            .get_ref()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.parse::<u16>().unwrap_or(0)))
            .unwrap_or_default();
        let tls = (ca.is_some() || c.tls_server_name.is_some()).then(|| MllpTls {
            ca_file: ca,
            server_name: c.tls_server_name.clone(),
        });
        let mut settings = MllpClientSettings::new(host, port);
        settings.tls = tls;
        settings.ack_timeout = retry.timeout;
        settings.retry = policy(retry);
        settings.on_negative_ack = match c.on_nak {
            OnRefusal::DeadLetter => NakPolicy::DeadLetter,
            OnRefusal::Retry => NakPolicy::Retry,
        };
        let oru = OruSettings {
            sending_facility: c.sending_facility.clone(),
            receiving_application: c.receiving_application.clone(),
            receiving_facility: c.receiving_facility.clone(),
            ..OruSettings::default()
        };
        Arc::new(move || {
            let runtime = runtime()?;
            let client = MllpClient::new(settings.clone()).map_err(|e| e.to_string())?;
            Ok(Box::new(Mllp {
                runtime,
                client,
                oru: oru.clone(),
            }) as Box<dyn Transport>)
        })
    }

    struct Fhir {
        runtime: tokio::runtime::Runtime,
        client: FhirHttpClient,
        settings: FhirSettings,
    }

    impl Transport for Fhir {
        fn deliver(&mut self, n: &ClinicalNotification) -> Outcome {
            let resource = match communication(n, &self.settings) {
                Ok(r) => r,
                Err(e) => return unmade(e),
            };
            self.runtime.block_on(
                self.client
                    .post_communication(&resource, &n.notification_id),
            )
        }
    }

    pub(super) fn fhir(
        c: &FhirNotifyConfig,
        base: &Path,
        ca: Option<PathBuf>,
        retry: Retry,
    ) -> Result<MakeTransport, String> {
        // A relative token file is the job file's folder's.
        let source = c.token.get_ref();
        let source = match source.strip_prefix("file:") {
            Some(path) => format!("file:{}", base.join(path).display()),
            None => source.clone(),
        };
        let token = load_token(&source).map_err(|e| e.to_string())?;
        let mut settings = FhirHttpSettings::new(c.base_url.get_ref().clone());
        settings.ca_file = ca;
        settings.allow_plain_http = c.allow_plain_http;
        settings.request_timeout = retry.timeout;
        settings.retry = policy(retry);
        let resource = FhirSettings {
            mrn_system: c.mrn_system.clone(),
        };
        Ok(Arc::new(move || {
            let runtime = runtime()?;
            let client = {
                let _entered = runtime.enter();
                FhirHttpClient::new(settings.clone(), &token).map_err(|e| e.to_string())?
            };
            Ok(Box::new(Fhir {
                runtime,
                client,
                settings: resource.clone(),
            }) as Box<dyn Transport>)
        }))
    }
}
