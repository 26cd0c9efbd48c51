//! Turns the parser's messages into ones an operator can act on.
//!
//! serde and toml describe a problem in Rust's terms: `unknown field
//! `max_atempts`, expected one of ...` (every key of the section, none
//! singled out) or `invalid value: integer `-1`, expected u32` (no key, a
//! Rust type for a range). Here the message gets the dotted key it belongs
//! to (found from the error's position in the document), the closest known
//! key for a misspelt one ("did you mean `max_attempts`?"), and the allowed
//! values in words ("a whole number from 0 to 4294967295").

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// The message for a parse error at `span` of `src`, rewritten when it is
/// one of the shapes above; otherwise prefixed with its key when known.
pub(super) fn explain(src: &str, message: &str, span: Option<Range<usize>>) -> String {
    let place = span.and_then(|s| key_at(src, s.start));
    if let Some((unknown, known)) = unknown_field(message) {
        return unknown_key(&unknown, &known, place.as_ref());
    }
    let key = place.map(|p| p.dotted());
    if let Some(text) = wrong_type(message, key.as_deref()) {
        return text;
    }
    match key {
        Some(key) if !mentions_key(message, &key) => format!("{key}: {message}"),
        _ => message.to_owned(),
    }
}

/// Whether `message` already names `key` (or its last part).
fn mentions_key(message: &str, key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    message.contains(key) || message.contains(last)
}

/// Where an error points: the tables above it and the key itself (when the
/// error is on a value, or on the key's name).
#[derive(Debug, PartialEq, Eq)]
struct Place {
    tables: Vec<String>,
    key: Option<String>,
}

impl Place {
    fn dotted(&self) -> String {
        let mut parts = self.tables.clone();
        parts.extend(self.key.clone());
        parts.join(".")
    }

    fn section(&self) -> String {
        self.tables.join(".")
    }
}

/// The key whose name or value covers byte `at`.
fn key_at(src: &str, at: usize) -> Option<Place> {
    let doc = DeTable::parse(src).ok()?;
    search(doc.get_ref(), &mut Vec::new(), at)
}

/// Depth first: a table's span need not cover its keys (`[section]` headers).
fn search(table: &DeTable<'_>, tables: &mut Vec<String>, at: usize) -> Option<Place> {
    for (k, v) in table.iter() {
        let name = k.get_ref().to_string();
        if k.span().contains(&at) {
            // On a key's name: unknown keys are reported there.
            return Some(Place {
                tables: tables.clone(),
                key: Some(name),
            });
        }
        if let DeValue::Table(t) = v.get_ref() {
            tables.push(name);
            let found = search(t, tables, at);
            tables.pop();
            if found.is_some() {
                return found;
            }
        } else if v.span().contains(&at) || v.span().start == at {
            return Some(Place {
                tables: tables.clone(),
                key: Some(name),
            });
        }
    }
    None
}

/// `unknown field `x`, expected one of `a`, `b`` -> (x, [a, b]).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field ")?;
    let mut quoted = rest.split('`').skip(1).step_by(2).map(str::to_owned);
    let unknown = quoted.next()?;
    Some((unknown, quoted.collect()))
}

fn unknown_key(unknown: &str, known: &[String], place: Option<&Place>) -> String {
    let section = place.map(Place::section).unwrap_or_default();
    let mut text = if section.is_empty() {
        format!("unknown section or key `{unknown}`")
    } else {
        format!("unknown key `{unknown}` in [{section}]")
    };
    match closest(unknown, known) {
        Some(best) => text.push_str(&format!("; did you mean `{best}`?")),
        None if known.is_empty() => {}
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            text.push_str(&format!("; known keys: {}", list.join(", ")));
        }
    }
    text
}

/// The known name nearest to `word`, if it is near enough to be a typo.
fn closest<'a>(word: &str, known: &'a [String]) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&word_lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| {
            let near = *d <= (word.len().max(k.len()) / 4).max(1);
            let (short, long) = if word.len() < k.len() {
                (word_lower.as_str(), k.as_str())
            } else {
                (k.as_str(), word_lower.as_str())
            };
            near || (short.len() >= 4 && long.contains(short))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Optimal string alignment distance (Levenshtein plus adjacent swaps).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

/// `invalid type: string "3", expected u32` -> "`key` must be a whole
/// number from 0 to 4294967295, not the string "3"".
fn wrong_type(message: &str, key: Option<&str>) -> Option<String> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    let (found, expected) = rest.split_once(", expected ")?;
    let wanted = allowed(expected.trim());
    let found = describe_found(found.trim());
    Some(match key {
        Some(key) => format!("{key} must be {wanted}, not {found}"),
        None => format!("expected {wanted}, not {found}"),
    })
}

/// What serde's expected type means in config terms.
fn allowed(expected: &str) -> String {
    let range = |max: u64| format!("a whole number from 0 to {max}");
    match expected {
        "u8" => range(u64::from(u8::MAX)),
        "u16" => range(u64::from(u16::MAX)),
        "u32" => range(u64::from(u32::MAX)),
        "u64" | "usize" => range(u64::MAX),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "a string in quotes".to_owned(),
        "a sequence" => "a list, e.g. [\"a\", \"b\"]".to_owned(),
        other => other.to_owned(),
    }
}

/// serde's description of the value found, in config terms.
fn describe_found(found: &str) -> String {
    let quoted = |s: &str| s.trim_matches('`').to_owned();
    if let Some(v) = found.strip_prefix("integer ") {
        quoted(v)
    } else if let Some(v) = found.strip_prefix("floating point ") {
        quoted(v)
    } else if let Some(v) = found.strip_prefix("boolean ") {
        quoted(v)
    } else if let Some(v) = found.strip_prefix("string ") {
        format!("the string {v}")
    } else if found == "sequence" {
        "a list".to_owned()
    } else if found == "map" {
        "a table".to_owned()
    } else {
        found.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_misspelt_key_names_the_closest_known_one() {
        let keys = known(&["max_attempts", "initial_backoff", "max_backoff", "on"]);
        assert_eq!(closest("max_atempts", &keys), Some("max_attempts"));
        assert_eq!(closest("max_attemtps", &keys), Some("max_attempts"));
        assert_eq!(closest("MAX_ATTEMPTS", &keys), Some("max_attempts"));
        assert_eq!(closest("attempts", &keys), Some("max_attempts"));
        assert_eq!(closest("initial_backof", &keys), Some("initial_backoff"));
        assert_eq!(closest("colour", &keys), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_fields_are_parsed_from_serde_messages() {
        assert_eq!(
            unknown_field("unknown field `x`, expected one of `a`, `b`, `c`"),
            Some(("x".to_owned(), known(&["a", "b", "c"])))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `a` or `b`"),
            Some(("x".to_owned(), known(&["a", "b"])))
        );
        assert_eq!(
            unknown_field("unknown field `x`, there are no fields"),
            Some(("x".to_owned(), vec![]))
        );
        assert_eq!(unknown_field("missing field `url`"), None);
    }

    #[test]
    fn the_key_at_a_position_is_found() {
        let src = "[upstream]\nurl = \"x\"\n[retry]\nmax_attempts = -1\n";
        let at = src.find("-1").expect("value");
        assert_eq!(
            key_at(src, at).map(|p| p.dotted()).as_deref(),
            Some("retry.max_attempts")
        );
        let at = src.find("max_attempts").expect("key");
        let place = key_at(src, at).expect("place");
        assert_eq!(place.section(), "retry");
        let src = "[server.tls]\nx = 1\n";
        let at = src.find("x =").expect("key");
        assert_eq!(
            key_at(src, at).map(|p| p.dotted()).as_deref(),
            Some("server.tls.x")
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_allowed_values() {
        assert_eq!(
            wrong_type(
                "invalid value: integer `-1`, expected u32",
                Some("circuit_breaker.minimum_calls")
            )
            .as_deref(),
            Some(
                "circuit_breaker.minimum_calls must be a whole number from 0 to 4294967295, not -1"
            )
        );
        assert_eq!(
            wrong_type(
                "invalid type: string \"3\", expected u32",
                Some("retry.budget_min_per_second")
            )
            .as_deref(),
            Some(
                "retry.budget_min_per_second must be a whole number from 0 to 4294967295, not the string \"3\""
            )
        );
        assert_eq!(
            wrong_type(
                "invalid type: integer `1`, expected a boolean",
                Some("chaos.detect")
            )
            .as_deref(),
            Some("chaos.detect must be true or false, not 1")
        );
        assert_eq!(wrong_type("something else", Some("a.b")), None);
    }
}
