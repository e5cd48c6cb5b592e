//! The job-file reference (docs/job-files.md) describes every setting of every node kind: each
//! setting the settings structs read is named in its kind's section.
#![allow(clippy::unwrap_used, missing_docs)]

use vitalflow_engine::job::Section;
use vitalflow_engine::job::config::{EmbeddedConfig, JobSection};
use vitalflow_engine::nodes::alert::{CriticalValuesConfig, LimitConfig, News2Config, RuleConfig};
use vitalflow_engine::nodes::mllp::TlsConfig;
use vitalflow_engine::nodes::records::FieldConfig;
use vitalflow_engine::nodes::{kinds, setting_names};

/// Settings every node has, described once in the reference's rules.
const COMMON: [&str; 2] = ["kind", "inputs"];

fn reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/job-files.md");
    std::fs::read_to_string(path).unwrap()
}

/// The text of the section whose heading line is `heading` (up to the next heading of its level
/// or above).
fn section(doc: &str, heading: impl Fn(&str) -> bool) -> Option<&str> {
    let start = doc.lines().position(|l| l.starts_with('#') && heading(l))?;
    let level = doc
        .lines()
        .nth(start)?
        .chars()
        .take_while(|c| *c == '#')
        .count();
    let lines: Vec<&str> = doc.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|l| {
            let hashes = l.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level
        })
        .map_or(lines.len(), |p| start + 1 + p);
    let from = lines[..start].iter().map(|l| l.len() + 1).sum::<usize>();
    let to = lines[..end].iter().map(|l| l.len() + 1).sum::<usize>();
    doc.get(from..to.min(doc.len()))
}

/// Whether `text` describes setting `name`: as `` `name` `` or `` `name = ...` `` in prose, or as a
/// key of a TOML example (`name = ...` at the start of a line, or a `[...name]` table).
fn describes(text: &str, name: &str) -> bool {
    text.contains(&format!("`{name}`"))
        || text.contains(&format!("`{name} = "))
        || text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{name} = "))
                || (l.starts_with('[')
                    && (l.contains(&format!(".{name}]")) || l.contains(&format!(".{name}."))))
        })
}

/// The names of `names` that `text` does not describe.
fn missing(text: &str, names: &[&'static str]) -> Vec<&'static str> {
    names
        .iter()
        .filter(|n| !COMMON.contains(n) && !describes(text, n))
        .copied()
        .collect()
}

#[test]
fn every_setting_of_every_kind_is_in_the_reference() {
    let doc = reference();
    let mut problems = Vec::new();
    for kind in kinds() {
        for name in kind.names {
            let tag = format!("`{name}`");
            let heading = |l: &str| {
                l.starts_with("### ")
                    && l.contains(&tag)
                    && match (*name, kind.section) {
                        ("kafka", Section::Sources) => l.contains("(source)"),
                        ("kafka", Section::Sinks) => l.contains("(sink)"),
                        _ => true,
                    }
            };
            let Some(text) = section(&doc, heading) else {
                problems.push(format!(
                    "no section `### `{name}`` for a {:?} kind",
                    kind.section
                ));
                continue;
            };
            for field in missing(text, (kind.settings)()) {
                problems.push(format!("`{name}`: setting `{field}` is not described"));
            }
        }
    }
    let nested: [(&str, &[&'static str]); 8] = [
        ("## `[job]`", setting_names::<JobSection>()),
        ("## `[embedded]`", setting_names::<EmbeddedConfig>()),
        ("### Declared schemas", setting_names::<FieldConfig>()),
        ("### `alert`", setting_names::<News2Config>()),
        ("### `alert`", setting_names::<RuleConfig>()),
        ("### `alert`", setting_names::<CriticalValuesConfig>()),
        ("### `alert`", setting_names::<LimitConfig>()),
        ("### `mllp`", setting_names::<TlsConfig>()),
    ];
    for (heading, names) in nested {
        let Some(text) = section(&doc, |l| l.starts_with(heading)) else {
            problems.push(format!("no section {heading}"));
            continue;
        };
        for field in missing(text, names) {
            problems.push(format!("{heading}: setting `{field}` is not described"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/job-files.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_names_are_read_from_the_settings_structs() {
    // The check above is only as good as the names: they are the job file's, renames included.
    let parquet = kinds()
        .iter()
        .find(|k| k.names == ["parquet"])
        .map(|k| (k.settings)())
        .unwrap();
    for name in ["path", "roll-rows", "roll-interval", "partition"] {
        assert!(parquet.contains(&name), "{parquet:?}");
    }
    let join = kinds()
        .iter()
        .find(|k| k.names == ["join"])
        .map(|k| (k.settings)())
        .unwrap();
    assert!(
        join.contains(&"type") && join.contains(&"table-key"),
        "{join:?}"
    );
}
