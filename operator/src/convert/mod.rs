//! `ferrolb-operator convert --from-metallb`: MetalLB's configuration objects (IPAddressPool,
//! L2Advertisement, BGPAdvertisement, BGPPeer v1beta1 and v1beta2, BFDProfile, Community, and the
//! MetalLB operator's `MetalLB`) as one `LoadBalancerConfig`.
//!
//! Pure: text in, a config and its findings out ([`convert`]); [`cli`] reads the file and
//! writes the result. Each MetalLB kind has its own module with its serde types (written from
//! MetalLB's documented field names) and its mapping, one field at a time, so a field FerroLB
//! gains later changes one obvious place. Whatever cannot be carried over becomes a
//! [`Finding`]: [`Severity::Essential`] when dropping it changes which addresses Services get or
//! whether and where they are announced, [`Severity::Cosmetic`] otherwise. The result always
//! passes [`ferrolb_api::validate`], or the conversion fails.
//!
//! Label selectors on pools (`ipAddressPoolSelectors`) resolve to pool names here: a single
//! object needs none.

mod bfd;
mod bgp_advertisement;
mod bgp_peer;
pub mod cli;
mod community;
mod conversion;
mod duration;
mod findings;
mod input;
mod l2;
mod metallb;
mod names;
mod pools;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ferrolb_api::address::IpFamily;
use ferrolb_api::{LoadBalancerConfig, LoadBalancerConfigSpec, validate, warnings};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub use conversion::{Conversion, ConvertError};
pub use findings::{Finding, Severity, Source};

use findings::json;
use input::Object;
use names::Names;

/// The name of the LoadBalancerConfig the conversion writes.
pub const CONFIG_NAME: &str = "ferrolb";

/// The namespace MetalLB is installed in unless the input says otherwise.
pub const DEFAULT_METALLB_NAMESPACE: &str = "metallb-system";

/// What the caller can choose.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The namespace MetalLB reads its objects from. `None`: the MetalLB resource's namespace,
    /// else the one namespace the objects are in (`metallb-system` when they are in several and
    /// it is one of them).
    pub metallb_namespace: Option<String>,
    /// MetalLB's speakers ran with `--ignore-exclude-lb` (Helm: `speaker.ignoreExcludeLB`),
    /// which no MetalLB object records: write `speaker.ignoreExcludeLBLabel: true`.
    pub ignore_exclude_lb: bool,
}

/// Converts the MetalLB objects in `text`.
pub fn convert(text: &str, options: &Options) -> Result<Conversion, ConvertError> {
    let objects: Vec<(Kind, Object)> = input::objects(text)?
        .into_iter()
        .map(|o| (Kind::of(&o), o))
        .collect();
    let namespace = metallb_namespace(&objects, options)?;
    let mut c = Converter::new(namespace.clone());
    c.spec.speaker.ignore_exclude_lb_label = options.ignore_exclude_lb;
    let mut in_force: Vec<(Kind, Object)> = Vec::new();
    for (kind, object) in objects {
        let source = object.source.clone();
        match kind {
            Kind::Other => c.note(
                &source,
                "",
                None,
                "ignored: not a MetalLB configuration object",
            ),
            Kind::Status => c.note(
                &source,
                "",
                None,
                "ignored: MetalLB writes it to report state; it holds no configuration",
            ),
            Kind::Frr => c.cosmetic(
                &source,
                "",
                None,
                "not converted: FerroLB speaks BGP itself and runs no FRR, so raw FRR configuration has no equivalent (FerroLB accepts no routes from its peers)",
            ),
            Kind::UnknownMetalLb if source.kind == "AddressPool" => c.essential(
                &source,
                "",
                None,
                "not converted: MetalLB 0.13 replaced AddressPool with IPAddressPool plus L2Advertisement or BGPAdvertisement, and 0.14 removed it; write those and convert them",
            ),
            Kind::UnknownMetalLb => c.essential(
                &source,
                "",
                None,
                format!(
                    "not converted: this converter does not know {} {} (from a newer MetalLB?); carry it over by hand",
                    object.api_version, source.kind
                ),
            ),
            _ if object.source.namespace.as_ref().is_some_and(|ns| *ns != namespace) => c.note(
                &source,
                "",
                None,
                format!(
                    "ignored: MetalLB reads its objects only from namespace {namespace}, so this one was never in force"
                ),
            ),
            kind => in_force.push((kind, object)),
        }
    }
    if in_force.is_empty() {
        return Err(ConvertError::NoMetalLbObjects { namespace });
    }
    let mut converted: Vec<(String, usize)> = Vec::new();
    for (_, object) in &in_force {
        match converted.iter_mut().find(|(k, _)| *k == object.source.kind) {
            Some((_, n)) => *n += 1,
            None => converted.push((object.source.kind.clone(), 1)),
        }
    }
    // References first: what advertisements and peers name must exist when they are converted.
    let of = |wanted: &'static [Kind]| in_force.iter().filter(move |(k, _)| wanted.contains(k));
    metallb::convert_all(&mut c, of(&[Kind::MetalLb]).map(|(_, o)| o));
    for (_, object) in of(&[Kind::BfdProfile]) {
        bfd::convert(&mut c, object);
    }
    for (_, object) in of(&[Kind::Community]) {
        community::convert(&mut c, object);
    }
    for (_, object) in of(&[Kind::IpAddressPool]) {
        pools::convert(&mut c, object);
    }
    pools::order_priorities(&mut c);
    for (kind, object) in of(&[Kind::BgpPeerV1beta1, Kind::BgpPeerV1beta2]) {
        bgp_peer::convert(&mut c, object, *kind == Kind::BgpPeerV1beta1);
    }
    for (_, object) in of(&[Kind::L2Advertisement]) {
        l2::convert(&mut c, object);
    }
    for (_, object) in of(&[Kind::BgpAdvertisement]) {
        bgp_advertisement::convert(&mut c, object);
    }
    bgp_peer::check_families(&mut c);
    c.finish(converted)
}

/// What an input object is to the conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    MetalLb,
    BfdProfile,
    Community,
    IpAddressPool,
    BgpPeerV1beta1,
    BgpPeerV1beta2,
    L2Advertisement,
    BgpAdvertisement,
    /// MetalLB's status-only kinds.
    Status,
    /// frr-k8s's kinds (FRRConfiguration, ...).
    Frr,
    /// A metallb.io kind or version this converter does not know.
    UnknownMetalLb,
    /// Anything else (Secrets, Namespaces, ...).
    Other,
}

impl Kind {
    fn of(object: &Object) -> Self {
        match (
            object.group(),
            object.version(),
            object.source.kind.as_str(),
        ) {
            ("metallb.io", "v1beta1", "MetalLB") => Self::MetalLb,
            ("metallb.io", "v1beta1", "BFDProfile") => Self::BfdProfile,
            ("metallb.io", "v1beta1", "Community") => Self::Community,
            ("metallb.io", "v1beta1", "IPAddressPool") => Self::IpAddressPool,
            ("metallb.io", "v1beta1", "BGPPeer") => Self::BgpPeerV1beta1,
            ("metallb.io", "v1beta2", "BGPPeer") => Self::BgpPeerV1beta2,
            ("metallb.io", "v1beta1", "L2Advertisement") => Self::L2Advertisement,
            ("metallb.io", "v1beta1", "BGPAdvertisement") => Self::BgpAdvertisement,
            ("metallb.io", _, "ServiceL2Status" | "ServiceBGPStatus" | "ConfigurationState") => {
                Self::Status
            }
            ("metallb.io", ..) => Self::UnknownMetalLb,
            ("frrk8s.metallb.io", ..) => Self::Frr,
            _ => Self::Other,
        }
    }

    fn is_config(self) -> bool {
        !matches!(
            self,
            Self::Status | Self::Frr | Self::UnknownMetalLb | Self::Other
        )
    }
}

/// The namespace MetalLB reads its objects from: as the options say; else the MetalLB
/// resource's; else the one the objects are in.
fn metallb_namespace(
    objects: &[(Kind, Object)],
    options: &Options,
) -> Result<String, ConvertError> {
    if let Some(ns) = &options.metallb_namespace {
        return Ok(ns.clone());
    }
    let namespace_of = |wanted: fn(Kind) -> bool| -> BTreeSet<&str> {
        objects
            .iter()
            .filter(|(k, _)| wanted(*k))
            .filter_map(|(_, o)| o.source.namespace.as_deref())
            .collect()
    };
    let operator = namespace_of(|k| k == Kind::MetalLb);
    if let [ns] = operator.iter().collect::<Vec<_>>().as_slice() {
        return Ok((**ns).to_owned());
    }
    let all = namespace_of(Kind::is_config);
    match all.iter().collect::<Vec<_>>().as_slice() {
        [] => Ok(DEFAULT_METALLB_NAMESPACE.to_owned()),
        [only] => Ok((**only).to_owned()),
        _ if all.contains(DEFAULT_METALLB_NAMESPACE) => Ok(DEFAULT_METALLB_NAMESPACE.to_owned()),
        _ => Err(ConvertError::SeveralNamespaces(
            all.into_iter().map(str::to_owned).collect(),
        )),
    }
}

/// A pool carried over.
#[derive(Clone, Debug)]
struct Pool {
    /// Its MetalLB name.
    metallb: String,
    /// Its FerroLB name.
    name: String,
    /// Its MetalLB labels, which advertisements select it by.
    labels: BTreeMap<String, String>,
    /// The families of its addresses.
    families: BTreeSet<IpFamily>,
    /// Its `serviceAllocation.priority` as MetalLB wrote it.
    priority: Option<i64>,
    /// Where it came from.
    source: Source,
}

/// A BGP peer carried over.
#[derive(Clone, Debug)]
struct Peer {
    /// Its MetalLB name.
    metallb: String,
    /// Its FerroLB name.
    name: String,
    /// The family of its address.
    family: Option<IpFamily>,
    /// MetalLB's `dualStackAddressFamily`.
    dual_stack: bool,
    /// Where it came from.
    source: Source,
}

/// The state of one conversion: the spec being built, the findings, and the names of what has
/// been carried over, for references.
#[derive(Debug)]
struct Converter {
    /// MetalLB's namespace.
    namespace: String,
    spec: LoadBalancerConfigSpec,
    findings: Vec<Finding>,
    /// The MetalLB object each spec entry came from (`spec.addressPools[0]` → its pool).
    provenance: Vec<(String, Source)>,
    pools: Vec<Pool>,
    /// MetalLB names of pools that were dropped (their loss is already reported).
    dropped_pools: HashSet<String>,
    pool_names: Names,
    peers: Vec<Peer>,
    dropped_peers: HashSet<String>,
    peer_names: Names,
    /// MetalLB BFD profile name → FerroLB name.
    bfd_profiles: HashMap<String, String>,
    bfd_names: Names,
    /// Community alias → its FerroLB name (of a `spec.communities` entry, or well-known).
    communities: HashMap<String, String>,
    /// Names of `spec.communities` entries; well-known names are taken from the start.
    community_names: Names,
    l2_names: Names,
    bgp_advertisement_names: Names,
}

impl Converter {
    fn new(namespace: String) -> Self {
        Self {
            namespace,
            spec: LoadBalancerConfigSpec::default(),
            findings: Vec::new(),
            provenance: Vec::new(),
            pools: Vec::new(),
            dropped_pools: HashSet::new(),
            pool_names: Names::default(),
            peers: Vec::new(),
            dropped_peers: HashSet::new(),
            peer_names: Names::default(),
            bfd_profiles: HashMap::new(),
            bfd_names: Names::default(),
            communities: HashMap::new(),
            community_names: Names::reserving(
                ferrolb_api::community::WELL_KNOWN
                    .iter()
                    .map(|(name, _)| *name),
            ),
            l2_names: Names::default(),
            bgp_advertisement_names: Names::default(),
        }
    }

    fn find(
        &mut self,
        severity: Severity,
        source: &Source,
        field: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            source: source.clone(),
            field: field.to_owned(),
            value,
            message: message.into(),
        });
    }

    fn essential(
        &mut self,
        source: &Source,
        field: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) {
        self.find(Severity::Essential, source, field, value, message);
    }

    fn cosmetic(
        &mut self,
        source: &Source,
        field: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) {
        self.find(Severity::Cosmetic, source, field, value, message);
    }

    fn note(
        &mut self,
        source: &Source,
        field: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) {
        self.find(Severity::Note, source, field, value, message);
    }

    /// The object's spec as `T`, with the paths of the fields this converter does not know;
    /// `None` (an essential loss) when it cannot be read.
    fn read<T: serde::de::DeserializeOwned>(
        &mut self,
        object: &Object,
    ) -> Option<(T, Vec<String>)> {
        match input::spec(object) {
            Ok(read) => Some(read),
            Err(reason) => {
                self.essential(
                    &object.source,
                    "",
                    None,
                    format!("cannot be read ({reason}): not carried over"),
                );
                None
            }
        }
    }

    /// The object's spec as `T`, every field this converter does not know reported
    /// ([`Converter::unknown_fields`]); `None` (an essential loss) when it cannot be read.
    fn read_known<T: serde::de::DeserializeOwned>(&mut self, object: &Object) -> Option<T> {
        let (spec, unknown) = self.read::<T>(object)?;
        self.unknown_fields(&object.source, &unknown);
        Some(spec)
    }

    /// Reports fields this converter does not know. Essential: the API server prunes fields its
    /// schema lacks, so a field that is there meant something to MetalLB.
    fn unknown_fields(&mut self, source: &Source, paths: &[String]) {
        for path in paths {
            self.essential(
                source,
                path,
                None,
                "not a field this converter knows (a newer MetalLB's, or a typo the API server would have dropped): not carried over; check it by hand",
            );
        }
    }

    /// Notes that an object got another name in FerroLB (references follow it).
    fn renamed(&mut self, source: &Source, name: &str) {
        if name != source.name {
            self.note(
                source,
                "metadata.name",
                json(&source.name),
                format!(
                    "written as {name:?}: FerroLB names are DNS-1123 labels (at most 63 characters, no dots) and unique; references to it follow"
                ),
            );
        }
    }

    /// Records that the spec entry at `path` came from `source`.
    fn came_from(&mut self, path: String, source: &Source) {
        self.provenance.push((path, source.clone()));
    }

    /// The FerroLB names of the pools an advertisement selects by name and by label: empty for
    /// every pool (MetalLB's meaning of neither), `None` when it selects pools but none of them
    /// was carried over.
    fn select_pools(
        &mut self,
        source: &Source,
        names: &[String],
        selectors: &[LabelSelector],
    ) -> Option<Vec<String>> {
        if names.is_empty() && selectors.is_empty() {
            return Some(Vec::new());
        }
        let mut selected: Vec<String> = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match self.pools.iter().find(|p| p.metallb == *name) {
                Some(pool) => {
                    if !selected.contains(&pool.name) {
                        selected.push(pool.name.clone());
                    }
                }
                None if self.dropped_pools.contains(name) => {}
                None => {
                    let message = format!(
                        "no IPAddressPool of this name in namespace {}: dropped",
                        self.namespace
                    );
                    self.cosmetic(
                        source,
                        &format!("spec.ipAddressPools[{i}]"),
                        json(name),
                        message,
                    );
                }
            }
        }
        if !selectors.is_empty() {
            let matching: Vec<String> = self
                .pools
                .iter()
                .filter(|p| {
                    selectors
                        .iter()
                        .any(|s| ferrolb_api::selector::matches(s, &p.labels))
                })
                .map(|p| p.name.clone())
                .collect();
            self.note(
                source,
                "spec.ipAddressPoolSelectors",
                json(selectors),
                format!(
                    "resolved to the pools they select now ({}); FerroLB lists pools by name, so a pool added later with these labels must be added to addressPools by hand",
                    if matching.is_empty() {
                        "none".to_owned()
                    } else {
                        matching.join(", ")
                    }
                ),
            );
            for name in matching {
                if !selected.contains(&name) {
                    selected.push(name);
                }
            }
        }
        if selected.is_empty() {
            self.cosmetic(
                source,
                "",
                None,
                "selects no pool that was carried over: not carried over, as it would announce nothing",
            );
            return None;
        }
        Some(selected)
    }

    /// Validates the result; its warnings become notes.
    fn finish(mut self, converted: Vec<(String, usize)>) -> Result<Conversion, ConvertError> {
        let config = LoadBalancerConfig::new(CONFIG_NAME, self.spec.clone());
        if let Err(problems) = validate(&config.spec) {
            let problems = problems
                .0
                .into_iter()
                .map(|p| {
                    let source = self.source_of(&p.path).cloned();
                    (p, source)
                })
                .collect();
            return Err(ConvertError::Invalid {
                problems,
                findings: self.findings,
            });
        }
        let whole = Source {
            kind: "LoadBalancerConfig".to_owned(),
            namespace: None,
            name: CONFIG_NAME.to_owned(),
        };
        for warning in warnings(&config.spec, None) {
            let source = self.source_of(&warning.path).unwrap_or(&whole).clone();
            self.note(
                &source,
                "",
                None,
                format!(
                    "FerroLB's validator warns about {}: {}",
                    warning.path, warning.message
                ),
            );
        }
        Ok(Conversion {
            config,
            findings: self.findings,
            namespace: self.namespace,
            converted,
        })
    }

    /// The MetalLB object a spec path is in (`spec.bgpPeers[1].holdTime` → its BGPPeer).
    fn source_of(&self, path: &str) -> Option<&Source> {
        self.provenance
            .iter()
            .filter(|(prefix, _)| {
                path.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, source)| source)
    }
}

#[cfg(test)]
mod tests;
