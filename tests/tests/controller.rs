//! The controller on the testbed: deployed from `config/` as real pods with their own
//! ServiceAccount (so its RBAC is proved), against a real API server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferrolb_testbed::harness::{Testbed, ingress_ips, pod_pid, replace_lb_config, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const SYSTEM: &str = ferrolb_testbed::ferrolb::SYSTEM;

use ferrolb_testbed::ferrolb::{controller_leader as leader, install, without_webhook};

fn lb_service(name: &str, annotations: Value, ports: Value) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": ports},
    }))?)
}

fn http() -> Value {
    json!([{"name": "http", "port": 80, "protocol": "TCP"}])
}

fn condition(svc: &Service) -> Option<(String, String, String)> {
    svc.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ferrolb.io/IPAllocated")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_ips(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    wait_for(&format!("an IP for {name}"), T, || async {
        let svc = api.get(name).await?;
        let ips = ingress_ips(&svc);
        Ok((!ips.is_empty()).then_some(ips))
    })
    .await
}

async fn wait_condition(
    api: &Api<Service>,
    name: &str,
    status: &str,
) -> anyhow::Result<(String, String, String)> {
    wait_for(&format!("condition {status} on {name}"), T, || async {
        let svc = api.get(name).await?;
        Ok(condition(&svc).filter(|c| c.0 == status))
    })
    .await
}

async fn events_for(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn services_get_ips_by_every_selection_rule() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let tenant = tb.namespace(&client, "tenant").await?;
    let other = tb.namespace(&client, "other").await?;
    replace_lb_config(
        &client,
        json!({
            "addressPools": [
                {"name": "general", "addresses": ["203.0.113.0/29"]},
                {"name": "b-general", "addresses": ["203.0.113.8/29"]},
                {"name": "tenant", "addresses": ["203.0.113.16/29"],
                 "allocateTo": {"priority": 1, "namespaces": [tenant.name]}},
                {"name": "manual", "addresses": ["203.0.113.24/29"], "autoAssign": false},
            ],
        }),
    )
    .await?;
    let in_tenant: Api<Service> = Api::namespaced(client.clone(), &tenant.name);
    let in_other: Api<Service> = Api::namespaced(client.clone(), &other.name);
    let pp = PostParams::default();

    // Unpinned pools by name: b-general sorts before general.
    in_other
        .create(&pp, &lb_service("plain", json!({}), http())?)
        .await?;
    assert_eq!(wait_ips(&in_other, "plain").await?, ["203.0.113.8"]);
    // The pool annotation comes in the same write as the addresses.
    let plain = in_other.get("plain").await?;
    assert_eq!(
        plain
            .annotations()
            .get("ferrolb.io/ip-allocated-from-pool")
            .map(String::as_str),
        Some("b-general")
    );
    assert_eq!(
        condition(&plain),
        Some((
            "True".into(),
            "IPAllocated".into(),
            "203.0.113.8 from pool b-general".into()
        ))
    );
    // A namespace-pinned pool wins for its namespace.
    in_tenant
        .create(&pp, &lb_service("pinned", json!({}), http())?)
        .await?;
    assert_eq!(wait_ips(&in_tenant, "pinned").await?, ["203.0.113.16"]);
    // The pool annotation reaches a pool without autoAssign.
    in_other
        .create(
            &pp,
            &lb_service(
                "manual",
                json!({"ferrolb.io/address-pool": "manual"}),
                http(),
            )?,
        )
        .await?;
    assert_eq!(wait_ips(&in_other, "manual").await?, ["203.0.113.24"]);
    // A requested IP, with MetalLB's annotation.
    in_other
        .create(
            &pp,
            &lb_service(
                "asked",
                json!({"metallb.io/loadBalancerIPs": "203.0.113.5"}),
                http(),
            )?,
        )
        .await?;
    assert_eq!(wait_ips(&in_other, "asked").await?, ["203.0.113.5"]);
    // A requested IP outside every pool: a precise failure, as condition and Event.
    in_other
        .create(
            &pp,
            &lb_service(
                "outside",
                json!({"ferrolb.io/load-balancer-ips": "198.51.100.99"}),
                http(),
            )?,
        )
        .await?;
    let (_, reason, message) = wait_condition(&in_other, "outside", "False").await?;
    assert_eq!(reason, "RequestedIPNotInPool");
    assert_eq!(
        message,
        "requested IP 198.51.100.99 is not in any address pool"
    );
    let events = wait_for("an AllocationFailed event", T, || async {
        let ev = events_for(&client, &other.name, "outside").await?;
        Ok(ev
            .iter()
            .any(|(r, _)| r == "AllocationFailed")
            .then_some(ev))
    })
    .await?;
    assert!(
        events
            .iter()
            .any(|(_, note)| note.contains("198.51.100.99")),
        "{events:?}"
    );
    // The tenant pool refuses other namespaces even by annotation.
    in_other
        .create(
            &pp,
            &lb_service(
                "sneaky",
                json!({"ferrolb.io/address-pool": "tenant"}),
                http(),
            )?,
        )
        .await?;
    let (_, reason, _) = wait_condition(&in_other, "sneaky", "False").await?;
    assert_eq!(reason, "NamespaceNotAllowed");
    // A Service of another loadBalancerClass is left alone.
    let mut foreign = lb_service("foreign", json!({}), http())?;
    if let Some(spec) = foreign.spec.as_mut() {
        spec.load_balancer_class = Some("example.com/other".into());
    }
    in_other.create(&pp, &foreign).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ingress_ips(&in_other.get("foreign").await?).is_empty());
    assert!(condition(&in_other.get("foreign").await?).is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn sharing_exhaustion_recovery_and_rehoming() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let ns = tb.namespace(&client, "share").await?;
    replace_lb_config(
        &client,
        json!({"addressPools": [
            {"name": "small", "addresses": ["203.0.113.40-203.0.113.41"]},
            {"name": "spare", "addresses": ["203.0.113.48/30"], "autoAssign": false},
        ]}),
    )
    .await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    let dns = |name: &str, proto: &str| {
        lb_service(
            name,
            json!({"ferrolb.io/allow-shared-ip": "dns"}),
            json!([{"name": "dns", "port": 53, "protocol": proto}]),
        )
    };
    api.create(&pp, &dns("dns-tcp", "TCP")?).await?;
    api.create(&pp, &dns("dns-udp", "UDP")?).await?;
    let a = wait_ips(&api, "dns-tcp").await?;
    assert_eq!(wait_ips(&api, "dns-udp").await?, a, "sharers share one IP");
    // The second address goes to a plain Service; the pool is then full.
    api.create(&pp, &lb_service("web", json!({}), http())?)
        .await?;
    let web = wait_ips(&api, "web").await?;
    assert_ne!(web, a);
    api.create(&pp, &lb_service("late", json!({}), http())?)
        .await?;
    let (_, reason, message) = wait_condition(&api, "late", "False").await?;
    assert_eq!(reason, "PoolFull");
    assert_eq!(message, "no free IPv4 address in address pool(s) small");
    // Freeing an address serves the waiting Service.
    api.delete("web", &DeleteParams::default()).await?;
    assert_eq!(wait_ips(&api, "late").await?, web);

    // A changed request that cannot be met is refused, and the Service keeps what it has.
    let mut late = api.get("late").await?;
    late.metadata.managed_fields = None;
    late.metadata.annotations.get_or_insert_default().insert(
        "ferrolb.io/load-balancer-ips".into(),
        "198.51.100.77".into(),
    );
    api.replace("late", &PostParams::default(), &late).await?;
    let (_, reason, message) = wait_condition(&api, "late", "False").await?;
    assert_eq!(reason, "RequestedIPNotInPool");
    assert_eq!(
        message,
        "requested IP 198.51.100.77 is not in any address pool; the Service keeps its current addresses"
    );
    assert_eq!(ingress_ips(&api.get("late").await?), web);
    let mut late = api.get("late").await?;
    late.metadata.managed_fields = None;
    if let Some(a) = late.metadata.annotations.as_mut() {
        a.remove("ferrolb.io/load-balancer-ips");
    }
    api.replace("late", &PostParams::default(), &late).await?;
    wait_condition(&api, "late", "True").await?;
    assert_eq!(ingress_ips(&api.get("late").await?), web);

    // An invalid config is refused by the webhook; one that slips in while no webhook runs is
    // ignored: the last valid one stays and nothing moves.
    let invalid = json!({"addressPools": [{"name": "small", "addresses": ["203.0.113.40/33"]}]});
    let refused = replace_lb_config(&client, invalid.clone()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("denied the request")),
        "{refused:?}"
    );
    let unchecked = without_webhook(&tb, &client).await?;
    replace_lb_config(&client, invalid).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ingress_ips(&api.get("late").await?), web);
    unchecked.restore(&client).await?;

    // Removing the pool re-homes its Services into what remains (made auto-assign now).
    replace_lb_config(
        &client,
        json!({"addressPools": [{"name": "spare", "addresses": ["203.0.113.48/30"]}]}),
    )
    .await?;
    for name in ["dns-tcp", "dns-udp", "late"] {
        wait_for(&format!("{name} re-homed"), T, || async {
            let svc = api.get(name).await?;
            let in_spare = |ip: &String| {
                ip.parse::<std::net::Ipv4Addr>().is_ok_and(|a| {
                    a.octets()[..3] == [203, 0, 113] && (48..=51).contains(&a.octets()[3])
                })
            };
            Ok(ingress_ips(&svc)
                .first()
                .filter(|ip| in_spare(ip))
                .map(|_| ()))
        })
        .await?;
    }
    assert_eq!(
        ingress_ips(&api.get("dns-tcp").await?),
        ingress_ips(&api.get("dns-udp").await?),
        "sharers stay together when re-homed"
    );

    // No pools at all never wipes assigned IPs.
    let before = ingress_ips(&api.get("late").await?);
    replace_lb_config(&client, json!({"addressPools": []})).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ingress_ips(&api.get("late").await?), before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn sigkill_during_churn_never_duplicates_leaks_or_moves_an_ip() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let ns = tb.namespace(&client, "churn").await?;
    replace_lb_config(
        &client,
        json!({"addressPools": [{"name": "churn", "addresses": ["203.0.113.0/24"]}]}),
    )
    .await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);

    // Killer: SIGKILL the leader's process every 2 s while the churn runs.
    let killer_client = client.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_k = stop.clone();
    let killer = tokio::spawn(async move {
        let mut kills = 0u32;
        while !stop_k.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let Ok(holder) = leader(&killer_client).await else {
                continue;
            };
            let Ok(pod) = pods.get(&holder).await else {
                continue;
            };
            if let Some(pid) = pod_pid(&pod) {
                // The pod status may still name a process that already died; count real kills.
                let killed = std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                kills += u32::from(killed);
            }
        }
        kills
    });

    // Churn: 500 operations, creations and deletions mixed; record every IP each Service shows.
    let pp = PostParams::default();
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut first_ip: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..500u32 {
        if i % 3 == 2 && !live.is_empty() {
            let victim = live
                .iter()
                .nth((i as usize * 7) % live.len())
                .cloned()
                .unwrap_or_default();
            api.delete(&victim, &DeleteParams::default()).await?;
            live.remove(&victim);
        } else {
            let name = format!("s{i:03}");
            api.create(&pp, &lb_service(&name, json!({}), http())?)
                .await?;
            live.insert(name);
        }
        if i % 50 == 49 {
            for svc in api.list(&ListParams::default()).await?.items {
                let ips = ingress_ips(&svc);
                if !ips.is_empty() {
                    let seen = first_ip
                        .entry(svc.name_any())
                        .or_insert_with(|| ips.clone());
                    assert_eq!(*seen, ips, "{} changed IP", svc.name_any());
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await?;
    assert!(
        kills >= 2,
        "the churn should have seen several SIGKILLs, saw {kills}"
    );

    // Everything live gets an IP; no IP twice; none changed.
    let final_ips = wait_for(
        "every live Service with an IP",
        Duration::from_secs(120),
        || async {
            let list = api.list(&ListParams::default()).await?.items;
            let all = list.len() == live.len() && list.iter().all(|s| !ingress_ips(s).is_empty());
            Ok(all.then(|| {
                list.iter()
                    .map(|s| (s.name_any(), ingress_ips(s)))
                    .collect::<BTreeMap<String, Vec<String>>>()
            }))
        },
    )
    .await?;
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, ips) in &final_ips {
        for ip in ips {
            if let Some(other) = owners.insert(ip, name) {
                bail!("{ip} is held by both {other} and {name}");
            }
        }
        if let Some(seen) = first_ip.get(name) {
            assert_eq!(seen, ips, "{name} changed IP across restarts");
        }
    }
    // No leak: the pool counts exactly the live Services.
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    let live_count = final_ips.len().to_string();
    wait_for("pool usage equal to the live Services", T, || async {
        let config = configs.get("ferrolb").await?;
        let assigned = config
            .status
            .and_then(|s| s.pools.into_iter().find(|p| p.name == "churn"))
            .and_then(|p| p.ipv4)
            .map(|u| u.assigned);
        Ok((assigned.as_deref() == Some(live_count.as_str())).then_some(()))
    })
    .await?;
    eprintln!(
        "churn: 500 operations in {:.1?} with {kills} SIGKILLs of the leader; {} live Services, no duplicate, none moved",
        started.elapsed(),
        final_ips.len()
    );
    // Deleting everything returns every address.
    for name in &live {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_for("pool usage back to zero", T, || async {
        let config = configs.get("ferrolb").await?;
        let assigned = config
            .status
            .and_then(|s| s.pools.into_iter().find(|p| p.name == "churn"))
            .and_then(|p| p.ipv4)
            .map(|u| u.assigned);
        Ok((assigned.as_deref() == Some("0")).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn dual_stack_services_get_one_address_per_family_from_one_pool() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let _installed = install(&tb, &client).await?;
    let ns = tb.namespace(&client, "dual").await?;
    replace_lb_config(
        &client,
        json!({"addressPools": [
            {"name": "a-v4only", "addresses": ["203.0.113.64/30"]},
            {"name": "b-v6only", "addresses": ["2001:db8:ff:1::/126"]},
            {"name": "c-dual", "addresses": ["203.0.113.72/30", "2001:db8:ff:2::/126"]},
        ]}),
    )
    .await?;
    let api: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let family_service = |name: &str, policy: &str, families: Value| -> anyhow::Result<Service> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": http(),
                     "ipFamilyPolicy": policy, "ipFamilies": families},
        }))?)
    };
    let pp = PostParams::default();
    api.create(
        &pp,
        &family_service("require", "RequireDualStack", json!(["IPv6", "IPv4"]))?,
    )
    .await?;
    assert_eq!(
        wait_ips(&api, "require").await?,
        ["2001:db8:ff:2::", "203.0.113.72"],
        "both families from the one dual pool, primary family first"
    );
    api.create(
        &pp,
        &family_service("prefer", "PreferDualStack", json!(["IPv4", "IPv6"]))?,
    )
    .await?;
    assert_eq!(
        wait_ips(&api, "prefer").await?,
        ["203.0.113.73", "2001:db8:ff:2::1"]
    );
    api.create(
        &pp,
        &family_service("single6", "SingleStack", json!(["IPv6"]))?,
    )
    .await?;
    assert_eq!(wait_ips(&api, "single6").await?, ["2001:db8:ff:1::"]);
    let mut wrong = family_service("wrong", "SingleStack", json!(["IPv4"]))?;
    wrong.metadata.annotations.get_or_insert_default().insert(
        "ferrolb.io/load-balancer-ips".into(),
        "2001:db8:ff:1::2".into(),
    );
    api.create(&pp, &wrong).await?;
    let (_, reason, message) = wait_condition(&api, "wrong", "False").await?;
    assert_eq!(reason, "FamilyMismatch");
    assert_eq!(
        message,
        "IP family mismatch: 2001:db8:ff:1::2 is IPv6 but the Service is single-stack IPv4"
    );
    // Pool usage counts each family apart.
    let configs: Api<ferrolb_api::LoadBalancerConfig> = Api::all(client.clone());
    wait_for("dual pool usage", T, || async {
        let status = configs.get("ferrolb").await?.status.unwrap_or_default();
        let dual = status.pools.into_iter().find(|p| p.name == "c-dual");
        Ok(dual
            .filter(|p| {
                p.ipv4
                    .as_ref()
                    .is_some_and(|u| u.assigned == "2" && u.total == "4")
                    && p.ipv6
                        .as_ref()
                        .is_some_and(|u| u.assigned == "2" && u.total == "4")
            })
            .map(|_| ()))
    })
    .await?;
    Ok(())
}
