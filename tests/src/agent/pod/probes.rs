//! Readiness and liveness probes: `httpGet`, `tcpSocket` and `exec`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(super) fn period(p: &Probe) -> Duration {
    Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
}

fn resolve_port(port: &IntOrString, c: &Container) -> Option<i32> {
    match port {
        IntOrString::Int(i) => Some(*i),
        IntOrString::String(name) => c
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

/// Run one probe; true on success.
pub(super) async fn probe(p: &Probe, c: &Container, pod_ip: &str, netns: Option<&str>) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let fut = async {
        if let Some(h) = &p.http_get {
            let port = resolve_port(&h.port, c)?;
            let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let mut s = tokio::net::TcpStream::connect((host.as_str(), port as u16))
                .await
                .ok()?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await.ok()?;
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
            return Some((200..400).contains(&code));
        }
        if let Some(t) = &p.tcp_socket {
            let port = resolve_port(&t.port, c)?;
            let host = t.host.clone().unwrap_or_else(|| pod_ip.to_string());
            return Some(
                tokio::net::TcpStream::connect((host.as_str(), port as u16))
                    .await
                    .is_ok(),
            );
        }
        if let Some(e) = &p.exec {
            let cmd = e.command.clone().unwrap_or_default();
            let mut full: Vec<String> = Vec::new();
            if let Some(ns) = netns {
                full.extend([
                    "nsenter".to_string(),
                    format!("--net=/run/netns/{ns}"),
                    "--".into(),
                ]);
            }
            full.extend(cmd);
            let (prog, args) = full.split_first()?;
            let st = tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .ok()?;
            return Some(st.success());
        }
        Some(true)
    };
    matches!(tokio::time::timeout(timeout, fut).await, Ok(Some(true)))
}
