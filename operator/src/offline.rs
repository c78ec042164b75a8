//! The offline commands, for GitOps pipelines and for admins who want to see before they apply:
//! `ferrolb-operator validate -f FILE` (the operator's checks) and `ferrolb-operator render -f
//! FILE` (every object the operator would deploy for that config).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use ferrolb_api::manifest::parse_config;
use ferrolb_api::{LoadBalancerConfig, validate, warnings};
use ferrolb_operator::render::{self, Settings};

/// Exit code for a manifest with problems.
const INVALID: u8 = 1;
/// Exit code when the file cannot be read at all.
const UNREADABLE: u8 = 2;

/// `validate`: prints every problem and exits 1, or a one-line summary and exits 0. A valid config
/// is followed by its warnings (`warning: PATH: MESSAGE`, one a line; no node labels offline).
pub fn validate_file(file: &Path) -> ExitCode {
    let Some(text) = read(file, "validate") else {
        return ExitCode::from(UNREADABLE);
    };
    let mut out = std::io::stdout().lock();
    let code = check(&text, &mut out);
    let _ = out.flush();
    ExitCode::from(code)
}

/// `render`: prints the operands for a valid config as one YAML stream (the membership Secret
/// excepted: its key is made in the cluster), or every problem on standard error and exits 1.
pub fn render_file(file: &Path, settings: &Settings) -> ExitCode {
    let Some(text) = read(file, "render") else {
        return ExitCode::from(UNREADABLE);
    };
    match rendered(&text, settings) {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(yaml.as_bytes());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::from(INVALID)
        }
    }
}

fn read(file: &Path, command: &str) -> Option<String> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    text.map_err(|e| {
        eprintln!(
            "ferrolb-operator {command}: cannot read {}: {e}",
            file.display()
        )
    })
    .ok()
}

/// The operands of the config in `text`, or why there are none.
fn rendered(text: &str, settings: &Settings) -> Result<String, String> {
    let config = parse_config(text).map_err(|e| e.to_string())?;
    validate(&config.spec).map_err(|problems| problems.to_string())?;
    let ops = render::operands(&config.spec, settings);
    let yaml = || -> Result<String, render::YamlError> {
        Ok([
            render::document(&ops.namespace)?,
            render::to_yaml(&ops.service_accounts)?,
            render::to_yaml(&ops.cluster_role_bindings)?,
            render::to_yaml(&ops.roles)?,
            render::to_yaml(&ops.role_bindings)?,
            render::document(&ops.controller)?,
            render::document(&ops.speaker)?,
        ]
        .concat())
    };
    yaml().map_err(|e| format!("cannot write YAML: {e}"))
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
            for warning in warnings(&config.spec, None) {
                let _ = writeln!(out, "warning: {warning}");
            }
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
            "{HEADER}spec:\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.0/28]\n  l2Advertisements:\n  - name: lan\n"
        );
        assert_eq!(
            verdict(&text),
            (0, "valid: LoadBalancerConfig \"ferrolb\": 1 address pool, 1 L2 advertisement, 0 BGP peers, 0 BGP advertisements, 0 BFD profiles\n".to_owned())
        );
    }

    #[test]
    fn valid_config_prints_its_warnings_after_the_summary_and_exits_0() {
        let text = format!(
            "{HEADER}spec:\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.0/28]\n  bgpPeers:\n  - {{name: tor, myASN: 64512, peerASN: 64513, peerAddress: 198.51.100.1}}\n"
        );
        assert_eq!(
            verdict(&text),
            (
                0,
                "valid: LoadBalancerConfig \"ferrolb\": 1 address pool, 0 L2 advertisements, 1 BGP peer, 0 BGP advertisements, 0 BFD profiles\n\
                 warning: spec.addressPools[0]: no L2 or BGP advertisement selects pool \"lan\": Services would get its addresses, but no node would announce them\n\
                 warning: spec.bgpPeers[0]: no BGP advertisement announces to peer \"tor\" (none lists it, and none has an empty peers list): its sessions would carry no routes\n"
                    .to_owned()
            )
        );
    }

    #[test]
    fn an_invalid_config_gets_no_warnings() {
        // Unannounced, but invalid: only the problem is printed.
        let text = format!(
            "{HEADER}spec:\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.5]\n"
        );
        let (code, out) = verdict(&text);
        assert_eq!(code, 1);
        assert!(!out.contains("warning:"), "{out}");
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
    fn render_prints_every_operand_of_a_valid_config_and_refuses_an_invalid_one() {
        let settings = Settings::of_this_build();
        let text = format!(
            "{HEADER}spec:\n  logLevel: debug\n  addressPools:\n  - name: lan\n    addresses: [203.0.113.0/28]\n"
        );
        let yaml = rendered(&text, &settings).unwrap();
        let kinds: Vec<&str> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("kind: "))
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ServiceAccount",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "Role",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "Deployment",
                "DaemonSet"
            ]
        );
        // The config's knobs reach both workloads.
        assert_eq!(yaml.matches("value: debug").count(), 2, "{yaml}");
        let bad = format!("{HEADER}spec:\n  logLevel: loud\n");
        assert_eq!(
            rendered(&bad, &settings),
            Err(
                "spec.logLevel: \"loud\": must be one of error, warn, info, debug, trace"
                    .to_owned()
            )
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
