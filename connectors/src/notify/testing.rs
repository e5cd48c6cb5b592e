//! What the delivery tests share: a sample notification, an HL7 unescaper, test certificates
//! and the Python with the test packages.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use vitalflow_model::notification::{ClinicalNotification, IdentifiedPatient};

/// A notification whose texts hold every HL7 delimiter.
pub(crate) fn notification() -> ClinicalNotification {
    ClinicalNotification {
        notification_id: "3f2a9c1e-7b44-4d0e-9a51-0c6d2e8f1a77".into(),
        alert_id: "alert-42".into(),
        event_type: "clinical.alert.escalated".into(),
        event_source: "vitalflow/ward-job/news2".into(),
        rule: "news2".into(),
        level: "high".into(),
        previous_level: "medium".into(),
        score: Some(7),
        sub_scores: BTreeMap::from([("respiration_rate".into(), 3), ("spo2".into(), 2)]),
        condition: Some("rr > 24 |\r^x".into()),
        observations: vec!["obs-1".into()],
        patient_pseudonym: "p-0001".into(),
        patient: IdentifiedPatient {
            mrn: "MRN|77^1".into(),
            family_name: Some("O'Brien^|&".into()),
            given_name: Some("Mary~Ann\\".into()),
            ward: Some("Ward 7&8".into()),
            room: Some("12".into()),
            bed: Some("B".into()),
        },
        event_time: "2026-03-01T09:59:30Z".parse().unwrap(),
        raised_at: "2026-03-01T09:40:00Z".parse().unwrap(),
        emitted_at: "2026-03-01T10:00:01.500Z".parse().unwrap(),
    }
}

/// Undoes HL7 escaping (`\F\ \S\ \R\ \E\ \T\ \Xhh\`).
pub(crate) fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('\\').unwrap();
        match &after[..end] {
            "F" => out.push('|'),
            "S" => out.push('^'),
            "R" => out.push('~'),
            "E" => out.push('\\'),
            "T" => out.push('&'),
            x if x.starts_with('X') => {
                out.push(char::from(u8::from_str_radix(&x[1..], 16).unwrap()));
            }
            other => panic!("unknown escape {other}"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The Python of `VITALFLOW_PYTHON` if it imports `modules`; `None` after a loud message
/// otherwise (a failure when `VITALFLOW_REQUIRE_PYTHON` is set).
pub(crate) fn python(modules: &str) -> Option<String> {
    let python = std::env::var("VITALFLOW_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var("VITALFLOW_REQUIRE_PYTHON").is_err(),
        "VITALFLOW_REQUIRE_PYTHON is set but {python} cannot import {modules}"
    );
    eprintln!("!!! SKIPPED: {python} cannot import {modules}; set VITALFLOW_PYTHON");
    None
}

/// Runs `script` with `input` on its standard input; its standard output, as JSON.
pub(crate) fn python_run(python: &str, script: &str, input: &[u8]) -> serde_json::Value {
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Test certificates made with the `openssl` command in `dir`: a CA (`ca.pem`) and a server
/// certificate for `localhost` and 127.0.0.1 (`server.pem`, `server.key`), P-256. `false`
/// after a loud message when there is no `openssl`.
pub(crate) fn certificates(dir: &Path) -> bool {
    let openssl = |args: &[&str]| Command::new("openssl").args(args).current_dir(dir).output();
    if openssl(&["version"]).is_err() {
        assert!(
            std::env::var("VITALFLOW_REQUIRE_PYTHON").is_err(),
            "VITALFLOW_REQUIRE_PYTHON is set (a full test run) but there is no `openssl` command"
        );
        eprintln!("!!! SKIPPED: no `openssl` command to make test certificates");
        return false;
    }
    let run = |args: &[&str]| {
        let o = openssl(args).unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vitalflow test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ];
    ca.extend(ec);
    run(&ca);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let mut req = vec![
        "req",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=test",
    ];
    req.extend(ec);
    run(&req);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    true
}
