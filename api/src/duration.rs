//! Durations as Kubernetes writes them (`90s`, `1m30s`, `500ms`).

use std::time::Duration;

/// Why a duration does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a sequence of number+unit pairs.
    #[error("not a duration such as 90s, 1m30s or 500ms")]
    Syntax,
    /// Larger than any timer could use.
    #[error("too large")]
    TooLarge,
}

/// Parses a Go-style duration: one or more `<integer><unit>` with units h, m, s, ms.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(DurationError::Syntax);
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::Syntax);
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| DurationError::TooLarge)?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let millis_per_unit: u64 = match unit {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(DurationError::Syntax),
        };
        let millis = number
            .checked_mul(millis_per_unit)
            .ok_or(DurationError::TooLarge)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or(DurationError::TooLarge)?;
        rest = after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_durations() {
        let ok = [
            ("0", 0),
            ("0s", 0),
            ("90s", 90_000),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("500ms", 500),
            ("1s500ms", 1_500),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_is_not_a_duration() {
        for text in ["", "90", "s", "1.5s", "-3s", "3 s", "3sec", "1d"] {
            assert_eq!(parse_duration(text), Err(DurationError::Syntax), "{text}");
        }
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::TooLarge)
        );
    }
}
