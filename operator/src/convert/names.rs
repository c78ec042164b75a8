//! Names: MetalLB's are DNS-1123 subdomains (dots allowed, up to 253 characters), FerroLB's
//! list entries are DNS-1123 labels (no dots, up to 63).

use std::collections::HashSet;

use ferrolb_api::validate::is_dns1123_label;

const MAX: usize = 63;

/// Hands out FerroLB names for one list (pools, peers, ...), each unique within it.
#[derive(Debug, Default)]
pub(super) struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// Names for a list in which `reserved` are never handed out.
    pub fn reserving<'a>(reserved: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            taken: reserved.into_iter().map(str::to_owned).collect(),
        }
    }

    /// A DNS-1123 label for `name`: the name itself when it is one and still free; otherwise
    /// dots and other characters become `-`, it is cut to 63 characters, and a `-2`, `-3`, ...
    /// suffix makes it unique.
    pub fn assign(&mut self, name: &str) -> String {
        let base = if is_dns1123_label(name) {
            name.to_owned()
        } else {
            label(name)
        };
        let mut candidate = base.clone();
        let mut n = 2;
        while self.taken.contains(&candidate) {
            let suffix = format!("-{n}");
            let keep = MAX.saturating_sub(suffix.len()).min(base.len());
            candidate = format!("{}{suffix}", base[..keep].trim_end_matches('-'));
            n += 1;
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}

fn label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let cut = &trimmed[..trimmed.len().min(MAX)];
    match cut.trim_end_matches('-') {
        "" => "unnamed".to_owned(),
        ok => ok.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_and_subdomains_become_unique_labels() {
        let mut names = Names::default();
        assert_eq!(names.assign("public"), "public");
        assert_eq!(names.assign("pool.public"), "pool-public");
        assert_eq!(names.assign("pool-public"), "pool-public-2");
        assert_eq!(names.assign("public"), "public-2");
        let long = "a".repeat(70);
        assert_eq!(names.assign(&long), "a".repeat(63));
        let again = names.assign(&long);
        assert_eq!(again, format!("{}-2", "a".repeat(61)));
        assert!(is_dns1123_label(&again));
        assert_eq!(names.assign("..."), "unnamed");
    }

    #[test]
    fn reserved_names_are_never_handed_out() {
        let mut names = Names::reserving(["no-export"]);
        assert_eq!(names.assign("NO_EXPORT"), "no-export-2");
        assert_eq!(names.assign("vpn-only"), "vpn-only");
    }
}
