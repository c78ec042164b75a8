//! BGPPeer (`metallb.io/v1beta1` and `metallb.io/v1beta2`) → `spec.bgpPeers[]`.
//!
//! A v1beta1 peer is first read as the v1beta2 peer it stands for, as MetalLB's conversion does:
//! v1beta1 has no `dynamicASN`, `localASN`, `interface`, `connectTime`, `passwordSecret`,
//! `enableGracefulRestart`, `vrf`, `disableMP` or `dualStackAddressFamily`.
//!
//! | MetalLB | FerroLB |
//! |---|---|
//! | `metadata.name` | `name` |
//! | `spec.myASN`, `spec.peerASN` (0: unset), `spec.dynamicASN` | `myASN`, `peerASN`, `dynamicASN` |
//! | `spec.localASN` | none: essential, dropped |
//! | `spec.peerAddress` | `peerAddress` |
//! | `spec.interface` | none yet (no unnumbered BGP): essential, peer dropped |
//! | `spec.peerPort` (0: 179) | `peerPort` |
//! | `spec.sourceAddress`, `spec.routerID` | `sourceAddress`, `routerID` (an IPv4 address) |
//! | `spec.holdTime`, `spec.keepaliveTime`, `spec.connectTime` | the same, in whole seconds |
//! | `spec.password` | none (never inline): essential; `passwordSecretRef` names a Secret to create |
//! | `spec.passwordSecret` | `passwordSecretRef` (key `password`; the Secret is copied to FerroLB's namespace) |
//! | `spec.bfdProfile` | `bfdProfile` |
//! | `spec.enableGracefulRestart` | `gracefulRestart` |
//! | `spec.ebgpMultiHop` | `ebgpMultiHop` |
//! | `spec.vrf` | `vrf` |
//! | `spec.nodeSelectors` | `nodeSelectors` |
//! | `spec.disableMP` | none: FerroLB always uses MP-BGP |
//! | `spec.dualStackAddressFamily` | none: FerroLB offers both families on every session |

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ferrolb_api::address::IpFamily;
use ferrolb_api::v1alpha1::{BgpPeer, DynamicAsn, SecretKeyRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use super::duration::{Timer, timer};
use super::findings::{Source, json};
use super::input::Object;
use super::{Converter, Peer};

/// The key MetalLB reads the password from in a `kubernetes.io/basic-auth` Secret.
const PASSWORD_KEY: &str = "password";

/// Fields of a v1beta2 peer that a v1beta1 one does not have.
const V1BETA2_ONLY: [&str; 9] = [
    "dynamicASN",
    "localASN",
    "interface",
    "connectTime",
    "passwordSecret",
    "enableGracefulRestart",
    "vrf",
    "disableMP",
    "dualStackAddressFamily",
];

/// `metallb.io/v1beta2` BGPPeer spec.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(rename = "myASN", default)]
    my_asn: u32,
    #[serde(rename = "peerASN")]
    peer_asn: Option<u32>,
    #[serde(rename = "dynamicASN")]
    dynamic_asn: Option<String>,
    #[serde(rename = "localASN")]
    local_asn: Option<u32>,
    peer_address: Option<String>,
    interface: Option<String>,
    source_address: Option<String>,
    peer_port: Option<u16>,
    hold_time: Option<String>,
    keepalive_time: Option<String>,
    connect_time: Option<String>,
    #[serde(rename = "routerID")]
    router_id: Option<String>,
    #[serde(default)]
    node_selectors: Vec<LabelSelector>,
    password: Option<String>,
    password_secret: Option<SecretReference>,
    bfd_profile: Option<String>,
    enable_graceful_restart: Option<bool>,
    ebgp_multi_hop: Option<bool>,
    vrf: Option<String>,
    #[serde(rename = "disableMP")]
    disable_mp: Option<bool>,
    dual_stack_address_family: Option<bool>,
}

/// `metallb.io/v1beta1` BGPPeer spec.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct V1beta1 {
    #[serde(rename = "myASN", default)]
    my_asn: u32,
    #[serde(rename = "peerASN")]
    peer_asn: Option<u32>,
    peer_address: Option<String>,
    source_address: Option<String>,
    peer_port: Option<u16>,
    hold_time: Option<String>,
    keepalive_time: Option<String>,
    #[serde(rename = "routerID")]
    router_id: Option<String>,
    #[serde(default)]
    node_selectors: Vec<LabelSelector>,
    password: Option<String>,
    bfd_profile: Option<String>,
    ebgp_multi_hop: Option<bool>,
}

impl From<V1beta1> for Spec {
    fn from(old: V1beta1) -> Self {
        Self {
            my_asn: old.my_asn,
            peer_asn: old.peer_asn,
            peer_address: old.peer_address,
            source_address: old.source_address,
            peer_port: old.peer_port,
            hold_time: old.hold_time,
            keepalive_time: old.keepalive_time,
            router_id: old.router_id,
            node_selectors: old.node_selectors,
            password: old.password,
            bfd_profile: old.bfd_profile,
            ebgp_multi_hop: old.ebgp_multi_hop,
            ..Self::default()
        }
    }
}

#[derive(Deserialize, Debug)]
struct SecretReference {
    #[serde(default)]
    name: String,
    namespace: Option<String>,
}

pub(super) fn convert(c: &mut Converter, object: &Object, v1beta1: bool) {
    let source = &object.source;
    let Some(spec) = read(c, object, v1beta1) else {
        c.dropped_peers.insert(source.name.clone());
        return;
    };
    let Some(peer_address) = address(c, source, &spec) else {
        c.dropped_peers.insert(source.name.clone());
        return;
    };
    let dynamic_asn = match spec.dynamic_asn.as_deref() {
        None | Some("") => None,
        Some("internal") => Some(DynamicAsn::Internal),
        Some("external") => Some(DynamicAsn::External),
        Some(other) => {
            c.essential(
                source,
                "spec.dynamicASN",
                json(other),
                "neither internal nor external: the peer is not carried over",
            );
            c.dropped_peers.insert(source.name.clone());
            return;
        }
    };
    if let Some(local) = spec.local_asn {
        c.essential(
            source,
            "spec.localASN",
            json(&local),
            format!(
                "FerroLB has no localASN: dropped, so the speakers present myASN {} to this router, which expects AS {local}; the session fails until the router is changed",
                spec.my_asn
            ),
        );
    }
    let name = c.peer_names.assign(&source.name);
    c.renamed(source, &name);
    let password_secret_ref = password(c, source, &spec, &name);
    let bfd_profile = spec.bfd_profile.as_deref().filter(|p| !p.is_empty()).and_then(|p| {
        let found = c.bfd_profiles.get(p).cloned();
        if found.is_none() {
            let message = format!(
                "no BFDProfile of this name in namespace {}: dropped, so the session runs without BFD",
                c.namespace
            );
            c.cosmetic(source, "spec.bfdProfile", json(p), message);
        }
        found
    });
    let router_id = spec.router_id.clone().filter(|id| {
        let ok = id.parse::<Ipv4Addr>().is_ok();
        if !ok {
            c.cosmetic(
                source,
                "spec.routerID",
                json(id),
                "not an IPv4 address, which a BGP router ID must be: dropped, so each speaker uses its node's IPv4 address",
            );
        }
        ok
    });
    if spec.disable_mp == Some(true) {
        c.cosmetic(
            source,
            "spec.disableMP",
            json(&true),
            "deprecated in MetalLB and not carried over: FerroLB always negotiates multiprotocol BGP and sends each family the router accepts",
        );
    }
    let hold_time = timer_field(c, source, "spec.holdTime", spec.hold_time.as_deref());
    let keepalive_time = timer_field(
        c,
        source,
        "spec.keepaliveTime",
        spec.keepalive_time.as_deref(),
    );
    let connect_time = timer_field(c, source, "spec.connectTime", spec.connect_time.as_deref());
    let family = peer_address.parse::<IpAddr>().ok().map(IpFamily::of);
    let path = format!("spec.bgpPeers[{}]", c.spec.bgp_peers.len());
    c.came_from(path, source);
    c.spec.bgp_peers.push(BgpPeer {
        name: name.clone(),
        my_asn: spec.my_asn,
        peer_asn: spec.peer_asn.filter(|asn| *asn != 0),
        dynamic_asn,
        peer_address,
        peer_port: spec.peer_port.filter(|p| *p != 0).unwrap_or(179),
        source_address: spec.source_address.clone().filter(|a| !a.is_empty()),
        router_id,
        hold_time,
        keepalive_time,
        connect_time,
        vrf: spec.vrf.clone().filter(|v| !v.is_empty()),
        password_secret_ref,
        ebgp_multi_hop: spec.ebgp_multi_hop.unwrap_or(false),
        bfd_profile,
        graceful_restart: spec.enable_graceful_restart.unwrap_or(false),
        node_selectors: spec.node_selectors,
    });
    c.peers.push(Peer {
        metallb: source.name.clone(),
        name,
        family,
        dual_stack: spec.dual_stack_address_family.unwrap_or(false),
        source: source.clone(),
    });
}

/// The spec as v1beta2, with unknown fields reported.
fn read(c: &mut Converter, object: &Object, v1beta1: bool) -> Option<Spec> {
    let source = &object.source;
    if !v1beta1 {
        return c.read_known::<Spec>(object);
    }
    let (spec, unknown) = c.read::<V1beta1>(object)?;
    let (pruned, unknown): (Vec<String>, Vec<String>) = unknown.into_iter().partition(|path| {
        let field = path.trim_start_matches("spec.");
        V1BETA2_ONLY
            .iter()
            .any(|f| field == *f || field.starts_with(&format!("{f}.")))
    });
    for path in pruned {
        c.cosmetic(
            source,
            &path,
            None,
            "not a field of metallb.io/v1beta1 BGPPeer: the API server drops it, so MetalLB never used it; not carried over (write the peer as metallb.io/v1beta2 if it was meant)",
        );
    }
    c.unknown_fields(source, &unknown);
    Some(spec.into())
}

/// The peer's address; `None` (an essential loss) when it has none FerroLB can dial.
fn address(c: &mut Converter, source: &Source, spec: &Spec) -> Option<String> {
    if let Some(interface) = spec.interface.as_deref().filter(|i| !i.is_empty()) {
        c.essential(
            source,
            "spec.interface",
            json(interface),
            "FerroLB's speaker does not peer by interface (unnumbered BGP over IPv6 link-local) yet: the peer is not carried over, so this router gets no routes; peer with an address instead",
        );
        return None;
    }
    match spec.peer_address.as_deref().filter(|a| !a.is_empty()) {
        Some(address) => Some(address.to_owned()),
        None => {
            c.essential(
                source,
                "spec.peerAddress",
                None,
                "missing: the peer is not carried over",
            );
            None
        }
    }
}

/// The Secret reference of the peer's TCP-MD5 password. Never shows the password itself.
fn password(c: &mut Converter, source: &Source, spec: &Spec, name: &str) -> Option<SecretKeyRef> {
    let operands = c.spec.namespace.clone();
    let inline = spec.password.as_deref().is_some_and(|p| !p.is_empty());
    if let Some(secret) = spec.password_secret.as_ref().filter(|s| !s.name.is_empty()) {
        if inline {
            c.cosmetic(
                source,
                "spec.password",
                None,
                "an inline password next to passwordSecret (which MetalLB refuses): the Secret is used, the inline password is not carried over",
            );
        }
        let from = secret
            .namespace
            .clone()
            .unwrap_or_else(|| c.namespace.clone());
        let secret_name = &secret.name;
        c.note(
            source,
            "spec.passwordSecret",
            json(&secret_name),
            format!(
                "FerroLB reads the Secret {secret_name:?} (key {PASSWORD_KEY}) from its own namespace {operands}: copy it there before FerroLB starts, e.g. kubectl create secret generic {secret_name} -n {operands} --from-literal={PASSWORD_KEY}=\"$(kubectl get secret {secret_name} -n {from} -o jsonpath='{{.data.{PASSWORD_KEY}}}' | base64 -d)\"; until it exists the sessions with this router stay down"
            ),
        );
        return Some(SecretKeyRef {
            name: secret_name.clone(),
            key: PASSWORD_KEY.to_owned(),
        });
    }
    if !inline {
        return None;
    }
    let secret_name = format!("{name}-bgp-password");
    c.essential(
        source,
        "spec.password",
        None,
        format!(
            "an inline password cannot be carried over: FerroLB takes TCP-MD5 passwords only from Secrets. Create the Secret {secret_name:?} in namespace {operands} with the password under key {PASSWORD_KEY} (kubectl create secret generic {secret_name} -n {operands} --from-literal={PASSWORD_KEY}=...); the converted peer already refers to it in passwordSecretRef. Until it exists the sessions with this router stay down"
        ),
    );
    Some(SecretKeyRef {
        name: secret_name,
        key: PASSWORD_KEY.to_owned(),
    })
}

/// A timer as FerroLB writes it.
fn timer_field(
    c: &mut Converter,
    source: &Source,
    field: &str,
    text: Option<&str>,
) -> Option<String> {
    let text = text.filter(|t| !t.is_empty())?;
    match timer(text) {
        Timer::Same(text) => Some(text),
        Timer::Rewritten {
            text: ours,
            truncated,
        } => {
            if truncated {
                c.cosmetic(
                    source,
                    field,
                    json(text),
                    format!(
                        "written as {ours}: FerroLB's BGP timers are whole seconds (MetalLB too drops the fraction of a hold time)"
                    ),
                );
            } else {
                c.note(source, field, json(text), format!("written as {ours}"));
            }
            Some(ours)
        }
        Timer::Invalid => {
            c.cosmetic(
                source,
                field,
                json(text),
                "not a duration: dropped, so FerroLB's default applies",
            );
            None
        }
    }
}

/// MetalLB announces a pool's IPv6 addresses to a peer over an IPv4 session (and the reverse)
/// only with `dualStackAddressFamily: true`; FerroLB offers both families on every session.
pub(super) fn check_families(c: &mut Converter) {
    let mut findings = Vec::new();
    for peer in c.peers.iter().filter(|p| !p.dual_stack) {
        let Some(own) = peer.family else { continue };
        let other = match own {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        };
        let mut pools = BTreeSet::new();
        for ad in &c.spec.bgp_advertisements {
            if !(ad.peers.is_empty() || ad.peers.contains(&peer.name)) {
                continue;
            }
            for pool in &c.pools {
                let selected = ad.address_pools.is_empty() || ad.address_pools.contains(&pool.name);
                if selected && pool.families.contains(&other) {
                    pools.insert(pool.name.clone());
                }
            }
        }
        if !pools.is_empty() {
            let pools: Vec<String> = pools.into_iter().collect();
            findings.push((
                peer.source.clone(),
                format!(
                    "FerroLB offers both address families on every session, as MetalLB does with dualStackAddressFamily: true: if the router accepts {other} on this {own} session, it learns the {other} routes of {} over it too",
                    pools.join(", ")
                ),
            ));
        }
    }
    for (source, message) in findings {
        c.cosmetic(
            &source,
            "spec.dualStackAddressFamily",
            json(&false),
            message,
        );
    }
}
