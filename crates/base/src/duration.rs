//! Durations in configuration, written the human way.

use serde::{Deserialize, Serialize};

/// A duration written the human way: `1s`, `500ms`, `24h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

/// The longest duration any key takes.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_hours(100 * 365 * 24);

impl Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let d = humantime::parse_duration(raw.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{raw}` is not a duration ({e}); write e.g. 1s, 30m, 24h, 7d"
            ))
        })?;
        // Timers add durations to the clock: beyond this they would overflow.
        if d > MAX_DURATION {
            return Err(serde::de::Error::custom(format!(
                "`{raw}` is longer than 100 years; write e.g. 6h or 30d"
            )));
        }
        Ok(HumanDuration(d))
    }
}
