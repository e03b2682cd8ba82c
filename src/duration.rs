//! Durations as kubectl reads them (`--request-timeout`, `--duration`,
//! a policy's `window`): 500ms, 30s, 5m, 1h30m, or plain seconds.

use std::time::Duration;

/// Above zero; the error says what a duration looks like.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30s, 5m, 1h30m or 500ms");
    let zero =
        || format!("{s:?} is no time at all: a duration must be above zero, e.g. 500ms or 2s");
    if let Ok(secs) = s.parse::<f64>() {
        return match secs {
            _ if !secs.is_finite() || secs < 0.0 => Err(bad()),
            _ if secs == 0.0 => Err(zero()),
            _ => Ok(Duration::from_secs_f64(secs)),
        };
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(n * scale);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(zero());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        for bad in ["", "s", "5x", "-1s", "0s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }
}
