//! The configuration reference (docs/configuration.md) cannot drift from the
//! config types: every `section.key` the sidecar accepts is documented there
//! with its true default, every key documented there is one the sidecar
//! accepts, and a key is documented as required exactly when the sidecar
//! refuses a file without it. A new key or section fails these tests until
//! it is documented.
//!
//! The keys come from the code at run time, through the public API: the
//! config types themselves (a key the parser does not know is refused with
//! the list of the keys it expects, section by section, which names every
//! field, an optional one included), the default config rendered as
//! `factory-sidecar check` prints it, and the reference file
//! config/sidecar.toml, parsed and rendered the same way (it sets every key).
//!
//! The reference's format: one `## [section]` heading per section, then a
//! table whose rows are ``| `key` | type | default | what it does |``; the
//! default is a TOML literal in backticks (`"10s"`, `true`, `["/api/order"]`)
//! or the word "required".

use std::collections::{BTreeMap, BTreeSet};

use factory_sidecar::config::{Config, UpstreamUrl, duration};

const REFERENCE_DOC: &str = include_str!("../docs/configuration.md");
const REFERENCE_FILE: &str = include_str!("../config/sidecar.toml");

fn no_env(_: &str) -> Option<String> {
    None
}

/// `section.key` -> value for every leaf of a TOML table (sub-tables are
/// sections, arrays are values).
fn leaves(table: &toml::Table) -> BTreeMap<String, toml::Value> {
    fn walk(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(t) => walk(t, &path, out),
                v => {
                    out.insert(path, v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, "", &mut out);
    out
}

fn table(src: &str, what: &str) -> toml::Table {
    src.parse()
        .unwrap_or_else(|e| panic!("{what} is not TOML: {e}\n{src}"))
}

/// The effective default config, as `check` renders it (the upstream URL,
/// which has no default, set to a placeholder).
fn defaults() -> BTreeMap<String, toml::Value> {
    let url = UpstreamUrl::parse("https://factory.invalid").expect("placeholder URL");
    leaves(&table(
        &Config::for_upstream(url).to_masked_toml(),
        "the rendered default config",
    ))
}

fn parses(src: &str) -> Result<Config, String> {
    Config::parse(src, "config/sidecar.toml", &no_env).map_err(|e| e.to_string())
}

/// The documented default of an optional key that has no value of its own
/// (left out, something else decides; say, `retry.retry_non_idempotent`
/// follows `orders.paths`).
const NOT_SET: &str = "not set";

/// A key no config section has, to make the parser list the ones it has.
const PROBE_KEY: &str = "zz_not_a_config_key";

/// The keys the config types expect in the table at `path` (sections, from
/// the top), read from the error a key they do not know gets; `None` when
/// the value at `path` is not a table of known keys (a plain value).
fn expected_keys(path: &[String]) -> Option<Vec<String>> {
    let mut doc = table(REFERENCE_FILE, "config/sidecar.toml");
    let mut t = &mut doc;
    for part in path {
        t = match t
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => inner,
            _ => return None,
        };
    }
    t.insert(PROBE_KEY.to_owned(), toml::Value::Integer(0));
    let message = parses(&toml::to_string(&doc).expect("render TOML")).err()?;
    // "unknown key `zz..` in [section]; known keys: `a`, `b`, ..."
    let (_, rest) = message.split_once(&format!("`{PROBE_KEY}`"))?;
    let (_, expected) = rest.split_once("known keys:")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every `section.key` the config types define, optional ones included.
fn schema_keys(path: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match expected_keys(path) {
        Some(keys) => {
            for key in keys {
                path.push(key);
                schema_keys(path, out);
                path.pop();
            }
        }
        None => {
            out.insert(path.join("."));
        }
    }
}

/// Every key the sidecar accepts.
fn accepted_keys() -> BTreeSet<String> {
    let reference = parses(REFERENCE_FILE)
        .unwrap_or_else(|e| panic!("config/sidecar.toml must be a valid config: {e}"));
    let mut keys = BTreeSet::new();
    schema_keys(&mut Vec::new(), &mut keys);
    assert!(
        keys.iter().any(|k| k == "upstream.url"),
        "the config types' keys could not be read from the parser's errors: {keys:?}"
    );
    keys.extend(defaults().into_keys());
    keys.extend(
        leaves(&table(
            &reference.to_masked_toml(),
            "the rendered reference",
        ))
        .into_keys(),
    );
    keys.extend(leaves(&table(REFERENCE_FILE, "config/sidecar.toml")).into_keys());
    keys
}

/// One documented key.
#[derive(Debug)]
struct Row {
    line: usize,
    /// The default cell with its backticks removed, or "required".
    default: String,
}

/// Splits a table row into cells; a `|` inside backticks stays in its cell.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut in_code = false;
    for ch in inner.chars() {
        match ch {
            '`' => {
                in_code = !in_code;
                out.last_mut().expect("a cell").push(ch);
            }
            '|' if !in_code => out.push(String::new()),
            _ => out.last_mut().expect("a cell").push(ch),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// `section.key` -> row, from the `## [section]` tables of the reference.
fn documented() -> (BTreeMap<String, Row>, Vec<String>) {
    let mut rows = BTreeMap::new();
    let mut problems = Vec::new();
    let mut section: Option<String> = None;
    let mut fenced = false;
    for (i, line) in REFERENCE_DOC.lines().enumerate() {
        let number = i + 1;
        let t = line.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some(heading) = t.strip_prefix("## ").or_else(|| t.strip_prefix("# ")) {
            let heading = heading.trim();
            section = heading
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .map(str::to_owned);
            continue;
        }
        let Some(section) = &section else { continue };
        if !t.starts_with('|') {
            continue;
        }
        let row = cells(t);
        let Some(key) = row[0].strip_prefix('`').and_then(|k| k.strip_suffix('`')) else {
            // The header row and its `|---|` separator.
            continue;
        };
        let dotted = format!("{section}.{key}");
        if row.len() != 4 {
            problems.push(format!(
                "docs/configuration.md:{number}: `{dotted}`: {} cells, want 4 (key, type, default, what it does)",
                row.len()
            ));
            continue;
        }
        let default = row[2].clone();
        let default = if default.starts_with("required") {
            "required".to_owned()
        } else if default.starts_with(NOT_SET) {
            NOT_SET.to_owned()
        } else if let Some(lit) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            lit.to_owned()
        } else {
            problems.push(format!(
                "docs/configuration.md:{number}: `{dotted}`: the default must be a TOML literal in backticks, \"required\" or \"not set\", not {default:?}"
            ));
            continue;
        };
        if let Some(first) = rows.insert(
            dotted.clone(),
            Row {
                line: number,
                default,
            },
        ) {
            problems.push(format!(
                "docs/configuration.md:{number}: `{dotted}` documented twice (also line {})",
                first.line
            ));
        }
    }
    (rows, problems)
}

/// Whether a documented default literal means the same value as `actual`:
/// durations compare as durations ("90s" is "1m 30s").
fn same_value(literal: &str, actual: &toml::Value) -> Result<bool, String> {
    let doc = table(&format!("v = {literal}"), "a documented default")
        .remove("v")
        .ok_or("no value")?;
    if let (toml::Value::String(a), toml::Value::String(b)) = (&doc, actual)
        && let (Ok(a), Ok(b)) = (duration::parse(a), duration::parse(b))
    {
        return Ok(a == b);
    }
    Ok(&doc == actual)
}

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let accepted = accepted_keys();
    let (rows, mut problems) = documented();
    for key in &accepted {
        if !rows.contains_key(key) {
            problems.push(format!(
                "`{key}` is a config key but docs/configuration.md does not document it (a row under `## [{}]`)",
                key.rsplit_once('.').map_or("", |(s, _)| s)
            ));
        }
    }
    for (key, row) in &rows {
        if !accepted.contains(key) {
            problems.push(format!(
                "docs/configuration.md:{}: `{key}` is documented but the sidecar has no such key",
                row.line
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    let defaults = defaults();
    let (rows, mut problems) = documented();
    for (key, row) in &rows {
        if row.default == "required" || row.default == NOT_SET {
            continue;
        }
        let Some(actual) = defaults.get(key) else {
            continue;
        };
        match same_value(&row.default, actual) {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "docs/configuration.md:{}: `{key}` default documented as `{}`, the code's is `{actual}`",
                row.line, row.default
            )),
            Err(e) => problems.push(format!("docs/configuration.md:{}: `{key}`: {e}", row.line)),
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Removes the key at `path` (sections, then the key); false when absent.
fn remove(table: &mut toml::Table, path: &[&str]) -> bool {
    match path {
        [] => false,
        [key] => table.remove(*key).is_some(),
        [section, rest @ ..] => match table.get_mut(*section) {
            Some(toml::Value::Table(inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

#[test]
fn a_key_is_documented_as_required_exactly_when_a_file_without_it_is_refused() {
    let reference = table(REFERENCE_FILE, "config/sidecar.toml");
    let (rows, mut problems) = documented();
    for (key, row) in &rows {
        if row.default == NOT_SET {
            // Optional with no value of its own: shown commented out.
            continue;
        }
        let path: Vec<&str> = key.split('.').collect();
        let mut without = reference.clone();
        if !remove(&mut without, &path) {
            problems.push(format!("`{key}` is not set in config/sidecar.toml"));
            continue;
        }
        let src = toml::to_string(&without).expect("render TOML");
        match (row.default == "required", parses(&src)) {
            (true, Ok(_)) => problems.push(format!(
                "docs/configuration.md:{}: `{key}` is documented as required, but a file without it is accepted",
                row.line
            )),
            (false, Err(e)) => problems.push(format!(
                "docs/configuration.md:{}: `{key}` has a documented default, but a file without it is refused: {e}",
                row.line
            )),
            _ => {}
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_reference_file_sets_every_key_to_its_default() {
    let defaults = defaults();
    let reference = leaves(&table(REFERENCE_FILE, "config/sidecar.toml"));
    let mut problems = Vec::new();
    let (rows, _) = documented();
    for key in accepted_keys() {
        let not_set = rows.get(&key).is_some_and(|r| r.default == NOT_SET);
        let leaf = key.rsplit('.').next().unwrap_or(&key);
        if not_set {
            // A key whose default is "not set" cannot be written at its
            // default: the reference shows it commented out.
            if reference.contains_key(&key) || !REFERENCE_FILE.contains(&format!("# {leaf} = ")) {
                problems.push(format!(
                    "config/sidecar.toml must show `{key}` commented out (`# {leaf} = ...`): its default is not set"
                ));
            }
        } else if !reference.contains_key(&key) {
            problems.push(format!("config/sidecar.toml does not show `{key}`"));
        }
    }
    for (key, actual) in &defaults {
        // upstream.url has no default: the file names the real factory.
        let Some(shown) = reference.get(key).filter(|_| key != "upstream.url") else {
            continue;
        };
        if !same_value(&shown.to_string(), actual).unwrap_or(false) {
            problems.push(format!(
                "config/sidecar.toml shows `{key} = {shown}`, the default is `{actual}`"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}
