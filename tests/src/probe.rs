//! `ferrolb-testbed probe`: continuous HTTP probes of one address, one JSON line per probe, to
//! measure failover as the gap in a client's answers. Run it inside the client namespace
//! (`ip netns exec`); [`crate::harness::Probe`] does that and summarises the result.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Arguments of `ferrolb-testbed probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Target address (HTTP), e.g. 203.0.113.10:80.
    #[arg(long)]
    pub target: SocketAddr,
    /// Time between the start of two probes.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Timeout of one probe (connect + answer).
    #[arg(long, default_value_t = 300)]
    pub timeout_ms: u64,
}

async fn once(target: SocketAddr) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    if text.starts_with("HTTP/1.1 200") {
        Ok(body)
    } else {
        Err(text.lines().next().unwrap_or("empty answer").to_string())
    }
}

/// Probe until killed, printing `{"t_ms":…,"ok":…,"body"|"error":…}` lines, where `t_ms` is
/// when the probe started. Probes start every interval whether or not earlier ones have answered
/// (each on its own connection, with its own timeout), so a gap in the answers is measured to the
/// interval, not to the timeout; lines may therefore come out of order.
pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (lines, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let writer = tokio::spawn(async move {
        use std::io::Write as _;
        let mut out = std::io::stdout();
        while let Some(line) = rx.recv().await {
            if out.write_all(format!("{line}\n").as_bytes()).is_err() || out.flush().is_err() {
                break;
            }
        }
    });
    loop {
        tick.tick().await;
        if writer.is_finished() {
            return Ok(());
        }
        let t = start.elapsed().as_millis();
        let lines = lines.clone();
        let (target, timeout) = (args.target, Duration::from_millis(args.timeout_ms));
        tokio::spawn(async move {
            let line = match tokio::time::timeout(timeout, once(target)).await {
                Ok(Ok(body)) => serde_json::json!({"t_ms": t, "ok": true, "body": body}),
                Ok(Err(e)) => serde_json::json!({"t_ms": t, "ok": false, "error": e}),
                Err(_) => serde_json::json!({"t_ms": t, "ok": false, "error": "timeout"}),
            };
            let _ = lines.send(line);
        });
    }
}
