//! Resource quantities: plain numbers and Kubernetes-style strings (`500m`, `512Mi`, `1e3`),
//! echoed back as the client wrote them and compared by value.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// Internal fixed-point scale: a quantity is held as an integer count of nano-units.
const SCALE: i128 = 1_000_000_000;
/// Longest quantity string accepted; anything longer is surely not a quantity.
const MAX_TEXT: usize = 64;
/// Largest decimal exponent accepted (`1e18`); keeps every value inside `i128`.
const MAX_EXPONENT: i32 = 18;
/// The largest amount of anything, whatever the spelling: 2^63 - 1 units. Every amount up to it
/// is held exactly and written back exactly, so one rule holds for `9223372036854775807`,
/// `"8Ei"` (one more, refused) and `"1e28"` (refused) alike.
pub const MAX_UNITS: i64 = i64::MAX;
const MAX_NANOS: i128 = MAX_UNITS as i128 * SCALE;

/// Why a quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("must be a number or a quantity string such as \"500m\", \"512Mi\" or \"1e3\"")]
    Malformed,
    #[error("must not be negative")]
    Negative,
    #[error("must be at most 9223372036854775807 (2^63 - 1) in any spelling")]
    TooLarge,
}

/// A non-negative amount of some resource.
///
/// Equality and ordering are by value (`"1Gi" == 1073741824`); the original spelling is
/// kept so the API can echo it back unchanged.
#[derive(Debug, Clone)]
pub struct Quantity {
    nanos: i128,
    raw: Value,
}

impl Quantity {
    /// Parses a JSON number or string, at most [`MAX_UNITS`].
    pub fn from_json(value: &Value) -> Result<Self, QuantityError> {
        Self::from_json_within(value, MAX_NANOS)
    }

    /// Parses a quantity as stored: written by this or an earlier version, which did not yet
    /// hold amounts to [`MAX_UNITS`]. A larger one is read back, echoed as written, and counted
    /// as [`MAX_UNITS`], so it neither fails the read nor overflows any sum.
    pub fn from_stored_json(value: &Value) -> Result<Self, QuantityError> {
        let mut quantity = Self::from_json_within(value, i128::MAX)?;
        quantity.nanos = quantity.nanos.min(MAX_NANOS);
        Ok(quantity)
    }

    fn from_json_within(value: &Value, most_nanos: i128) -> Result<Self, QuantityError> {
        let nanos = match value {
            Value::Number(n) => parse_text(&n.to_string(), most_nanos)?,
            Value::String(s) => parse_text(s.trim(), most_nanos)?,
            _ => return Err(QuantityError::Malformed),
        };
        Ok(Self {
            nanos,
            raw: value.clone(),
        })
    }

    /// Parses a quantity string such as `"1.5Gi"`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        Self::from_json(&Value::String(text.to_owned()))
    }

    /// A whole number of units, written as a plain JSON number.
    /// An amount in nano-units, written as a plain number.
    pub fn from_nanos(nanos: i128) -> Self {
        Self {
            nanos,
            raw: nanos_to_json(nanos),
        }
    }

    pub fn from_units(units: u64) -> Self {
        Self {
            nanos: i128::from(units) * SCALE,
            raw: Value::from(units),
        }
    }

    /// The value as the client wrote it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The value in nano-units: the unit of comparison and arithmetic.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value as a float, for display and scoring only; never for comparisons.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / SCALE as f64
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.raw {
            Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

fn parse_text(text: &str, most_nanos: i128) -> Result<i128, QuantityError> {
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(QuantityError::Malformed);
    }
    let (negative, body) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // The numeric part: digits with at most one decimal point.
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(QuantityError::Malformed);
    }
    let (multiplier, exponent) = suffix_scale(suffix)?;

    // mantissa * 10^(exponent - fraction.len()) * multiplier, kept in nano-units.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(QuantityError::TooLarge);
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::Malformed)?
    };
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative);
    }
    let power = exponent + 9 - fraction.len() as i32;
    let scaled = if power >= 0 {
        10i128
            .checked_pow(power as u32)
            .and_then(|p| mantissa.checked_mul(p))
            .and_then(|v| v.checked_mul(multiplier))
    } else {
        // Finer than a nano-unit: round up, as Kubernetes does, so a request never shrinks.
        let divisor = 10i128
            .checked_pow((-power) as u32)
            .ok_or(QuantityError::TooLarge)?;
        mantissa
            .checked_mul(multiplier)
            .map(|v| (v + divisor - 1) / divisor)
    };
    scaled
        .filter(|nanos| *nanos <= most_nanos)
        .ok_or(QuantityError::TooLarge)
}

/// Returns (binary multiplier, decimal exponent) for a suffix.
fn suffix_scale(suffix: &str) -> Result<(i128, i32), QuantityError> {
    let binary = |shift: u32| Ok((1i128 << shift, 0));
    let decimal = |exp: i32| Ok((1, exp));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .ok_or(QuantityError::Malformed)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 3
            {
                return Err(QuantityError::Malformed);
            }
            let exp: i32 = exp.parse().map_err(|_| QuantityError::Malformed)?;
            if exp.abs() > MAX_EXPONENT {
                return Err(QuantityError::TooLarge);
            }
            decimal(exp)
        }
    }
}

/// Largest number of dimensions in one resource map.
pub const MAX_DIMENSIONS: usize = 64;
/// Longest dimension name.
pub const MAX_DIMENSION_NAME: usize = 64;

/// Named quantities: an agent's capacity, a task's request, a pool's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceMap(BTreeMap<String, Quantity>);

impl ResourceMap {
    /// The sum of two maps, dimension by dimension.
    pub fn plus(&self, other: &ResourceMap) -> ResourceMap {
        let mut sum = self.0.clone();
        for (dim, q) in &other.0 {
            let total = sum.get(dim).map_or(0, Quantity::nanos) + q.nanos();
            sum.insert(dim.clone(), Quantity::from_nanos(total));
        }
        ResourceMap(sum)
    }

    /// Parses a JSON object of quantities. Errors name the offending key, relative to `field`.
    pub fn from_json(
        field: &str,
        object: &serde_json::Map<String, Value>,
    ) -> Result<Self, crate::ValidationErrors> {
        Self::parse_with(field, object, Quantity::from_json)
    }

    /// Parses a map as stored, its quantities as [`Quantity::from_stored_json`] does.
    pub fn from_stored_json(
        field: &str,
        object: &serde_json::Map<String, Value>,
    ) -> Result<Self, crate::ValidationErrors> {
        Self::parse_with(field, object, Quantity::from_stored_json)
    }

    fn parse_with(
        field: &str,
        object: &serde_json::Map<String, Value>,
        quantity: fn(&Value) -> Result<Quantity, QuantityError>,
    ) -> Result<Self, crate::ValidationErrors> {
        let mut errors = crate::ValidationErrors::default();
        if object.len() > MAX_DIMENSIONS {
            errors.push(field, format!("must have at most {MAX_DIMENSIONS} entries"));
            return Err(errors);
        }
        let mut map = BTreeMap::new();
        for (key, value) in object {
            let path = format!("{field}.{key}");
            if key.is_empty()
                || key.len() > MAX_DIMENSION_NAME
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
            {
                errors.push(
                    path,
                    format!("resource names are 1..={MAX_DIMENSION_NAME} characters of letters, digits, '_', '-', '.', '/'"),
                );
                continue;
            }
            if let Some(quantity) = errors.collect(&path, quantity(value)) {
                map.insert(key.clone(), quantity);
            }
        }
        errors.into_result().map(|()| Self(map))
    }

    /// The map as the client wrote it.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v.raw().clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Quantity> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Quantity)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(String, Quantity)> for ResourceMap {
    fn from_iter<I: IntoIterator<Item = (String, Quantity)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A nano-unit amount, written exactly and the short way: `2`, `0.5`, `1.000000001`.
pub fn show_nanos(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let (whole, frac) = (nanos.abs() / SCALE, nanos.abs() % SCALE);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let frac = format!("{frac:09}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// A nano-unit amount as JSON, exactly: an integer when whole, a decimal number when a float
/// says exactly that amount, and otherwise the exact decimal as a quantity string. Never
/// `null`, and never a rounded value.
pub fn nanos_to_json(nanos: i128) -> Value {
    if nanos % SCALE == 0 {
        let whole = nanos / SCALE;
        if let Ok(v) = i64::try_from(whole) {
            return Value::from(v);
        }
        if let Ok(v) = u64::try_from(whole) {
            return Value::from(v);
        }
    } else {
        let float = nanos as f64 / 1e9;
        if parse_text(&float.to_string(), i128::MAX) == Ok(nanos) {
            return Value::from(float);
        }
    }
    Value::String(show_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(v: Value) -> Result<Quantity, QuantityError> {
        Quantity::from_json(&v)
    }

    #[test]
    fn kubernetes_spellings_compare_by_value() {
        assert_eq!(q(json!("1Gi")).unwrap(), q(json!(1_073_741_824)).unwrap());
        assert_eq!(q(json!("500m")).unwrap(), q(json!(0.5)).unwrap());
        assert_eq!(q(json!("1e3")).unwrap(), q(json!("1k")).unwrap());
        assert_eq!(q(json!("1.5")).unwrap(), q(json!("1500m")).unwrap());
        assert_eq!(q(json!("512Mi")).unwrap(), q(json!("0.5Gi")).unwrap());
        assert!(q(json!("1Gi")).unwrap() > q(json!("1G")).unwrap());
        assert_eq!(q(json!("2E-3")).unwrap(), q(json!("2m")).unwrap());
    }

    #[test]
    fn the_original_spelling_is_kept() {
        assert_eq!(q(json!("512Mi")).unwrap().raw(), &json!("512Mi"));
        assert_eq!(q(json!(2)).unwrap().raw(), &json!(2));
    }

    #[test]
    fn malformed_and_negative_values_are_refused() {
        for bad in [
            json!(""),
            json!("abc"),
            json!("1.2.3"),
            json!("1Qi"),
            json!("."),
            json!("1e"),
            json!("e3"),
            json!(true),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(
                q(bad.clone()).unwrap_err(),
                QuantityError::Malformed,
                "{bad}"
            );
        }
        assert_eq!(q(json!(-1)).unwrap_err(), QuantityError::Negative);
        assert_eq!(q(json!("-5Mi")).unwrap_err(), QuantityError::Negative);
        assert_eq!(q(json!("1e400")).unwrap_err(), QuantityError::TooLarge);
    }

    #[test]
    fn one_bound_holds_for_every_spelling_and_everything_below_it_is_exact() {
        let max = q(json!(9_223_372_036_854_775_807_i64)).unwrap();
        assert_eq!(max, q(json!("9223372036854775807")).unwrap());
        assert_eq!(
            nanos_to_json(max.nanos()),
            json!(9_223_372_036_854_775_807_i64)
        );
        for too_large in [
            json!(9_223_372_036_854_775_808_u64),
            json!("9223372036854775808"),
            json!("8Ei"),
            json!("68719476736Gi"),
            json!("79228162514264337593543950336"),
            json!("1e28"),
            json!("18446744073709551616"),
            json!(1e19),
        ] {
            assert_eq!(
                q(too_large.clone()).unwrap_err(),
                QuantityError::TooLarge,
                "{too_large}"
            );
        }
        assert!(q(json!("7.99Ei")).is_ok());
        // What an earlier version stored past the bound is read back, counted as the bound.
        let stored = Quantity::from_stored_json(&json!("8Ei")).unwrap();
        assert_eq!(stored.raw(), &json!("8Ei"));
        assert_eq!(stored, max);
        let larger = Quantity::from_stored_json(&json!("79228162514264337593543950336")).unwrap();
        assert_eq!(larger, max);
        let map = json!({"a": "8Ei"});
        let refused = ResourceMap::from_json("c", map.as_object().unwrap()).unwrap_err();
        assert_eq!(refused.0[0].field, "c.a");
        assert!(ResourceMap::from_stored_json("c", map.as_object().unwrap()).is_ok());
        // Fractions too large for a float to say exactly come back as exact strings.
        let fine = q(json!("9007199254740993.5")).unwrap();
        assert_eq!(nanos_to_json(fine.nanos()), json!("9007199254740993.5"));
        assert_eq!(nanos_to_json(q(json!("1.5")).unwrap().nanos()), json!(1.5));
        assert_eq!(
            nanos_to_json(q(json!("0.000000001")).unwrap().nanos()),
            json!(1e-9)
        );
        assert_eq!(show_nanos(1_000_000_001), "1.000000001");
    }

    #[test]
    fn sub_nano_fractions_round_up() {
        assert_eq!(q(json!("0.0000000001")).unwrap().nanos(), 1);
    }

    #[test]
    fn resource_maps_name_the_bad_key() {
        let object = json!({"cpu": 2, "memory": "lots"});
        let err = ResourceMap::from_json("resources", object.as_object().unwrap()).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].field, "resources.memory");
    }
}
