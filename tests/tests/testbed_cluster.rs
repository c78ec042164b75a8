//! The testbed's own tests, part 1: the cluster. The control plane and the nodes (Ready, Leases,
//! pod CIDRs, the node authorizer), and a second testbed beside the first that leaves nothing
//! behind. They need a running testbed (`make testbed-up`, or `make testbed-test` which brings
//! one up and down around them), so they are ignored by a plain `cargo test`.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use common::setup;
use ferrolb_testbed::harness::{Testbed, netns_exec, netns_sh, unique_name, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn nodes_are_ready_with_leases_and_pod_cidrs() -> anyhow::Result<()> {
    let (tb, client) = setup().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for (i, name) in tb.node_names.iter().enumerate() {
        let n = nodes.get(name).await?;
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("kubernetes.io/hostname"), Some(name));
        assert_eq!(
            labels.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let st = n.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .context("no Ready condition")?;
        assert_eq!(ready.status, "True", "{name} not Ready");
        let ips: Vec<String> = st
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
            .collect();
        assert!(ips.contains(&tb.node_ips[i]), "{name}: {ips:?}");
        assert!(
            ips.iter().any(|ip| ip.starts_with("2001:db8:")),
            "{name}: no IPv6 {ips:?}"
        );
        let cidr = n.spec.and_then(|s| s.pod_cidr).context("no podCIDR")?;
        assert!(cidr.starts_with("198.51.100."), "{cidr}");
        // the node's address is really configured in its network namespace
        let addrs = netns_sh(&tb.node_netns[i], &["ip", "-br", "addr", "show", "eth0"])?;
        assert!(addrs.contains(&tb.node_ips[i]), "{addrs}");
        // the Lease is renewed: its renewTime moves (the kubelet renews every 10 s)
        let r1 = leases.get(name).await?.spec.and_then(|s| s.renew_time);
        let r2 = wait_for(
            "the node Lease renewed",
            Duration::from_secs(20),
            || async {
                let r2 = leases.get(name).await?.spec.and_then(|s| s.renew_time);
                Ok((r2 != r1).then_some(r2))
            },
        )
        .await?;
        // the kubelet is a real node identity: NodeRestriction stops it from touching another node
        if tb.node_names.len() > 1 {
            let other = &tb.node_names[(i + 1) % tb.node_names.len()];
            let run = tb.var("TESTBED_RUN_DIR").context("TESTBED_RUN_DIR")?;
            let kc = format!("--kubeconfig={run}/{name}.kubeconfig");
            let kubectl = tb.kubectl.display().to_string();
            let own = netns_exec(
                &tb.node_netns[i],
                &[
                    &kubectl,
                    &kc,
                    "annotate",
                    "--overwrite",
                    "node",
                    name,
                    "testbed.ferrolb.io/probe=1",
                ],
            )?;
            assert!(
                own.status.success(),
                "{}",
                String::from_utf8_lossy(&own.stderr)
            );
            let theirs = netns_exec(
                &tb.node_netns[i],
                &[
                    &kubectl,
                    &kc,
                    "annotate",
                    "--overwrite",
                    "node",
                    other,
                    "testbed.ferrolb.io/probe=1",
                ],
            )?;
            let err = String::from_utf8_lossy(&theirs.stderr);
            assert!(
                !theirs.status.success() && err.contains("Forbidden"),
                "{err}"
            );
        }
        assert!(
            r1.is_some() && r1 != r2,
            "lease of {name} not renewed: {r1:?} {r2:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs testbed"]
async fn a_second_testbed_runs_beside_and_down_leaves_nothing() -> anyhow::Result<()> {
    let (tb, _client) = setup().await?;
    let state = std::env::temp_dir().join(unique_name("ftb-second"));
    let script = ferrolb_testbed::harness::repo_root().join("tests/testbed/testbed.sh");
    let run = |cmd: &str| {
        Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("TESTBED_STATE_DIR", &state)
            .env("TESTBED_NODES", "1")
            .output()
    };
    // what the kubelets would change machine-wide if the testbed let them
    let tunables = [
        "vm/overcommit_memory",
        "kernel/panic",
        "kernel/panic_on_oops",
    ];
    let sysctls = || -> Vec<String> {
        tunables
            .iter()
            .map(|t| std::fs::read_to_string(format!("/proc/sys/{t}")).unwrap_or_default())
            .collect()
    };
    let before = sysctls();
    let up = run("up")?;
    let second = Testbed::load(&state.join("env"));
    let second = match second {
        Ok(t) => t,
        Err(e) => {
            let _ = run("down");
            bail!(
                "second testbed: {e:#}\n{}",
                String::from_utf8_lossy(&up.stderr)
            );
        }
    };
    let sfx = second.var("TESTBED_RUN").unwrap_or_default().to_string();
    let run_dir = second
        .var("TESTBED_RUN_DIR")
        .unwrap_or_default()
        .to_string();
    assert_ne!(
        Some(sfx.as_str()),
        tb.var("TESTBED_RUN"),
        "unique run names"
    );
    // both answer at once, each its own cluster
    let c2 = second.client().await?;
    let n2: Api<Node> = Api::all(c2);
    assert_eq!(n2.list(&ListParams::default()).await?.items.len(), 1);
    let pids: Vec<u32> = std::fs::read_dir(format!("{run_dir}/pids"))?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
        .collect();
    assert!(pids.len() >= 8, "{pids:?}");
    let down = run("down")?;
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    // nothing of it is left: processes, namespaces, files; the first testbed still works
    for pid in &pids {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            st.is_empty() || st.contains("State:\tZ"),
            "process {pid} left: {st}"
        );
    }
    let netns = String::from_utf8(Command::new("ip").args(["netns", "list"]).output()?.stdout)?;
    assert!(!netns.contains(&format!("ftb-{sfx}-")), "{netns}");
    assert!(!std::path::Path::new(&run_dir).exists(), "{run_dir} left");
    assert_eq!(sysctls(), before, "{tunables:?} changed");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")?.flatten() {
        for cg in std::fs::read_dir(hierarchy.path())?.flatten() {
            let name = cg.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(&format!("ftb-{sfx}-")),
                "cgroup {name} left"
            );
        }
    }
    for path in [
        "/var/lib/kubelet",
        "/var/lib/cni",
        "/run/containerd",
        "/opt/containerd",
    ] {
        assert!(!std::path::Path::new(path).exists(), "{path} exists");
    }
    assert!(!state.join("env").exists());
    let _ = std::fs::remove_dir_all(&state);
    let c1 = tb.client().await?;
    let n1: Api<Node> = Api::all(c1);
    assert_eq!(
        n1.list(&ListParams::default()).await?.items.len(),
        tb.node_names.len()
    );
    Ok(())
}
