//! Istio durations: a decimal number followed by a unit `ms`, `s`, `m` or `h` (`10s`, `1.5s`,
//! `100ms`, `1h`). Components may be chained as Go's `time.ParseDuration` allows (`1h30m`),
//! which Istio accepts in the same fields.
//!
//! Owns only the text -> `Duration` conversion; where a duration is allowed and what it means
//! is the kind loaders' business.

use std::time::Duration;

/// Why a duration was refused; the caller adds the position and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty")]
    Empty,
    #[error("a number with a unit (ms, s, m, h) is expected, e.g. 10s")]
    MissingUnit,
    #[error("unknown unit '{0}' (ms, s, m, h are accepted)")]
    BadUnit(String),
    #[error("'{0}' is not a number")]
    BadNumber(String),
    #[error("too large")]
    Overflow,
}

/// Parses an Istio duration. Negative durations do not exist in Istio's fields.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(DurationError::BadNumber(rest.to_string()));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "" => return Err(DurationError::MissingUnit),
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(DurationError::BadUnit(other.to_string())),
        };
        let value = parse_decimal(num)?;
        let part =
            Duration::try_from_secs_f64(value * scale).map_err(|_| DurationError::Overflow)?;
        total = total.checked_add(part).ok_or(DurationError::Overflow)?;
        rest = next;
    }
    Ok(round_to_micros(total))
}

/// `1.5`, `10`, `.5`; no sign, no exponent (Istio's syntax has neither).
fn parse_decimal(num: &str) -> Result<f64, DurationError> {
    let bad = || DurationError::BadNumber(num.to_string());
    if num == "." || num.matches('.').count() > 1 {
        return Err(bad());
    }
    num.parse::<f64>().map_err(|_| bad())
}

/// `0.1s` through f64 is 99.999999ms plus dust; timeouts are never finer than a microsecond.
fn round_to_micros(d: Duration) -> Duration {
    let micros = (d.as_nanos() + 500) / 1000;
    Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_examples() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("10"), Err(DurationError::MissingUnit));
        assert_eq!(
            parse_duration("10sec"),
            Err(DurationError::BadUnit("sec".into()))
        );
        assert_eq!(
            parse_duration("10d"),
            Err(DurationError::BadUnit("d".into()))
        );
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration("1..5s"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::BadNumber(_))
        ));
        assert_eq!(
            parse_duration("1e30h"),
            Err(DurationError::BadUnit("e".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow)
        );
    }
}
