//! What a container runs: its image mapped to a program, `$(VAR)` expansion, shell quoting.

use std::path::Path;

/// Images the testbed can run, and what they map to.
pub const KNOWN_IMAGES: &str = "ferrolb:* or */ferrolb:* (binary chosen by command[0]: ferrolb-operator, \
ferrolb-controller, ferrolb-speaker), */ferrolb-operator:*, */ferrolb-controller:*, */ferrolb-speaker:*, \
ferrolb-testbed/echo[:*] (built-in echo server), ferrolb-testbed/host[:*] (command run from the host filesystem)";

/// Map a container image + command/args to a program and its arguments (pure, tested).
pub fn resolve_program(
    image: &str,
    command: &[String],
    args: &[String],
    bin_dir: &Path,
    self_exe: &Path,
) -> Result<Vec<String>, String> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo_last = last.split(':').next().unwrap_or(last);
    let repo = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    let ferrolb_bins = ["ferrolb-operator", "ferrolb-controller", "ferrolb-speaker"];
    let bin = |name: &str| bin_dir.join(name).to_string_lossy().into_owned();
    let mut full: Vec<String> = command.iter().chain(args.iter()).cloned().collect();
    if repo == "ferrolb-testbed/echo" {
        let mut v = vec![self_exe.to_string_lossy().into_owned(), "echo".to_string()];
        v.extend(full);
        return Ok(v);
    }
    if repo == "ferrolb-testbed/host" {
        if full.is_empty() {
            return Err(format!("image {image} needs a command"));
        }
        return Ok(full);
    }
    if ferrolb_bins.contains(&repo_last) {
        let first_is_bin = full
            .first()
            .is_some_and(|c| Path::new(c).file_name().and_then(|f| f.to_str()) == Some(repo_last));
        if first_is_bin {
            full.remove(0);
        }
        let mut v = vec![bin(repo_last)];
        v.extend(full);
        return Ok(v);
    }
    if repo_last == "ferrolb" {
        let Some(first) = full.first() else {
            return Err(format!(
                "image {image} needs command[0] naming the binary (one of {})",
                ferrolb_bins.join(", ")
            ));
        };
        let base = Path::new(first)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("")
            .to_string();
        if !ferrolb_bins.contains(&base.as_str()) {
            return Err(format!(
                "image {image}: command[0] {first:?} is not one of {}",
                ferrolb_bins.join(", ")
            ));
        }
        full[0] = bin(&base);
        return Ok(full);
    }
    Err(format!(
        "image {image} is not known to the testbed; known images: {KNOWN_IMAGES}"
    ))
}

/// Expand `$(VAR)` references like the kubelet does (`$$` escapes).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('(') {
            match a.find(')') {
                Some(j) => {
                    let name = &a[..j];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &a[j + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_images() {
        let bin = Path::new("/t/debug");
        let me = Path::new("/x/ferrolb-testbed");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_program(
                "ferrolb:dev",
                &s(&["/ferrolb-speaker"]),
                &s(&["--x"]),
                bin,
                me
            ),
            Ok(s(&["/t/debug/ferrolb-speaker", "--x"]))
        );
        assert_eq!(
            resolve_program(
                "quay.io/ferrolb/ferrolb:v1",
                &s(&["ferrolb-controller"]),
                &[],
                bin,
                me
            ),
            Ok(s(&["/t/debug/ferrolb-controller"]))
        );
        assert_eq!(
            resolve_program("ghcr.io/x/ferrolb-speaker:v1", &[], &s(&["--a"]), bin, me),
            Ok(s(&["/t/debug/ferrolb-speaker", "--a"]))
        );
        assert_eq!(
            resolve_program("ferrolb-testbed/echo", &[], &s(&["--port", "80"]), bin, me),
            Ok(s(&["/x/ferrolb-testbed", "echo", "--port", "80"]))
        );
        assert!(resolve_program("nginx:1", &[], &[], bin, me).is_err());
        assert!(resolve_program("ferrolb:dev", &s(&["/bin/sh"]), &[], bin, me).is_err());
    }

    #[test]
    fn expands_vars() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }
}
