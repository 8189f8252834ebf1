//! Free-form client metadata: a JSON object with a bounded serialized size.

use serde_json::{Map, Value};

/// Largest serialized size of one metadata object.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The key under which [`Metadata::bounded`] says what it left out.
pub const TRUNCATED: &str = "_truncated";

/// A JSON object the platform stores and returns but never interprets, unless a rule says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    pub fn parse(object: Map<String, Value>) -> Result<Self, String> {
        let size = serde_json::to_vec(&object)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(format!(
                "must be at most {MAX_METADATA_BYTES} bytes when serialized (is {size})"
            ));
        }
        Ok(Self(object))
    }

    /// Metadata the platform writes itself: the object as it is when it fits, else as many of
    /// its keys as fit, in order, and a `_truncated` marker saying how many were left out, so
    /// nothing disappears without a trace.
    pub fn bounded(object: Map<String, Value>) -> Self {
        if let Ok(fits) = Self::parse(object.clone()) {
            return fits;
        }
        let total = object.len();
        let mut kept = Map::new();
        let marker = |omitted: usize| serde_json::json!({"omitted_keys": omitted});
        for (key, value) in object {
            let mut trial = kept.clone();
            trial.insert(key.clone(), value.clone());
            trial.insert(TRUNCATED.into(), marker(total));
            if Self::parse(trial).is_ok() {
                kept.insert(key, value);
            }
        }
        let omitted = total - kept.len();
        kept.insert(TRUNCATED.into(), marker(omitted));
        Self(kept)
    }

    /// Shallow merge: keys of `other` replace keys of `self`; the result is bounded again.
    pub fn merged(&self, other: &Metadata) -> Result<Self, String> {
        let mut object = self.0.clone();
        object.extend(other.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self::parse(object)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_does_not_fit_is_cut_with_a_marker_never_emptied() {
        let small = serde_json::json!({"a": 1}).as_object().unwrap().clone();
        assert_eq!(Metadata::bounded(small.clone()).into_map(), small);
        let mut big = Map::new();
        big.insert("first".into(), Value::from("x"));
        big.insert("huge".into(), Value::from("y".repeat(MAX_METADATA_BYTES)));
        big.insert("last".into(), Value::from("z"));
        let cut = Metadata::bounded(big).into_map();
        assert_eq!(cut["first"], "x");
        assert_eq!(cut["last"], "z");
        assert!(cut.get("huge").is_none());
        assert_eq!(cut[TRUNCATED]["omitted_keys"], 1);
    }
}
