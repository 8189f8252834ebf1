//! Deserializing untrusted input with errors that say which field they are about as data, not
//! as text to be picked apart: a JSON body (already parsed into a `Value`) or the pairs of a
//! query string, into any `Deserialize` type.
//!
//! serde reports a missing or unknown field through the deserializer's error type, at the
//! enclosing object; with [`InputError`] as that type the field's name arrives as a value.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, MapDeserializer, SeqDeserializer, StrDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::Value;

/// Why input did not fit the type it was read into.
#[derive(Debug, Clone, PartialEq)]
pub enum InputError {
    /// A field the type does not have (the types refuse unknown fields).
    Unknown { field: String, message: String },
    /// A field the type requires that is absent.
    Missing { field: String },
    /// Anything else: a wrong type, an invalid value, a duplicate.
    Invalid(String),
}

impl InputError {
    /// The field the error names itself, if it names one.
    pub fn named_field(&self) -> Option<&str> {
        match self {
            Self::Unknown { field, .. } | Self::Missing { field } => Some(field),
            Self::Invalid(_) => None,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown { message, .. } | Self::Invalid(message) => f.write_str(message),
            Self::Missing { field } => write!(f, "missing field `{field}`"),
        }
    }
}

impl std::error::Error for InputError {}

impl de::Error for InputError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Self::Invalid(message.to_string())
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let listed = expected
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let message = match expected.len() {
            0 => format!("unknown field `{field}`, there are no fields"),
            1 => format!("unknown field `{field}`, expected {listed}"),
            _ => format!("unknown field `{field}`, expected one of {listed}"),
        };
        Self::Unknown {
            field: field.to_owned(),
            message,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::Missing {
            field: field.to_owned(),
        }
    }
}

/// Reads a JSON value into `T`, tracking the path of the value an error is about.
pub fn from_json<T: DeserializeOwned>(
    value: &Value,
) -> Result<T, serde_path_to_error::Error<InputError>> {
    serde_path_to_error::deserialize(Json(value))
}

/// Reads the pairs of a query string into `T`, in their order (a repeated name is a duplicate
/// field). Every value arrives as text; a field that wants a number or a boolean parses it.
pub fn from_pairs<T: DeserializeOwned>(
    pairs: &[(String, String)],
) -> Result<T, serde_path_to_error::Error<InputError>> {
    let entries = pairs
        .iter()
        .map(|(name, text)| (name.as_str(), Text(text.as_str())));
    serde_path_to_error::deserialize(MapDeserializer::new(entries))
}

/// A JSON value as a deserializer. A number written as a string is the wrong type here, as
/// serde_json itself would say.
#[derive(Clone, Copy)]
struct Json<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, InputError> for Json<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// The entries of a JSON object, each as a deserializer.
fn entries(
    map: &serde_json::Map<String, Value>,
) -> MapDeserializer<'_, impl Iterator<Item = (&str, Json<'_>)>, InputError> {
    MapDeserializer::new(map.iter().map(|(k, v)| (k.as_str(), Json(v))))
}

impl<'de> de::Deserializer<'de> for Json<'de> {
    type Error = InputError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, InputError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => visitor.visit_u64(u),
                (None, Some(i), _) => visitor.visit_i64(i),
                (None, None, Some(f)) => visitor.visit_f64(f),
                (None, None, None) => Err(de::Error::custom("a number out of range")),
            },
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer::new(items.iter().map(Json));
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Value::Object(map) => {
                let mut entries = entries(map);
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, InputError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, InputError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, InputError> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(StrDeserializer::new(s.as_str())),
            Value::Object(map) if map.len() == 1 => {
                visitor.visit_enum(MapAccessDeserializer::new(entries(map)))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// One query-string value as a deserializer: text, parsed when the field wants a scalar.
#[derive(Clone, Copy)]
struct Text<'a>(&'a str);

impl<'de> IntoDeserializer<'de, InputError> for Text<'de> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl Text<'_> {
    fn parse<T: std::str::FromStr>(self, visitor: &dyn de::Expected) -> Result<T, InputError> {
        self.0
            .parse()
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Str(self.0), visitor))
    }
}

macro_rules! parse_text {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, InputError> {
            let value = self.parse(&visitor)?;
            visitor.$visit(value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Text<'de> {
    type Error = InputError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, InputError> {
        visitor.visit_borrowed_str(self.0)
    }

    parse_text! {
        deserialize_bool => visit_bool,
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64,
        deserialize_f32 => visit_f32, deserialize_f64 => visit_f64,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, InputError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, InputError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, InputError> {
        visitor.visit_enum(StrDeserializer::new(self.0))
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct map
        struct identifier ignored_any
    }
}
