//! The pod's network: its namespace, veth, addresses and routes (and their removal).

use std::net::Ipv4Addr;

use anyhow::{Context, anyhow};

use super::PodRun;
use crate::agent::sh;

impl PodRun {
    pub(super) async fn setup_network(&mut self) -> anyhow::Result<()> {
        let ip = {
            let cidr = *self.ctx.pod_cidr.lock().await;
            let (base, len) = cidr.ok_or_else(|| anyhow!("node has no pod CIDR yet"))?;
            let size = 1u32 << (32 - u32::from(len));
            let mut used = self.ctx.used_ips.lock().await;
            let base = u32::from(base);
            let ip = (1..size.saturating_sub(1))
                .map(|i| Ipv4Addr::from(base + i))
                .find(|ip| !used.contains(ip))
                .ok_or_else(|| anyhow!("pod CIDR exhausted"))?;
            used.push(ip);
            ip
        };
        self.ip = Some(ip);
        // IPv6: the same host index in the node's IPv6 pod CIDR
        if let (Some((b6, _)), Some((b4, _))) = (
            *self.ctx.pod_cidr6.lock().await,
            *self.ctx.pod_cidr.lock().await,
        ) {
            let idx = u32::from(ip) - u32::from(b4);
            self.ip6 = Some(std::net::Ipv6Addr::from(u128::from(b6) + u128::from(idx)));
        }
        let short: String = self.uid.chars().filter(|c| *c != '-').take(8).collect();
        let ns = format!("{}-p{short}", self.ctx.args.netns_prefix);
        // "veth" + 8 hex digits, like the CNI bridge plugin's host-side names (and the speaker's
        // default exclusion list)
        let veth = format!("veth{short}");
        self.netns = Some(ns.clone());
        let ips = format!("{ip}/32");
        sh("ip", &["netns", "add", &ns]).await?;
        sh(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )
        .await?;
        for (k, v) in [("proxy_arp", "1"), ("rp_filter", "0")] {
            std::fs::write(format!("/proc/sys/net/ipv4/conf/{veth}/{k}"), v)
                .with_context(|| format!("sysctl {veth} {k}"))?;
        }
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/neigh/{veth}/proxy_delay"), "0");
        // the pod's gateway: 169.254.1.1 on the host side of every pod veth (link scope)
        sh(
            "ip",
            &[
                "addr",
                "add",
                "169.254.1.1/32",
                "dev",
                &veth,
                "scope",
                "link",
            ],
        )
        .await?;
        sh("ip", &["link", "set", &veth, "up"]).await?;
        sh("ip", &["route", "replace", &ips, "dev", &veth]).await?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"]).await?;
        sh("ip", &["-n", &ns, "addr", "add", &ips, "dev", "eth0"]).await?;
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"]).await?;
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        )
        .await?;
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        )
        .await?;
        if let Some(ip6) = self.ip6 {
            let ips6 = format!("{ip6}/128");
            let ip6s = ip6.to_string();
            sh("ip", &["addr", "add", "fe80::1/64", "dev", &veth, "nodad"]).await?;
            sh("ip", &["-6", "route", "replace", &ips6, "dev", &veth]).await?;
            sh(
                "ip",
                &["-6", "neigh", "replace", "proxy", &ip6s, "dev", "eth0"],
            )
            .await?;
            sh(
                "ip",
                &["-n", &ns, "addr", "add", &ips6, "dev", "eth0", "nodad"],
            )
            .await?;
            sh(
                "ip",
                &[
                    "-n", &ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
                ],
            )
            .await?;
        }
        tracing::info!(pod = %self.name, %ip, netns = %ns, "pod network ready");
        Ok(())
    }

    pub(super) async fn teardown(&mut self) {
        if let Some(ns) = self.netns.take()
            && let Err(e) = sh("ip", &["netns", "del", &ns]).await
        {
            tracing::warn!(error = %e, "deleting pod netns");
        }
        if let Some(ip6) = self.ip6.take() {
            let ip6s = ip6.to_string();
            let _ = sh("ip", &["-6", "neigh", "del", "proxy", &ip6s, "dev", "eth0"]).await;
        }
        if let Some(ip) = self.ip.take() {
            let ips = format!("{ip}/32");
            let _ = sh("ip", &["route", "del", &ips]).await;
            self.ctx.used_ips.lock().await.retain(|x| *x != ip);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
