//! Identified clinical notifications end to end: the shipped `bedside-alerting` job takes ADT
//! and ORU^R01 messages over MLLP and delivers a notification per alert to receiving systems
//! written without vitalflow's code (`tests/python/receivers.py`: an MLLP receiver that parses
//! with the `hl7` package, and a FHIR server over HTTPS that validates with `fhir.resources`).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mllp::{Client, Job, certificates};
use crate::support::{
    PhiScan, free_port, job_variant, key_file, python_check, python_with, read_jsonl, root,
    scannable_text, show, vitalflow,
};

/// A receiving system run by `receivers.py`, killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(python: &str, dir: &Path, name: &str, args: &[&str]) -> Self {
        let port_file = dir.join(format!("{name}.port"));
        let log = dir.join(format!("{name}.jsonl"));
        let child = Command::new(python)
            .arg(root().join("tests/python/receivers.py"))
            .arg(args[0])
            .arg(&port_file)
            .arg(&log)
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the {name} receiver did not start: {}",
                std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { child, port, log }
    }

    /// What it received so far, a JSON object each.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PATIENTS: usize = 24;

/// A patient of the test: MRN, family and given names, ward, room, bed. Every fourth one
/// (`p % 4 == 0`) is desaturating.
struct Patient {
    mrn: String,
    family: String,
    given: String,
    ward: String,
    room: String,
    bed: String,
}

fn patient(p: usize) -> Patient {
    Patient {
        mrn: format!("MRN{p:05}Q"),
        family: format!("Quintavalle{p:02}"),
        given: format!("Ottoline{p:02}"),
        ward: format!("WARD{}", p % 3),
        room: format!("Room{p:03}Kestrel"),
        bed: format!("Bed{p:03}Heron"),
    }
}

fn adt(p: usize) -> Vec<u8> {
    let x = patient(p);
    format!(
        "MSH|^~\\&|ADT|HOSP|VITALFLOW|HOSP|20260301080000||ADT^A01^ADT_A01|ADT{p:05}|P|2.5.1\r\
         EVN|A01|20260301080000\r\
         PID|1||{}^^^HOSP^MR||{}^{}||19600101|F\r\
         PV1|1|I|{}^{}^{}||||||||||||||||V{p:05}|||||||||||||||||||||||||20260301080000\r",
        x.mrn, x.family, x.given, x.ward, x.room, x.bed
    )
    .into_bytes()
}

/// Reading `k` of patient `p` (minute `k` after 09:00): pulse, breathing, temperature, and an
/// SpO2 of 80 % for the desaturating patients (97 % for the others).
fn oru(p: usize, k: usize) -> Vec<u8> {
    let x = patient(p);
    let time = format!("202603010{}{:02}00", 9 + k / 60, k % 60);
    let spo2 = if p.is_multiple_of(4) { 80 } else { 97 };
    format!(
        "MSH|^~\\&|MONITOR|ICU|VITALFLOW|HOSP|{time}||ORU^R01^ORU_R01|ORU{p:05}{k:02}|P|2.5.1\r\
         PID|1||{}^^^HOSP^MR||{}^{}\r\
         OBR|1|||8716-3^Vital signs^LN|||{time}\r\
         OBX|1|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||F|||{time}\r\
         OBX|2|NM|9279-1^Respiratory rate^LN||16|/min^^UCUM|||||F|||{time}\r\
         OBX|3|NM|59408-5^Oxygen saturation^LN||{spo2}|%^^UCUM|||||F|||{time}\r\
         OBX|4|NM|8310-5^Body temperature^LN||37.0|Cel^^UCUM|||||F|||{time}\r",
        x.mrn, x.family, x.given
    )
    .into_bytes()
}

/// A laboratory result of patient `p`: a critical potassium (6.9 mEq/L, at or above the default
/// limit of 6.0 mmol/L).
fn critical_potassium(p: usize) -> Vec<u8> {
    let x = patient(p);
    format!(
        "MSH|^~\\&|LAB|HOSP|VITALFLOW|HOSP|20260301093000||ORU^R01^ORU_R01|LAB{p:05}|P|2.5.1\r\
         PID|1||{}^^^HOSP^MR||{}^{}\r\
         OBR|1||ACC{p:05}^LAB|24323-8^Metabolic panel^LN|||20260301092000\r\
         OBX|1|NM|2823-3^Potassium^LN||6.9|mEq/L|3.5-5.1|HH|||F|||20260301092000\r",
        x.mrn, x.family, x.given
    )
    .into_bytes()
}

/// The shipped job with a second clinical delivery sink, `ehr` (FHIR Communication over HTTPS
/// to `fhir_port`), audited and dead-lettered like the pager.
fn job_with_ehr(dir: &Path, fhir_port: u16) -> PathBuf {
    let ehr = format!(
        r#"[sinks.ehr]
kind = "fhir-notify"
inputs = ["bedside-alerts.notify", "lab-alerts.notify"]
base-url = "https://localhost:{fhir_port}/fhir"
token = "file:token"
tls-ca = "ca.pem"
retry-initial = "50ms"

[sinks.alerts]"#
    );
    job_variant(
        "dataflows/bedside-alerting.toml",
        dir,
        &[
            ("[sinks.alerts]", &ehr),
            (
                r#""ward-pager.audit"]"#,
                r#""ward-pager.audit", "ehr.audit"]"#,
            ),
            (
                "  \"ward-pager.dead-letter\",\n]",
                "  \"ward-pager.dead-letter\",\n  \"ehr.dead-letter\",\n]",
            ),
        ],
    )
}

/// Acceptance: ADT and ORU^R01 messages for 24 patients over MLLP; the 6 desaturating ones
/// raise alerts, and a critical potassium of one of them a `critical_value_detected`. The MLLP receiver and the FHIR server each get one identified notification per
/// alert event (the FHIR server after answering the first two requests 503), with the MRN,
/// names and bed of the patient the pseudonymous alert event stands for; each delivery has its
/// `healthcare.audit.phi_access` audit event, naming the patient by pseudonym; and no MRN,
/// name, room or bed is in the Parquet tables, the alert events, the audit trail, the
/// dead-letter reasons or the run's output.
#[test]
fn each_alert_reaches_the_care_team_identified_and_each_delivery_is_audited() {
    let Some(python) = python_with("hl7, fhir.resources.communication") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    if certificates(dir.path()).is_none() {
        return;
    }
    let token = "test-bearer-token-7f3a";
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let pager = Receiver::start(&python, dir.path(), "pager", &["mllp"]);
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let ehr = Receiver::start(
        &python,
        dir.path(),
        "ehr",
        &[
            "fhir",
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            token,
            "--unavailable",
            "2",
        ],
    );
    let job = job_with_ehr(dir.path(), ehr.port);
    let key = key_file(dir.path());
    let port = free_port();
    let out = dir.path().join("out");
    let (listen, pager_address, key_source) = (
        format!("127.0.0.1:{port}"),
        format!("127.0.0.1:{}", pager.port),
        format!("file:{}", key.display()),
    );
    let running = Job::start_with(
        &job,
        &out,
        port,
        0,
        "info",
        &[
            ("VITALFLOW_MLLP_LISTEN", listen.as_str()),
            ("VITALFLOW_PAGER_ADDRESS", pager_address.as_str()),
            ("VITALFLOW_KEY_SOURCE", key_source.as_str()),
        ],
    );

    let mut client = Client::connect(port).unwrap();
    let mut messages: Vec<Vec<u8>> = (0..PATIENTS).map(adt).collect();
    for k in 0..3 {
        messages.extend((0..PATIENTS).map(|p| oru(p, k)));
    }
    // A critical laboratory value of a desaturating patient: one more alert, paged the same way.
    messages.push(critical_potassium(0));
    for m in &messages {
        let ack = client.call(m).unwrap();
        assert_eq!(ack.code, "AA", "{}", ack.text);
    }
    let desaturating: BTreeSet<usize> = (0..PATIENTS).filter(|p| p.is_multiple_of(4)).collect();

    // Every desaturating patient's alert reaches both receivers.
    let waited = Instant::now();
    let delivered = |r: &Receiver, ok: &dyn Fn(&Value) -> bool| -> usize {
        r.received().iter().filter(|m| ok(m)).count()
    };
    while delivered(&pager, &|_| true) < desaturating.len() + 1
        || delivered(&ehr, &|m| m["status"] == 201) < desaturating.len() + 1
    {
        assert!(
            waited.elapsed() < Duration::from_secs(90),
            "not delivered within 90 s: pager {:?}, ehr {:?}: {}",
            pager.received(),
            ehr.received(),
            running.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr_before_stop = running.stderr();
    let (status, stdout) = running.stop();
    assert!(status.success(), "{status}: {stdout}\n{stderr_before_stop}");

    // The pseudonymous alert events, by id.
    let alerts: Vec<Value> = read_jsonl(&out.join("alerts"));
    assert!(alerts.len() >= desaturating.len(), "{alerts:?}");
    let by_id: BTreeMap<&str, &Value> = alerts
        .iter()
        .map(|a| (a["metadata"]["eventId"].as_str().unwrap(), a))
        .collect();
    let critical: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["metadata"]["eventType"] == "critical_value_detected")
        .collect();
    assert_eq!(critical.len(), 1, "{alerts:?}");
    let c = &critical[0]["payload"];
    assert_eq!(
        (&c["parameter"], &c["value"], &c["threshold"], &c["unit"]),
        (
            &Value::from("potassium"),
            &Value::from(6.9),
            &Value::from(6.0),
            &Value::from("mmol/L")
        ),
        "{c}"
    );

    // The same alert events in the Parquet sink, read back with DuckDB.
    let table = python_check(
        &python,
        "mllp_check.py",
        &["alerts", out.join("alert-events").to_str().unwrap()],
    );
    let table = table.as_array().unwrap();
    assert_eq!(table.len(), alerts.len(), "{table:?}");
    for row in table {
        let a = by_id[row["event_id"].as_str().unwrap()];
        assert_eq!(row["patient"], a["payload"]["patient"], "{row}");
        assert_eq!(row["rule"], a["payload"]["rule"], "{row}");
        assert_eq!(row["event_type"], a["metadata"]["eventType"], "{row}");
    }

    // The MLLP receiver: one ORU^R01 per alert event, naming it; the patient is the one the
    // alert event's pseudonym stands for, the same for every alert of the pseudonym.
    let mut mrn_of: BTreeMap<String, String> = BTreeMap::new();
    let pages = pager.received();
    assert_eq!(pages.len(), alerts.len(), "{pages:?}");
    let mut paged = BTreeSet::new();
    for m in &pages {
        assert_eq!(m["type"], "ORU^R01^ORU_R01", "{m}");
        let texts: Vec<&str> = m["obx"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["value"].as_str())
            .collect();
        let id = by_id
            .keys()
            .find(|id| texts.iter().any(|t| t.contains(*id)))
            .unwrap_or_else(|| panic!("no alert event id in {m}"));
        assert!(paged.insert(*id), "two messages for {id}");
        let alert = by_id[id];
        let p = (0..PATIENTS)
            .find(|p| patient(*p).mrn == m["mrn"])
            .unwrap_or_else(|| panic!("unknown MRN in {m}"));
        let x = patient(p);
        assert!(desaturating.contains(&p), "{m}");
        assert_eq!(
            (&m["family"], &m["given"], &m["ward"], &m["room"], &m["bed"]),
            (
                &Value::from(x.family.clone()),
                &Value::from(x.given.clone()),
                &Value::from(x.ward.clone()),
                &Value::from(x.room.clone()),
                &Value::from(x.bed.clone())
            ),
            "{m}"
        );
        let pseudonym = alert["payload"]["patient"].as_str().unwrap().to_owned();
        let known = mrn_of.entry(pseudonym).or_insert_with(|| x.mrn.clone());
        assert_eq!(*known, x.mrn, "one pseudonym, two patients");
    }
    let mrns: BTreeSet<&String> = mrn_of.values().collect();
    assert_eq!(mrns.len(), mrn_of.len(), "one patient, two pseudonyms");
    assert_eq!(
        mrns.into_iter().cloned().collect::<BTreeSet<_>>(),
        desaturating.iter().map(|p| patient(*p).mrn).collect(),
    );

    // The FHIR server: two 503s, then one valid Communication per alert event, with the bearer
    // token, its identifier the alert event's id, the subject the patient's MRN.
    let requests = ehr.received();
    assert_eq!(
        requests.iter().filter(|r| r["status"] == 503).count(),
        2,
        "{requests:?}"
    );
    let created: Vec<&Value> = requests.iter().filter(|r| r["status"] == 201).collect();
    assert_eq!(created.len(), alerts.len(), "{requests:?}");
    let mut communicated = BTreeSet::new();
    for r in &created {
        assert_eq!(r["authorized"], true, "{r}");
        assert_eq!(r["path"], "/fhir/Communication", "{r}");
        assert_eq!(r["content_type"], "application/fhir+json", "{r}");
        let resource = &r["resource"];
        let id = resource["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["system"] == "urn:vitalflow:notification")
            .and_then(|i| i["value"].as_str())
            .unwrap_or_else(|| panic!("no notification identifier: {resource}"));
        assert!(by_id.contains_key(id), "{id}");
        assert!(
            r["if_none_exist"].as_str().is_some_and(|h| h.contains(id)),
            "{r}"
        );
        assert!(communicated.insert(id.to_owned()), "two resources for {id}");
        let pseudonym = by_id[id]["payload"]["patient"].as_str().unwrap();
        let text = resource.to_string();
        assert!(text.contains(&mrn_of[pseudonym]), "{resource}");
    }

    // The audit: one PHI disclosure per delivery, naming sink, alert and pseudonym.
    let audit = read_jsonl(&out.join("audit"));
    for sink in ["ward-pager", "ehr"] {
        let disclosed: BTreeMap<&str, &Value> = audit
            .iter()
            .map(|r| &r["event"])
            .filter(|e| {
                e["metadata"]["eventType"] == "healthcare.audit.phi_access"
                    && e["payload"]["stage"] == sink
            })
            .map(|e| {
                (
                    e["payload"]["detail"]["notificationId"].as_str().unwrap(),
                    e,
                )
            })
            .collect();
        assert_eq!(
            disclosed.keys().copied().collect::<BTreeSet<_>>(),
            by_id.keys().copied().collect(),
            "{sink}"
        );
        for (id, e) in disclosed {
            assert_eq!(
                e["payload"]["detail"]["patient"], by_id[id]["payload"]["patient"],
                "{e}"
            );
            assert_eq!(
                e["metadata"]["correlationId"],
                by_id[id]["payload"]["alertId"]
            );
        }
    }

    // The audit trail, disclosures included, verifies.
    let verified = vitalflow(
        &["audit", "verify", out.join("audit").to_str().unwrap()],
        &[],
    );
    assert!(verified.status.success(), "{}", show(&verified));

    // PHI: in the receivers' traffic (the scan finds it there), nowhere else.
    let phi: Vec<String> = (0..PATIENTS)
        .flat_map(|p| {
            let x = patient(p);
            [x.mrn, x.family, x.given, x.room, x.bed]
        })
        .collect();
    let scan = PhiScan::new(&phi);
    assert!(
        !scan
            .found(&std::fs::read_to_string(&pager.log).unwrap())
            .is_empty()
    );
    let mut places: Vec<(String, String)> = vec![
        ("stdout".to_owned(), stdout.clone()),
        ("stderr".to_owned(), stderr_before_stop),
    ];
    for folder in ["fhir", "alerts", "alert-events", "audit"] {
        for f in crate::support::output_files(&out.join(folder)) {
            places.push((f.display().to_string(), scannable_text(&f)));
        }
    }
    for d in read_jsonl(&out.join("dead-letter")) {
        places.push(("a dead-letter reason".to_owned(), d["reason"].to_string()));
    }
    assert!(places.len() > 4, "{places:?}");
    for (place, text) in &places {
        let found = scan.found(text);
        assert!(
            found.is_empty(),
            "PHI in {place}: {:?}",
            found.iter().map(|i| &phi[*i]).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "{} alert events: {} ORU^R01 to the pager, {} Communications (after 2 × 503); {} places \
         scanned for PHI",
        alerts.len(),
        pages.len(),
        created.len(),
        places.len()
    );
}

/// Identified notifications go only to clinical delivery sinks, each audited: wiring the
/// `notify` port to Parquet or JSON lines, or a delivery sink whose `audit` port no audit node
/// reads, fails validation at the line and column.
#[test]
fn identified_notifications_wired_elsewhere_fail_validation_at_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(root().join("dataflows/bedside-alerting.toml")).unwrap();
    for (name, from, to, expected) in [
        (
            "to-parquet",
            "inputs = [\"canonize\"]",
            "inputs = [\"bedside-alerts.notify\"]",
            "`sinks.fhir.inputs`: `bedside-alerts.notify` carries identified clinical \
             notifications (with PHI), but a parquet node takes",
        ),
        (
            "to-jsonl",
            "inputs = [\"bedside-alerts\", \"lab-alerts\"]",
            "inputs = [\"bedside-alerts.notify\", \"lab-alerts\"]",
            "`sinks.alerts.inputs`: `bedside-alerts.notify` carries identified clinical \
             notifications (with PHI), but a jsonl node takes",
        ),
        (
            "unaudited",
            ", \"ward-pager.audit\"]",
            "]",
            "`sinks.ward-pager` delivers identified notifications, and every delivery must be \
             audited",
        ),
    ] {
        assert!(shipped.contains(from), "{from}");
        let text = shipped.replacen(from, to, 1);
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        let o = vitalflow(&["validate", path.to_str().unwrap()], &[]);
        assert!(!o.status.success(), "{name}: {}", show(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        // The place: the line and column of the input (or of the sink's table name).
        let table = match name {
            "to-parquet" => "[sinks.fhir]",
            "to-jsonl" => "[sinks.alerts]",
            _ => "[sinks.ward-pager]",
        };
        let start = text.find(table).unwrap();
        let at = match name {
            "unaudited" => start + "[sinks.".len(),
            _ => start + text[start..].find(to).unwrap() + "inputs = [".len(),
        };
        let line = text[..at].matches('\n').count() + 1;
        let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
        let place = format!("{}:{line}:{column}: {expected}", path.display());
        assert!(
            stderr.contains(&place),
            "{name}: expected `{place}` in {stderr}"
        );
    }
}
