//! Enums with a name per variant: how each is written on the wire and in the stores, and read
//! back (as text and through serde), from one table, so they can never disagree.

/// Declares an enum whose variants each have a name: `ALL`, `as_str`, `Display` and `FromStr`
/// (refusing unknown names with a message that lists the known ones).
#[macro_export]
macro_rules! named_enum {
    (
        $(#[$doc:meta])*
        $name:ident, $what:literal {
            $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    format!(
                        "unknown {} '{s}' (expected {})",
                        $what,
                        $crate::one_of(Self::ALL.iter().map(|v| v.as_str()))
                    )
                })
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as $crate::__serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(<D::Error as $crate::__serde::de::Error>::custom)
            }
        }
    };
}

/// `a, b or c`: how a refusal lists the names it knows.
pub fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    named_enum!(
        /// A test enum.
        Color, "color" {
            /// The first.
            Red => "red",
            Green => "green",
            Blue => "blue",
        }
    );

    #[test]
    fn names_are_written_and_read_back_and_unknown_ones_refused() {
        for c in Color::ALL {
            assert_eq!(c.as_str().parse::<Color>().unwrap(), *c);
            assert_eq!(c.to_string(), c.as_str());
        }
        assert_eq!(
            "pink".parse::<Color>().unwrap_err(),
            "unknown color 'pink' (expected red, green or blue)"
        );
    }
}
