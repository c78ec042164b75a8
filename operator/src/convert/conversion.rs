//! What a conversion gives: the config with its findings ([`Conversion`]), as YAML headed by
//! comments, or why there is none ([`ConvertError`]).

use std::fmt;

use ferrolb_api::{LoadBalancerConfig, Problem};

use super::CONFIG_NAME;
use super::findings::{Finding, Severity, Source};

/// A converted configuration.
#[derive(Clone, Debug)]
pub struct Conversion {
    /// The config, valid.
    pub config: LoadBalancerConfig,
    /// What could not be carried over, and what to know or do, in the order of the input.
    pub findings: Vec<Finding>,
    /// The namespace the MetalLB objects were read from.
    pub namespace: String,
    /// How many objects of each MetalLB kind were converted, in the order of the input.
    pub converted: Vec<(String, usize)>,
}

impl Conversion {
    /// How many findings are essential losses.
    pub fn essential(&self) -> usize {
        self.count(Severity::Essential)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The objects read, as people say it: `2 IPAddressPools, 1 L2Advertisement`.
    pub fn objects_read(&self) -> String {
        let list: Vec<String> = self
            .converted
            .iter()
            .map(|(kind, n)| format!("{n} {kind}{}", if *n == 1 { "" } else { "s" }))
            .collect();
        list.join(", ")
    }

    /// The config as YAML, headed by comments that list every finding.
    pub fn to_yaml(&self) -> Result<String, crate::render::YamlError> {
        let mut head = format!(
            "LoadBalancerConfig converted from MetalLB by `ferrolb-operator convert --from-metallb`,\n\
             from namespace {}: {}.\n\
             Check it with `ferrolb-operator validate -f FILE` and `kubectl apply --dry-run=server -f FILE`\n\
             before you switch (docs/migrating-from-metallb.md).\n",
            self.namespace,
            self.objects_read()
        );
        let sections = [
            (
                Severity::Essential,
                "Essential losses: because of them FerroLB may assign or announce addresses differently from MetalLB.",
            ),
            (
                Severity::Cosmetic,
                "Not carried over, changing neither which addresses are assigned nor where they are announced:",
            ),
            (Severity::Note, "Notes:"),
        ];
        for (severity, title) in sections {
            let lines: Vec<String> = self
                .findings
                .iter()
                .filter(|f| f.severity == severity)
                .map(|f| {
                    let line = f.to_string();
                    let rest = line
                        .strip_prefix(severity.label())
                        .and_then(|l| l.strip_prefix(": "))
                        .unwrap_or(&line);
                    format!("- {rest}\n")
                })
                .collect();
            if !lines.is_empty() {
                head.push_str(&format!("\n{title}\n"));
                head.extend(lines);
            }
        }
        Ok(format!(
            "{}{}",
            crate::render::comment(&head),
            serde_saphyr::to_string(&self.config)?
        ))
    }

    /// One line for standard error after the findings.
    pub fn summary(&self) -> String {
        let counted = format!(
            "{} essential, {} warning{}, {} note{}",
            self.essential(),
            self.count(Severity::Cosmetic),
            if self.count(Severity::Cosmetic) == 1 {
                ""
            } else {
                "s"
            },
            self.count(Severity::Note),
            if self.count(Severity::Note) == 1 {
                ""
            } else {
                "s"
            },
        );
        let verdict = if self.essential() > 0 {
            "review every `essential:` line before you apply it"
        } else {
            "nothing essential lost"
        };
        format!(
            "converted {} from namespace {} into LoadBalancerConfig {CONFIG_NAME:?} ({counted}): {verdict}",
            self.objects_read(),
            self.namespace
        )
    }
}

/// Why no config came out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The text is not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// A document is not a Kubernetes object.
    #[error("document {doc} is not a Kubernetes object (it needs apiVersion and kind)")]
    NotAnObject {
        /// 1-based index of the document.
        doc: usize,
    },
    /// Nothing to convert.
    #[error(
        "no MetalLB configuration in namespace {namespace}: expected metallb.io objects of kind IPAddressPool, L2Advertisement, BGPAdvertisement, BGPPeer, BFDProfile, Community or MetalLB, as `kubectl get ipaddresspools,l2advertisements,bgpadvertisements,bgppeers,bfdprofiles,communities -A -o yaml` prints them"
    )]
    NoMetalLbObjects {
        /// The namespace looked in.
        namespace: String,
    },
    /// Objects in several namespaces, none of them the usual one.
    #[error(
        "MetalLB objects in several namespaces ({}): MetalLB reads only those in its own namespace; name it with --metallb-namespace",
        .0.join(", ")
    )]
    SeveralNamespaces(Vec<String>),
    /// The converted config does not validate: a case the conversion does not handle.
    #[error("{}", Invalid(.problems))]
    Invalid {
        /// Each problem, with the MetalLB object its field came from.
        problems: Vec<(Problem, Option<Source>)>,
        /// The findings up to that point.
        findings: Vec<Finding>,
    },
}

struct Invalid<'a>(&'a [(Problem, Option<Source>)]);

impl fmt::Display for Invalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the converted LoadBalancerConfig does not pass FerroLB's validation, so none is printed; fix these in the MetalLB objects or write the config by hand:",
        )?;
        for (problem, source) in self.0 {
            write!(f, "\n  {problem}")?;
            if let Some(source) = source {
                write!(f, " (from {source})")?;
            }
        }
        Ok(())
    }
}
