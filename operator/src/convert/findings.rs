//! What a conversion could not carry over, or wants the admin to know, each naming the MetalLB
//! object, the field and (when it is safe to show) the value.

use std::fmt;

/// The MetalLB object a finding is about: `IPAddressPool metallb-system/public`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Kind of the object, as MetalLB spells it.
    pub kind: String,
    /// Namespace of the object; `None` when the input did not say.
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Something lost that changes which addresses Services receive, or whether and where they
    /// are announced: the conversion exits non-zero.
    Essential,
    /// Something lost that changes neither (an FRR-only knob, a log level FerroLB lacks).
    Cosmetic,
    /// Nothing lost, but worth knowing or doing (a Secret to copy, a renamed object).
    Note,
}

impl Severity {
    /// The prefix of the finding's line on standard error.
    pub fn label(self) -> &'static str {
        match self {
            Self::Essential => "essential",
            Self::Cosmetic => "warning",
            Self::Note => "note",
        }
    }
}

/// One thing the admin should read before applying the converted config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// The MetalLB object it is about.
    pub source: Source,
    /// Path of the field in that object (`spec.serviceSelectors`), or empty for the whole object.
    pub field: String,
    /// The field's value as JSON, when it may be shown (never for a password).
    pub value: Option<String>,
    /// What happened to it, and what to do.
    pub message: String,
}

impl fmt::Display for Finding {
    /// `SEVERITY: SOURCE: FIELD: VALUE: MESSAGE`, leaving out an empty field or value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity.label(), self.source)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        if let Some(value) = &self.value {
            write!(f, ": {value}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A value as JSON, the way findings show it.
pub(super) fn json<T: serde::Serialize + ?Sized>(value: &T) -> Option<String> {
    serde_json::to_string(value).ok()
}
