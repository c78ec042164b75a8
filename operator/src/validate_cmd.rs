//! `ferrolb-operator validate -f FILE`: the webhook's checks, offline.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ferrolb_api::manifest::parse_config;
use ferrolb_api::{LoadBalancerConfig, validate};

/// Exit code for a manifest with problems.
const INVALID: u8 = 1;
/// Exit code when the file cannot be read at all.
const UNREADABLE: u8 = 2;

pub fn run(file: &Path) -> ExitCode {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "ferrolb-operator validate: cannot read {}: {e}",
                file.display()
            );
            return ExitCode::from(UNREADABLE);
        }
    };
    let mut out = std::io::stdout().lock();
    let code = check(&text, &mut out);
    let _ = out.flush();
    ExitCode::from(code)
}

/// Writes the verdict on `text` to `out`; returns the exit code.
fn check(text: &str, out: &mut impl Write) -> u8 {
    let config = match parse_config(text) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(out, "{e}");
            return INVALID;
        }
    };
    match validate(&config.spec) {
        Ok(()) => {
            let _ = writeln!(out, "{}", summary(&config));
            0
        }
        Err(problems) => {
            let _ = writeln!(out, "{problems}");
            INVALID
        }
    }
}

fn summary(config: &LoadBalancerConfig) -> String {
    let spec = &config.spec;
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    format!(
        "valid: LoadBalancerConfig {:?}: {}, {}, {}, {}, {}",
        config.metadata.name.as_deref().unwrap_or(""),
        count(spec.address_pools.len(), "address pool"),
        count(spec.l2_advertisements.len(), "L2 advertisement"),
        count(spec.bgp_peers.len(), "BGP peer"),
        count(spec.bgp_advertisements.len(), "BGP advertisement"),
        count(spec.bfd_profiles.len(), "BFD profile"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(text: &str) -> (u8, String) {
        let mut out = Vec::new();
        let code = check(text, &mut out);
        (code, String::from_utf8(out).unwrap())
    }

    const HEADER: &str =
        "apiVersion: ferrolb.io/v1alpha1\nkind: LoadBalancerConfig\nmetadata:\n  name: ferrolb\n";

    #[test]
    fn valid_config_prints_one_summary_line() {
        let text = format!(
            "{HEADER}spec:\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.0/28]\n"
        );
        assert_eq!(
            verdict(&text),
            (0, "valid: LoadBalancerConfig \"ferrolb\": 1 address pool, 0 L2 advertisements, 0 BGP peers, 0 BGP advertisements, 0 BFD profiles\n".to_owned())
        );
    }

    #[test]
    fn invalid_config_prints_every_problem() {
        let text = format!(
            "{HEADER}spec:\n  logLevel: loud\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.0/33]\n"
        );
        let (code, out) = verdict(&text);
        assert_eq!(code, 1);
        assert_eq!(
            out,
            "spec.logLevel: \"loud\": must be one of error, warn, info, debug, trace\n\
             spec.addressPools[0].addresses[0]: \"203.0.113.0/33\": not a CIDR (203.0.113.0/28) or a range (203.0.113.10-203.0.113.20)\n"
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for text in [
            "{",
            "\t- ]",
            "apiVersion: v1\nkind: Pod\n",
            "42",
            "\u{feff}",
            "kind: [",
            "",
        ] {
            let (code, out) = verdict(text);
            assert_eq!(code, 1, "{text:?} gave {out}");
            assert!(!out.is_empty());
        }
    }
}
