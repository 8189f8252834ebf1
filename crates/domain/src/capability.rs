//! Capabilities: what an agent can do and what a task requires, matched all-of.

use std::collections::BTreeSet;
use std::fmt;

/// Longest capability name.
pub const MAX_CAPABILITY_CHARS: usize = 100;
/// Most capabilities an agent may declare or a task may require.
pub const MAX_CAPABILITIES: usize = 64;

/// One capability name: 1..=100 characters of letters, digits, `_`, `-`, `.`, `:` and `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Capability(String);

impl Capability {
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > MAX_CAPABILITY_CHARS {
            return Err(format!("must be 1..={MAX_CAPABILITY_CHARS} characters"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
        {
            return Err("may contain only letters, digits and '_', '-', '.', ':', '/'".into());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of capabilities, deduplicated and kept in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySet(BTreeSet<Capability>);

impl CapabilitySet {
    /// Parses a list, reporting each bad entry under `field[i]`.
    pub fn parse(field: &str, values: &[String]) -> Result<Self, crate::ValidationErrors> {
        let mut errors = crate::ValidationErrors::default();
        if values.len() > MAX_CAPABILITIES {
            errors.push(
                field,
                format!("must have at most {MAX_CAPABILITIES} entries"),
            );
            return Err(errors);
        }
        let mut set = BTreeSet::new();
        for (i, value) in values.iter().enumerate() {
            // The field is named only for an error: stored rows are parsed here too.
            match Capability::parse(value) {
                Ok(c) => {
                    set.insert(c);
                }
                Err(message) => errors.push(format!("{field}[{i}]"), message),
            }
        }
        errors.into_result().map(|()| Self(set))
    }

    pub fn contains(&self, capability: &Capability) -> bool {
        self.0.contains(capability)
    }

    /// True when every capability of `required` is in this set.
    pub fn covers(&self, required: &CapabilitySet) -> bool {
        required.0.is_subset(&self.0)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Capability> {
        self.0.iter()
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|c| c.0.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Capability> for CapabilitySet {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}
