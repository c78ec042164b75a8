//! Kubernetes name rules (apimachinery's `validation.go`), written out without regexes.

/// Reason given for a name that is not a DNS-1123 label.
pub const DNS1123_LABEL: &str = "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit";

/// Reason given for a name that is not a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN: &str = "must be a DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit";

/// Reason given for a key that is not a qualified name.
pub const QUALIFIED_NAME: &str = "must be a qualified name such as example.com/name or name: an optional DNS subdomain and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";

/// Reason given for an invalid label value.
pub const LABEL_VALUE: &str = "must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters (a label value or the name part
/// of a qualified name).
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// A label key, annotation key or loadBalancerClass: `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

/// A label value: empty or a name part.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters.
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace, not `.` or `..`.
pub fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "public", "pool-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "Public", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in ["app", "ferrolb.io/lb", "kubernetes.io/hostname", "A_b.c-D"] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in ["", "/x", "x/", "Example.com/x", "a/b/c", "-a", "a b"] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
    }

    #[test]
    fn label_values_interfaces_and_secret_keys() {
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("a/b"));
        assert!(is_interface_name("eth0.100"));
        assert!(!is_interface_name("a-very-long-name0"));
        assert!(!is_interface_name("eth 0"));
        assert!(is_secret_key(".dockercfg"));
        assert!(!is_secret_key("a/b"));
    }
}
