//! What the root-only network namespace tests (l2_netns, bgp_netns, bfd_netns) share: running the
//! tools, and the check that they can run at all.

use std::process::{Command, Output};

/// Runs a command given as one string of whitespace-separated words (no word has a space).
pub fn run(command: &str) -> Output {
    let words: Vec<&str> = command.split_whitespace().collect();
    Command::new(words[0])
        .args(&words[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// [`run`], failing the test unless the command succeeds; its stdout.
pub fn must(command: &str) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// These tests need root (`why` says for what) and `tools`; without them they fail loudly rather
/// than pass. `suite` names the test target in the messages.
pub fn require_root_and_tools(suite: &str, why: &str, tools: &[&str]) {
    assert_eq!(
        must("id -u").trim(),
        "0",
        "{suite} tests need root ({why}); run them as root"
    );
    for tool in tools {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{suite} tests need `{tool}`: run tests/testbed/install-deps.sh"
        );
    }
}
