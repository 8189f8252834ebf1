//! Free-form client metadata: a JSON object with a bounded serialized size.

use serde_json::{Map, Value};

/// Largest serialized size of one metadata object.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

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
