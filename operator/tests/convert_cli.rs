//! `ferrolb-operator convert --from-metallb` as admins run it: the real binary, files and
//! standard input, exit codes, and its output fed to `ferrolb-operator validate`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const OPERATOR: &str = env!("CARGO_BIN_EXE_ferrolb-operator");

fn example(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/convert")
        .join(format!("{name}.yaml"))
}

fn with_stdin(args: &[&str], input: &[u8]) -> std::io::Result<Output> {
    let mut child = Command::new(OPERATOR)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?
        .write_all(input)?;
    child.wait_with_output()
}

#[test]
fn a_clean_convert_exits_0_and_its_output_validates() {
    let out = Command::new(OPERATOR)
        .args(["convert", "--from-metallb", "-f"])
        .arg(example("bgp-communities"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.ends_with("nothing essential lost\n"), "{stderr}");
    let validated = with_stdin(&["validate", "-f", "-"], &out.stdout).unwrap();
    let verdict = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(validated.status.code(), Some(0), "{verdict}");
    assert!(
        verdict.starts_with("valid: LoadBalancerConfig \"ferrolb\": 1 address pool, 0 L2 advertisements, 1 BGP peer, 2 BGP advertisements"),
        "{verdict}"
    );
}

#[test]
fn convert_with_an_essential_loss_still_prints_the_config_and_exits_3() {
    let text = std::fs::read(example("v1beta1-password")).unwrap();
    let out = with_stdin(&["convert", "--from-metallb", "-f", "-"], &text).unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stdout.contains("kind: LoadBalancerConfig"), "{stdout}");
    assert!(
        stderr.contains(
            "essential: BGPPeer metallb-system/router.rack-1: spec.password: an inline password"
        ),
        "{stderr}"
    );
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));
    let validated = with_stdin(&["validate", "-f", "-"], &out.stdout).unwrap();
    assert_eq!(validated.status.code(), Some(0));
}

#[test]
fn convert_exits_1_when_it_prints_nothing_and_2_for_a_wrong_command_line() {
    let invalid = Command::new(OPERATOR)
        .args(["convert", "--from-metallb", "-f"])
        .arg(example("invalid"))
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(1));
    assert!(invalid.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&invalid.stderr).contains("(from BGPPeer metallb-system/blue)")
    );

    let missing = Command::new(OPERATOR)
        .args([
            "convert",
            "--from-metallb",
            "-f",
            "/nonexistent/metallb.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/metallb.yaml")
    );

    let no_source = Command::new(OPERATOR)
        .args(["convert", "-f"])
        .arg(example("l2-simple"))
        .output()
        .unwrap();
    assert_eq!(no_source.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_source.stderr).contains("--from-metallb"));
}
