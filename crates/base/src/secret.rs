//! [`Secret`]: a string that never shows itself in logs, errors or `config show`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shortest password the server accepts, from any source.
pub const MIN_PASSWORD_LEN: usize = 12;

/// A password refused by [`check_strength`].
#[derive(Debug, thiserror::Error)]
pub enum WeakPassword {
    #[error("the password from {source_name} is empty; store a password of at least {MIN_PASSWORD_LEN} characters")]
    Empty { source_name: String },
    #[error("the password from {source_name} is too weak ({length} characters); use at least {MIN_PASSWORD_LEN}")]
    Short { source_name: String, length: usize },
}

/// Refuses an empty or short password; `source_name` says where it came from.
pub fn check_strength(password: &Secret, source_name: &str) -> Result<(), WeakPassword> {
    let length = password.expose().chars().count();
    if length == 0 {
        return Err(WeakPassword::Empty {
            source_name: source_name.to_owned(),
        });
    }
    if length < MIN_PASSWORD_LEN {
        return Err(WeakPassword::Short {
            source_name: source_name.to_owned(),
            length,
        });
    }
    Ok(())
}

/// What a secret prints as, everywhere.
pub const REDACTED: &str = "[redacted]";

/// A password, key or token. `Debug`, `Display` and `Serialize` print [`REDACTED`]; the value is
/// reachable only through [`Secret::expose`], which names every place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself: only for handing to PostgreSQL, S3 or a client the user asked.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// Accepts any scalar: an environment variable holding `123456` is still a password.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
