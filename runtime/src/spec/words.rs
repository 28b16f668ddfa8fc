//! The parser's messages in the spec's words: serde's and toml's type names as a person writes
//! TOML ("a whole number", "a table", "a list"), a "did you mean" for an unknown field, and a
//! hint when the file is YAML (a Kubernetes manifest) instead of TOML.

/// `message` (a serde or toml error's) in plain words.
pub(super) fn plain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, expected)) = rest.split_once('`')
    {
        return unknown_field(field, expected);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {}, found {}", kind(expected), found_words(found));
    }
    if let Some((head, expected)) = message.split_once(", expected ")
        && head.starts_with("invalid value: ")
    {
        return format!("{head}, expected {}", kind(expected));
    }
    // toml's word for an enum given neither a string nor a table.
    if message == "wanted string or table" {
        return "expected a string (\"...\")".into();
    }
    message.to_string()
}

/// serde's name of what was expected, as TOML has it.
fn kind(expected: &str) -> String {
    let e = expected.trim();
    let word = match e {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (e.g. 8)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number (e.g. -1 or 8)",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "a list ([...])",
        "a map" => "a table ({ key = value, ... } or a [section])",
        "a string" => "a string (\"...\")",
        _ if e.starts_with("struct ") => "a table ({ key = value, ... } or a [section])",
        _ => return e.to_string(),
    };
    word.to_string()
}

/// What serde found, in TOML's words: `string "x"` -> `the string "x"`, `map` -> `a table`.
fn found_words(found: &str) -> String {
    let f = found.trim();
    if let Some(s) = f.strip_prefix("string ") {
        return format!("the string {s}");
    }
    if let Some(n) = f.strip_prefix("integer ") {
        return format!("the number {n}");
    }
    if let Some(n) = f.strip_prefix("floating point ") {
        return format!("the number {n}");
    }
    match f {
        "map" => "a table".into(),
        "sequence" => "a list".into(),
        _ if f.starts_with("boolean ") => f.replacen("boolean ", "", 1),
        _ => f.to_string(),
    }
}

/// `unknown field `FIELD``, then serde's list of the fields there (`, expected one of `a`,
/// `b`` or `, expected `a``), with the nearest as a suggestion.
fn unknown_field(field: &str, expected: &str) -> String {
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let nearest = known
        .iter()
        .map(|k| (strsim::levenshtein(field, k), *k))
        .filter(|(d, k)| *d <= field.len().max(k.len()) / 3 + 1 || k.starts_with(field))
        .min();
    let mut m = format!("unknown field `{field}`");
    if let Some((_, k)) = nearest {
        m.push_str(&format!(": did you mean `{k}`?"));
    }
    if !known.is_empty() {
        m.push_str(&format!(" (the fields here: {})", known.join(", ")));
    }
    m
}

/// Whether `text` that is not TOML looks like YAML (a Kubernetes manifest): `key: value` lines
/// and no `key = value` one.
pub(super) fn looks_like_yaml(text: &str) -> bool {
    let lines = || {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
    };
    let yaml = lines()
        .filter(|l| {
            let l = l.trim_start_matches("- ");
            l.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            })
        })
        .count();
    let toml = lines()
        .filter(|l| l.contains(" = ") || l.starts_with('['))
        .count();
    yaml > 0 && toml == 0
}

/// What to say after a parse failure of a YAML file.
pub(super) const YAML_HINT: &str = "this looks like YAML: peapod's pod specs are TOML (`[pod]` \
    and `[[containers]]` sections of `key = value` lines; see docs/spec.md)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serdes_words_become_the_specs() {
        assert_eq!(
            plain("invalid type: string \"10\", expected u32"),
            "expected a whole number (e.g. 8), found the string \"10\""
        );
        assert_eq!(
            plain("invalid type: string \"--port 80\", expected a sequence"),
            "expected a list ([...]), found the string \"--port 80\""
        );
        assert_eq!(
            plain("invalid type: integer `3`, expected a map"),
            "expected a table ({ key = value, ... } or a [section]), found the number `3`"
        );
        assert_eq!(plain("something else"), "something else");
    }

    #[test]
    fn an_unknown_field_gets_the_nearest_known_one() {
        let m = plain(
            "unknown field `readiness`, expected one of `name`, `module`, `readiness_probe`, \
             `liveness_probe`",
        );
        assert!(
            m.starts_with("unknown field `readiness`: did you mean `readiness_probe`?"),
            "{m}"
        );
        let m = plain("unknown field `modul`, expected one of `name`, `module`");
        assert!(
            m.starts_with("unknown field `modul`: did you mean `module`?"),
            "{m}"
        );
        let m = plain("unknown field `zzzzzz`, expected one of `name`, `module`");
        assert_eq!(m, "unknown field `zzzzzz` (the fields here: name, module)");
    }

    #[test]
    fn yaml_is_told_from_toml() {
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n";
        assert!(looks_like_yaml(manifest));
        assert!(!looks_like_yaml("[pod]\nname = \"web\"\n"));
        assert!(!looks_like_yaml("[pod\nname: = 3"));
    }
}
