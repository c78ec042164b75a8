//! `ferrolb-operator validate` as admins run it: the real binary, files and standard input.

use std::io::Write;
use std::process::{Command, Stdio};

const OPERATOR: &str = env!("CARGO_BIN_EXE_ferrolb-operator");

fn samples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples")
}

#[test]
fn every_shipped_sample_is_valid() {
    let mut seen = 0;
    for entry in std::fs::read_dir(samples()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = Command::new(OPERATOR)
            .args(["validate", "-f"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", path.display());
        assert!(stdout.starts_with("valid: LoadBalancerConfig"), "{stdout}");
        // The summary only: a shipped sample has no warnings either.
        assert_eq!(stdout.lines().count(), 1, "{}: {stdout}", path.display());
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected the L2 and the BGP samples, found {seen}"
    );
}

#[test]
fn reads_standard_input_and_exits_1_with_every_problem() {
    let mut child = Command::new(OPERATOR)
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: ferrolb.io/v1alpha1\nkind: LoadBalancerConfig\nmetadata: {name: x}\nspec:\n  addressPools:\n  - name: a\n    addresses: [203.0.113.0/28]\n  - name: b\n    addresses: [203.0.113.8/29]\n  bgpPeers:\n  - {name: p, myASN: 0, peerASN: 1, peerAddress: 198.51.100.1}\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout,
        "spec.addressPools[1].addresses[0]: \"203.0.113.8/29\": overlaps spec.addressPools[0].addresses[0] (203.0.113.0/28); no address may be in two pools or twice in one\n\
         spec.bgpPeers[0].myASN: 0: must be between 1 and 4294967295\n"
    );
}

#[test]
fn a_missing_file_exits_2() {
    let out = Command::new(OPERATOR)
        .args(["validate", "-f", "/nonexistent/ferrolb.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/ferrolb.yaml"));
}
