//! Durations given in seconds (timeouts, retry delays, leases, waits): validated once
//! where they enter the engine, and converted and added without ever panicking or
//! overflowing, so that no stored or computed value can bring the scheduler down.

use std::time::Duration;

use crate::errors::{Error, Result};

/// The longest duration the engine accepts, in seconds (about 31 years).
pub const MAX_SECONDS: f64 = 1e9;

/// `value` seconds, if it is finite, not negative and at most `MAX_SECONDS`; otherwise
/// an `InvalidArgument` error naming `what`.
pub fn seconds(what: &str, value: f64) -> Result<Duration> {
    if value.is_finite() && (0.0..=MAX_SECONDS).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} must be a finite number of seconds between 0 and {MAX_SECONDS:e}, not {value}"
        )))
    }
}

/// `secs` as a Duration without panicking: NaN and negatives are zero, anything longer
/// than `MAX_SECONDS` is `MAX_SECONDS`.
pub fn saturating(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(secs.min(MAX_SECONDS))
    }
}

/// `at` (microseconds since the epoch) plus `d`, saturating instead of overflowing.
pub fn micros_after(at: i64, d: Duration) -> i64 {
    at.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_never_panic() {
        for v in [f64::NAN, f64::INFINITY, -1.0, 1e20, 1e300, -0.0, f64::MIN_POSITIVE] {
            let _ = saturating(v);
            let _ = seconds("x", v);
        }
        assert!(seconds("lease", f64::NAN).unwrap_err().to_string().contains("lease"));
        assert!(seconds("t", 1e20).is_err());
        assert_eq!(seconds("t", 1.5).unwrap(), Duration::from_millis(1500));
        assert_eq!(saturating(f64::NAN), Duration::ZERO);
        assert_eq!(saturating(1e300), Duration::from_secs_f64(MAX_SECONDS));
        assert_eq!(micros_after(i64::MAX - 1, Duration::from_secs(10)), i64::MAX);
    }
}
