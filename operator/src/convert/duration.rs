//! MetalLB's timers are Kubernetes `metav1.Duration`s, which print as Go writes durations
//! (`1m30s`, `3m0s`, `1.5s`, `500ms`); FerroLB's BGP timers are whole seconds.

use std::time::Duration;

/// Parses a Go duration (`[0-9]+(\.[0-9]*)?` followed by ns, us, µs, ms, s, m or h, repeated; or
/// a bare `0`). `None` for anything else, including negative durations.
pub(super) fn parse_go(text: &str) -> Option<Duration> {
    let mut rest = text.trim().strip_prefix('+').unwrap_or(text.trim());
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => {
                let len = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after.len(), |(i, _)| i);
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        nanos = nanos.checked_add(whole.checked_mul(per_unit)?)?;
        // Only the first digits of a fraction can matter at nanosecond resolution.
        let fraction = &fraction[..fraction.len().min(18)];
        if !fraction.is_empty() {
            let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
            let digits: u128 = fraction.parse().ok()?;
            nanos = nanos.checked_add(digits.checked_mul(per_unit)? / scale)?;
        }
        rest = after;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

/// How a MetalLB timer reads in FerroLB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// The same text means the same whole seconds in FerroLB.
    Same(String),
    /// Rewritten: `text` is what FerroLB gets; `truncated` when a fraction of a second was
    /// dropped (as MetalLB itself truncates its hold time).
    Rewritten { text: String, truncated: bool },
    /// Not a duration at all.
    Invalid,
}

/// A MetalLB timer as a FerroLB one.
pub(super) fn timer(text: &str) -> Timer {
    let Some(duration) = parse_go(text) else {
        return Timer::Invalid;
    };
    let truncated = duration.subsec_nanos() != 0;
    let seconds = duration.as_secs();
    if !truncated && ferrolb_api::duration::parse_duration(text) == Ok(duration) {
        return Timer::Same(text.to_owned());
    }
    Timer::Rewritten {
        text: format!("{seconds}s"),
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_kubernetes_prints_for_a_duration() {
        let rows: [(&str, Option<u128>); 17] = [
            ("0", Some(0)),
            ("0s", Some(0)),
            ("90s", Some(90_000)),
            ("1m30s", Some(90_000)),
            ("3m0s", Some(180_000)),
            ("1h0m0s", Some(3_600_000)),
            ("1.5s", Some(1_500)),
            (".5s", Some(500)),
            ("500ms", Some(500)),
            ("1500us", Some(1)),
            ("1500µs", Some(1)),
            ("", None),
            ("90", None),
            ("-3s", None),
            ("3x", None),
            ("s", None),
            ("1..5s", None),
        ];
        for (text, millis) in rows {
            assert_eq!(parse_go(text).map(|d| d.as_millis()), millis, "{text:?}");
        }
    }

    #[test]
    fn timers_keep_their_text_when_ferrolb_reads_it_alike() {
        assert_eq!(timer("1m30s"), Timer::Same("1m30s".to_owned()));
        assert_eq!(timer("3m0s"), Timer::Same("3m0s".to_owned()));
        assert_eq!(
            timer("1.5s"),
            Timer::Rewritten {
                text: "1s".to_owned(),
                truncated: true
            }
        );
        assert_eq!(
            timer("0"),
            Timer::Same("0".to_owned()),
            "FerroLB reads a bare 0 too"
        );
        assert_eq!(
            timer("1.0s"),
            Timer::Rewritten {
                text: "1s".to_owned(),
                truncated: false
            }
        );
        assert_eq!(timer("90000ms"), Timer::Same("90000ms".to_owned()));
        assert_eq!(timer("soon"), Timer::Invalid);
    }
}
