//! The API server going away for 60 s (its process stopped with SIGSTOP: connections hang, as
//! behind a partition) changes nothing that runs: throughout the outage the address keeps being
//! answered for, over ARP and TCP, by the nodes that answered before, and no Service address
//! moves. The leaders of the operator and the controller cannot renew their Leases, stop, and are
//! restarted; once the API server is back the operator catches up: a config change made then
//! reaches the pods, and the config is Available again.
//!
//! Right after the API server comes back, Kubernetes itself may cut traffic for a few seconds:
//! kube-controller-manager saw no node heartbeat for longer than its grace period (40 s on the
//! testbed, 50 s by default), marks every node and pod NotReady until the kubelets report again,
//! and endpoints go with the pods (kube-proxy stops sending to them, speakers stop announcing
//! addresses without ready endpoints). That is printed, not held against FerroLB; answers must be
//! back by the end.

use std::time::Duration;

use anyhow::ensure;
use ferrolb_testbed::ferrolb::{SYSTEM, install_with, wait_available};
use ferrolb_testbed::harness::{
    ArpProbe, ClientProbes, Frozen, Testbed, gap_within, ingress_ips, replace_lb_config, wait_for,
};
use ferrolb_testbed::workloads::echo_behind_load_balancer;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn sixty_seconds_without_the_api_server_change_nothing_that_runs() -> anyhow::Result<()> {
    let tb = Testbed::start_or_reuse()?;
    let client = tb.client().await?;
    let spec = json!({
        "addressPools": [{"name": "l2", "addresses": ["203.0.113.64/27"]}],
        "l2Advertisements": [{"name": "l2", "addressPools": ["l2"]}],
    });
    let _installed = install_with(&tb, &client, spec.clone()).await?;
    let ns = tb.namespace(&client, "outage").await?;
    let ip = echo_behind_load_balancer(&client, &ns.name, "web", 3).await?;
    tb.wait_answers(&ip).await?;
    // Who answers ARP before the outage.
    let before = ArpProbe::start(&tb.client_netns, &ip, Duration::from_millis(50))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let announcers = before.stop().macs;
    ensure!(!announcers.is_empty(), "nobody answers ARP for {ip}");

    let pid = tb.process_pid("kube-apiserver")?;
    let probes = ClientProbes::start(&tb, &ip)?;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (stopped, resumed) = {
        let _frozen = Frozen::new(pid)?;
        let stopped = t0.elapsed();
        eprintln!("kube-apiserver stopped for {OUTAGE:?}");
        tokio::time::sleep(OUTAGE).await;
        (stopped, t0.elapsed())
    };
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let back = wait_for("the API server to answer again", T, || async {
        Ok(Some(ingress_ips(&services.get("web").await?)))
    })
    .await?;
    // Long enough for Kubernetes' own NotReady blip (above) to pass.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let end = t0.elapsed();
    let (report, arp) = probes.stop();
    let answered: Vec<Duration> = report
        .samples
        .iter()
        .filter(|s| s["ok"].as_bool() == Some(true))
        .filter_map(|s| s["t_ms"].as_u64())
        .map(Duration::from_millis)
        .collect();
    let (tcp_outage, arp_outage) = (
        gap_within(&answered, stopped, resumed),
        gap_within(&arp.times(), stopped, resumed),
    );
    eprintln!(
        "during the outage: longest TCP gap {tcp_outage:?}, longest without an ARP reply {arp_outage:?}; \
         over the whole run ({} TCP probes, {} failed): {:?} and {:?}; ARP replies from {:?} (before: {:?})",
        report.samples.len(),
        report.failures,
        report.max_gap,
        arp.max_gap,
        arp.macs,
        announcers,
    );
    ensure!(
        back == [ip.clone()],
        "the Service's address moved: {back:?}"
    );
    ensure!(
        arp_outage < Duration::from_secs(1),
        "nobody answered ARP for {ip} for {arp_outage:?} during the outage"
    );
    ensure!(
        tcp_outage < Duration::from_secs(1),
        "a client gap of {tcp_outage:?} during the outage"
    );
    let during = arp.macs_within(stopped, resumed);
    ensure!(
        during.iter().all(|mac| announcers.contains_key(mac)),
        "another node answered for {ip} during the outage: {during:?}, before {announcers:?}"
    );
    let tail = end.saturating_sub(Duration::from_secs(3));
    ensure!(
        gap_within(&answered, tail, end) < Duration::from_secs(1)
            && gap_within(&arp.times(), tail, end) < Duration::from_secs(1),
        "answers did not come back after the outage"
    );

    // The operator catches up: a change made now reaches every speaker.
    let mut debug = spec.clone();
    debug["logLevel"] = json!("debug");
    replace_lb_config(&client, debug).await?;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), SYSTEM);
    wait_for("the speakers to run with logLevel debug", T, || async {
        let ds = daemonsets.get("ferrolb-speaker").await?;
        let env = ds
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        Ok(env
            .iter()
            .any(|e| e.name == "FERROLB_LOG_LEVEL" && e.value.as_deref() == Some("debug"))
            .then_some(()))
    })
    .await?;
    wait_available(&client).await?;
    ensure!(
        ingress_ips(&services.get("web").await?) == [ip.clone()],
        "the Service's address moved after the outage"
    );
    Ok(())
}
