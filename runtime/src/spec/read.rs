//! Reading a spec file's tables into its raw types, with every field serde refuses reported at
//! once: after each refusal the refused value is taken out of the parsed document and the rest
//! is read again, so a file with four mistakes takes one run to see them all.
//!
//! What is taken out: the key serde refused (an unknown key, or a value of the wrong type); a
//! refused element of a list takes its whole list, so the later indices keep their meaning. A
//! missing field ends the reading (taking something out cannot mend it), and is not reported
//! when it is missing because it was taken out.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// At most this many problems from one reading.
const MAX_PROBLEMS: usize = 20;

/// One step into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A field serde refused: where (`field` as `containers[0].args`), the error, and whether the
/// reading can go on past it.
pub(super) struct Refusal {
    pub(super) field: String,
    pub(super) error: toml::de::Error,
}

/// Reads `doc` as `T`. `Ok((value, refusals))`: read after taking the refused fields out (their
/// defaults in `value`); `Err(refusals)`: it could not be read at all (never empty).
pub(super) fn read<T: DeserializeOwned>(
    mut doc: Spanned<DeTable<'_>>,
) -> Result<(T, Vec<Refusal>), Vec<Refusal>> {
    let mut refusals = Vec::new();
    let mut taken: Vec<Vec<Step>> = Vec::new();
    loop {
        let de = toml::Deserializer::from(doc.clone());
        let e = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => return Ok((v, in_order(refusals))),
            Err(e) => e,
        };
        let mut at = steps(e.path());
        let message = e.inner().message();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| f.to_string());
        if let Some(field) = &missing {
            at.push(Step::Key(field.clone()));
            // Missing because it was taken out (its refusal is said already): nothing new.
            if !taken.contains(&at) {
                refusals.push(refusal(e));
            }
            return Err(in_order(refusals));
        }
        // (An unknown key's path ends with the key already.)
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(f, _)| Step::Key(f.to_string()))
            && at.last() != Some(&name)
        {
            at.push(name);
        }
        // An element of a list: its whole list (its key).
        while matches!(at.last(), Some(Step::Index(_))) {
            at.pop();
        }
        refusals.push(refusal(e));
        if refusals.len() >= MAX_PROBLEMS || !take_out(doc.get_mut(), &at) {
            return Err(in_order(refusals));
        }
        taken.push(at);
    }
}

/// In the order of the file (the tables are read in their keys' order).
fn in_order(mut refusals: Vec<Refusal>) -> Vec<Refusal> {
    refusals.sort_by_key(|r| r.error.span().map_or(0, |s| s.start));
    refusals
}

fn refusal(e: serde_path_to_error::Error<toml::de::Error>) -> Refusal {
    Refusal {
        field: e.path().to_string(),
        error: e.into_inner(),
    }
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Removes the key at `at` (whose last step is a key) from `table`; false when there is none.
fn take_out(table: &mut DeTable<'_>, at: &[Step]) -> bool {
    let Some((Step::Key(last), parents)) = at.split_last() else {
        return false;
    };
    let mut cur = table;
    let mut i = 0;
    while i < parents.len() {
        let Step::Key(k) = &parents[i] else {
            return false;
        };
        let Some(v) = cur.get_mut(k.as_str()) else {
            return false;
        };
        let mut v = v.get_mut();
        // Indices after a key step into its list.
        while let Some(Step::Index(n)) = parents.get(i + 1) {
            let DeValue::Array(a) = v else {
                return false;
            };
            let Some(e) = a.get_mut(*n) else {
                return false;
            };
            v = e.get_mut();
            i += 1;
        }
        let DeValue::Table(t) = v else {
            return false;
        };
        cur = t;
        i += 1;
    }
    cur.remove(last.as_str()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct File {
        name: String,
        #[serde(default)]
        size: u32,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        id: String,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        weight: u8,
    }

    fn fields(text: &str) -> (bool, Vec<String>) {
        let doc = DeTable::parse(text).unwrap();
        match read::<File>(doc) {
            Ok((_, r)) => (true, r.into_iter().map(|r| r.field).collect()),
            Err(r) => (false, r.into_iter().map(|r| r.field).collect()),
        }
    }

    #[test]
    fn every_refused_field_is_reported_in_one_reading() {
        let text = "name = \"a\"\nsize = \"big\"\ncolour = 1\n\n[[items]]\nid = \"x\"\n\
                    tags = [1, \"t\"]\nweight = 300\n\n[[items]]\nid = \"y\"\nwieght = 2\n";
        let (read, fields) = fields(text);
        assert!(read, "read, with the refused fields at their defaults");
        assert_eq!(
            fields,
            [
                "size",
                "colour",
                "items[0].tags[0]",
                "items[0].weight",
                "items[1].wieght"
            ],
            "in the file's order"
        );
    }

    #[test]
    fn a_missing_field_ends_the_reading() {
        let (read, fields) = fields("name = \"a\"\n[[items]]\ntags = []\n[[items]]\nid = 1\n");
        assert!(!read);
        assert_eq!(fields, ["items[0]"], "items[1] is not read");
    }

    #[test]
    fn a_field_taken_out_is_not_missing_too() {
        let (read, fields) = fields("name = 3\n");
        assert!(!read);
        assert_eq!(fields, ["name"], "its type said once, not its absence");
    }
}
