//! The testbed's own tests, part 3: the data path. The nodes' kube-proxy (nftables)
//! delivers traffic to a load-balancer IP routed by hand, for both traffic policies, over IPv4 and
//! IPv6 (dual-stack pods). They need a running testbed, so they are ignored by a plain `cargo test`.

mod common;

use common::{ClientRoute, T, curl, obj, ready_pods, setup};
use ferrolb_testbed::harness::{netns_sh, unique_name, wait_for};
use ferrolb_testbed::workloads::{create_deployment, echo_container_with_liveness, on_node};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

fn udp_ask(netns: &str, ip: &str, port: u16) -> anyhow::Result<String> {
    let script = format!("exec 3<>/dev/udp/{ip}/{port}; echo hi >&3; timeout 3 head -n1 <&3");
    netns_sh(netns, &["bash", "-c", &script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn loadbalancer_ip_routed_by_hand_answers_for_both_traffic_policies() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "svc").await?;
    let n = ns.name.clone();
    let (node1, node2) = (tb.node_names[0].clone(), tb.node_names[1].clone());
    let (ip1, ip2) = (tb.node_ips[0].clone(), tb.node_ips[1].clone());
    create_deployment(
        &client,
        &n,
        "backend",
        1,
        on_node(&node1, json!([echo_container_with_liveness(json!([]))])),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &n);
    let backend = ready_pods(&pods, "app=backend", 1).await?;
    let backend_name = backend[0].metadata.name.clone().unwrap_or_default();
    let svcs: Api<Service> = Api::namespaced(client.clone(), &n);
    // a unique LB IP per run of this test (203.0.113.0/24 only exists inside the testbed)
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb = format!("203.0.113.{last}");
    svcs.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "backend"},
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": "Cluster",
                "selector": {"app": "backend"},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    {"name": "udp", "port": 5353, "targetPort": 8080, "protocol": "UDP"}
                ]
            }
        }))?,
    )
    .await?;
    svcs.patch_status(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb}]}}})),
    )
    .await?;
    let url = format!("http://{lb}/");
    let cli = tb.client_netns.clone();

    // Cluster: the node without the backend forwards (and SNATs) to the pod on node-1
    {
        let _r = ClientRoute::set(&cli, &lb, &ip2)?;
        let out = wait_for("Cluster via node-2", T, || async {
            match curl(&cli, &url) {
                Ok(o) if o.contains("pod=") => Ok(Some(o)),
                other => {
                    eprintln!("Cluster via node-2: not yet: {other:?}");
                    Ok(None)
                }
            }
        })
        .await?;
        assert!(out.contains(&format!("pod={backend_name} ")), "{out}");
        assert!(out.contains(&format!("node={node1} ")), "{out}");
        assert!(
            out.contains(&format!("client={ip2}")),
            "Cluster SNATs to the node: {out}"
        );
        let u = udp_ask(&cli, &lb, 5353)?;
        assert!(u.contains(&format!("pod={backend_name} ")), "udp: {u}");
    }
    // Local: node-1 (has the endpoint) answers and keeps the client IP; node-2 drops
    svcs.patch(
        "backend",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"externalTrafficPolicy": "Local"}})),
    )
    .await?;
    {
        let _r = ClientRoute::set(&cli, &lb, &ip2)?;
        wait_for("Local via node-2 stops answering", T, || async {
            Ok(curl(&cli, &url).is_err().then_some(()))
        })
        .await?;
    }
    {
        let _r = ClientRoute::set(&cli, &lb, &ip1)?;
        let out = wait_for("Local via node-1", T, || async {
            Ok(curl(&cli, &url).ok().filter(|o| o.contains("pod=")))
        })
        .await?;
        assert!(out.contains(&format!("pod={backend_name} ")), "{out}");
        let client_ip = tb.var("TESTBED_CLIENT_IP").unwrap_or("198.51.100.100");
        assert!(
            out.contains(&format!("client={client_ip}")),
            "Local keeps the client IP: {out}"
        );
    }
    let _ = node2;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn dual_stack_pods_and_an_ipv6_loadbalancer_ip() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    anyhow::ensure!(tb.node_names.len() >= 2, "needs two nodes");
    let ns = tb.namespace(&client, "v6").await?;
    create_deployment(
        &client,
        &ns.name,
        "web6",
        1,
        on_node(
            &tb.node_names[0],
            json!([echo_container_with_liveness(json!([]))]),
        ),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let p = ready_pods(&pods, "app=web6", 1).await?;
    let name = p[0].metadata.name.clone().unwrap_or_default();
    let ips: Vec<String> = p[0]
        .status
        .as_ref()
        .and_then(|s| s.pod_ips.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip)
        .collect();
    assert_eq!(ips.len(), 2, "dual-stack pod IPs: {ips:?}");
    let v6 = ips[1].clone();
    assert!(v6.starts_with("2001:db8:100:1"), "{ips:?}");
    let out = curl(&tb.client_netns, &format!("http://[{v6}]:8080/"))?;
    assert!(out.contains(&format!("pod={name} ")), "{out}");
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    svcs.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "web6"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster",
                     "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"],
                     "selector": {"app": "web6"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?,
    )
    .await?;
    let last = 10 + (u32::from_str_radix(&unique_name("x")[2..], 16).unwrap_or(0) % 200);
    let lb6 = format!("2001:db8:1b::{last:x}");
    svcs.patch_status(
        "web6",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": lb6}]}}})),
    )
    .await?;
    // via node-2 (Cluster): SNAT to node-2's IPv6 address
    let via = tb
        .var("TESTBED_NODE_IPS")
        .map(|_| "2001:db8:100::12")
        .unwrap_or_default();
    let _r = ClientRoute::set(&tb.client_netns, &lb6, via)?;
    let url = format!("http://[{lb6}]/");
    let out = wait_for("IPv6 LB IP answers", T, || async {
        Ok(curl(&tb.client_netns, &url)
            .ok()
            .filter(|o| o.contains("pod=")))
    })
    .await?;
    assert!(out.contains(&format!("pod={name} ")), "{out}");
    assert!(out.contains(&format!("client={via}")), "{out}");
    Ok(())
}
