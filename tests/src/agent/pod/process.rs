//! Container processes: starting them (init containers first), watching them exit, restarts
//! with back-off, the probes' verdicts, stopping them with a grace period.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use super::probes::{period, probe};
use super::program::shell_quote;
use super::{Ctr, PodRun};
use crate::agent::now;

pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn starttime(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(19).map(str::to_string)
        })
        .unwrap_or_default()
}

async fn stop_child(c: &mut Ctr, grace: i64) {
    let Some(ch) = c.child.as_mut() else { return };
    if let Some(pid) = ch.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let waited = tokio::time::timeout(Duration::from_secs(grace.max(0) as u64), ch.wait()).await;
    if waited.is_err() {
        let _ = ch.start_kill();
    }
    // the exit is reaped (and the restart decided) by the next step()
}

impl PodRun {
    /// Run the init containers one after the other; true once all completed.
    pub(super) async fn step_init(&mut self) -> bool {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        while self.init_done < self.inits.len() {
            let i = self.init_done;
            let exited = match self.inits[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some(st.code().unwrap_or(137)),
                _ => None,
            };
            if let Some(code) = exited {
                let log_tail = self.log_tail(&self.inits[i].spec.name);
                let c = &mut self.inits[i];
                let _ = std::fs::remove_file(self.dir.join(format!("{}.pid", c.spec.name)));
                let term = json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": log_tail,
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": format!("ferrolb-testbed://{}", c.pid.unwrap_or(0)),
                }});
                c.child = None;
                c.last_exit = Some(code);
                if code == 0 {
                    c.state = term;
                    c.done = true;
                    self.init_done += 1;
                    continue;
                }
                if policy == "Never" {
                    c.state = term;
                    c.done = true;
                    self.failed = Some((
                        "InitContainerFailed".into(),
                        format!("init container {} exited with {code}", c.spec.name),
                    ));
                    return false;
                }
                c.next_start = Instant::now() + c.backoff;
                c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                    "message": format!("back-off {}s restarting failed init container", c.backoff.as_secs())}});
                c.last_state = term;
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
            }
            let c = &self.inits[i];
            if c.child.is_none() && Instant::now() >= c.next_start {
                let was_started = c.ever_started;
                // spawn() works on self.ctrs: lend it the init containers
                std::mem::swap(&mut self.ctrs, &mut self.inits);
                let r = self.spawn(i);
                std::mem::swap(&mut self.ctrs, &mut self.inits);
                match r {
                    Ok(()) if was_started => self.inits[i].restarts += 1,
                    Ok(()) => {}
                    Err(e) => {
                        let c = &mut self.inits[i];
                        c.state = json!({"waiting": {"reason": "RunContainerError", "message": format!("{e:#}")}});
                        c.next_start = Instant::now() + c.backoff;
                        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            return false;
        }
        true
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let netns = self.netns.clone();
        let log_dir = self.dir.join("logs");
        let c = &mut self.ctrs[i];
        let mut script = String::from("set -e\n");
        // Like a container runtime: a read-only sysfs of the container's own network namespace,
        // so /sys/class/net lists its interfaces (the speaker reads them there).
        script.push_str("mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys\n");
        let under_run =
            |p: &str| p == "/run" || p.starts_with("/run/") || p.starts_with("/var/run/");
        if c.mounts.iter().any(|(_, dst, _)| under_run(dst)) {
            // a private /run, so mount points like /var/run/secrets/... need nothing on the host
            script.push_str("mount -t tmpfs -o mode=0755 ferrolb-testbed-run /run\n");
        }
        for (src, dst, ro) in &c.mounts {
            let s = shell_quote(&src.to_string_lossy());
            let d = shell_quote(dst);
            if src.is_dir() {
                script.push_str(&format!("mkdir -p {d}\n"));
            } else {
                script.push_str(&format!(
                    "mkdir -p \"$(dirname {d})\"; [ -e {d} ] || touch {d}\n"
                ));
            }
            script.push_str(&format!("mount --bind {s} {d}\n"));
            if *ro {
                script.push_str(&format!("mount -o remount,bind,ro {d}\n"));
            }
        }
        script.push_str("exec \"$@\"\n");
        let mut cmd = match &netns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg("unshare");
                c
            }
            None => tokio::process::Command::new("unshare"),
        };
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&script)
            .arg("sh")
            .args(&c.argv);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{}.log", c.spec.name)))?;
        let workdir = c
            .spec
            .working_dir
            .clone()
            .filter(|d| Path::new(d).is_dir())
            .unwrap_or_else(|| "/".into());
        cmd.env_clear()
            .envs(c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", c.argv))?;
        let pid = child.id().unwrap_or(0);
        std::fs::write(
            self.dir.join(format!("{}.pid", c.spec.name)),
            format!("{pid} {}\n", starttime(pid)),
        )?;
        let t = now();
        c.state = json!({"running": {"startedAt": t}});
        c.started_at = Some(t);
        c.started_instant = Some(Instant::now());
        c.child = Some(child);
        c.pid = Some(pid);
        c.ever_started = true;
        c.ready = false;
        c.ready_ok = 0;
        c.ready_fail = 0;
        c.live_fail = 0;
        let now_i = Instant::now();
        c.next_ready_probe = c.spec.readiness_probe.as_ref().map(|p| {
            now_i + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
        });
        c.next_live_probe = c.spec.liveness_probe.as_ref().map(|p| {
            now_i + Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
        });
        tracing::info!(pod = %self.name, container = %c.spec.name, pid, argv = ?c.argv, "container started");
        Ok(())
    }

    pub(super) async fn step(&mut self) {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        let pod_ip = self.pod_ip();
        for i in 0..self.ctrs.len() {
            // reap
            let exited = match self.ctrs[i].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some(st.code().unwrap_or(137)),
                _ => None,
            };
            if let Some(code) = exited {
                let log_tail = self.log_tail(&self.ctrs[i].spec.name);
                let c = &mut self.ctrs[i];
                let _ = std::fs::remove_file(self.dir.join(format!("{}.pid", c.spec.name)));
                let ran = c.started_instant.map(|s| s.elapsed()).unwrap_or_default();
                let term = json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "message": log_tail,
                    "startedAt": c.started_at,
                    "finishedAt": now(),
                    "containerID": format!("ferrolb-testbed://{}", c.pid.unwrap_or(0)),
                }});
                tracing::info!(pod = %self.name, container = %c.spec.name, code, "container exited");
                c.child = None;
                c.ready = false;
                c.last_exit = Some(code);
                let restart = match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                };
                if ran > Duration::from_secs(60) {
                    c.backoff = BACKOFF_BASE;
                }
                if restart {
                    c.next_start = Instant::now() + c.backoff;
                    c.state = json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off {}s restarting failed container", c.backoff.as_secs())}});
                    c.last_state = term;
                    c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                } else {
                    c.state = term;
                    c.done = true;
                }
            }
            // start / restart
            let c = &self.ctrs[i];
            if c.child.is_none() && !c.done && Instant::now() >= c.next_start {
                let was_started = c.ever_started;
                match self.spawn(i) {
                    Ok(()) => {
                        if was_started {
                            self.ctrs[i].restarts += 1;
                        }
                    }
                    Err(e) => {
                        let c = &mut self.ctrs[i];
                        c.state = json!({"waiting": {"reason": "RunContainerError", "message": format!("{e:#}")}});
                        c.next_start = Instant::now() + c.backoff;
                        c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            // probes
            if self.ctrs[i].child.is_none() {
                continue;
            }
            let netns = self.netns.clone();
            let now_i = Instant::now();
            if let (Some(p), Some(due)) = (
                self.ctrs[i].spec.liveness_probe.clone(),
                self.ctrs[i].next_live_probe,
            ) && now_i >= due
            {
                {
                    let ok = probe(&p, &self.ctrs[i].spec, &pod_ip, netns.as_deref()).await;
                    let c = &mut self.ctrs[i];
                    c.next_live_probe = Some(now_i + period(&p));
                    c.live_fail = if ok { 0 } else { c.live_fail + 1 };
                    if c.live_fail >= p.failure_threshold.unwrap_or(3) {
                        tracing::info!(pod = %self.name, container = %c.spec.name, "liveness probe failed: killing");
                        c.live_fail = 0;
                        c.next_live_probe = None;
                        let grace = self.spec().termination_grace_period_seconds.unwrap_or(30);
                        stop_child(&mut self.ctrs[i], grace.min(10)).await;
                        continue;
                    }
                }
            }
            if let (Some(p), Some(due)) = (
                self.ctrs[i].spec.readiness_probe.clone(),
                self.ctrs[i].next_ready_probe,
            ) {
                if now_i >= due {
                    let ok = probe(&p, &self.ctrs[i].spec, &pod_ip, netns.as_deref()).await;
                    let c = &mut self.ctrs[i];
                    c.next_ready_probe = Some(now_i + period(&p));
                    if ok {
                        c.ready_ok += 1;
                        c.ready_fail = 0;
                        if c.ready_ok >= p.success_threshold.unwrap_or(1) {
                            c.ready = true;
                        }
                    } else {
                        c.ready_fail += 1;
                        c.ready_ok = 0;
                        if c.ready_fail >= p.failure_threshold.unwrap_or(3) {
                            c.ready = false;
                        }
                    }
                }
            } else {
                self.ctrs[i].ready = true;
            }
        }
    }

    fn log_tail(&self, container: &str) -> String {
        let data = std::fs::read(self.dir.join("logs").join(format!("{container}.log")))
            .unwrap_or_default();
        let start = data.len().saturating_sub(1024);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }

    /// SIGTERM every container, wait up to `grace` seconds, then SIGKILL.
    pub(super) async fn terminate(&mut self, grace: Option<i64>) {
        let grace = grace.unwrap_or(30);
        for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
            if let Some(pid) = c.child.as_ref().and_then(|ch| ch.id()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        let end = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        loop {
            let mut alive = false;
            for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
                if let Some(ch) = c.child.as_mut() {
                    match ch.try_wait() {
                        Ok(Some(_)) | Err(_) => c.child = None,
                        Ok(None) => alive = true,
                    }
                }
            }
            if !alive {
                break;
            }
            if Instant::now() >= end {
                for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
                    if let Some(ch) = c.child.as_mut() {
                        let _ = ch.start_kill();
                        let _ = ch.wait().await;
                        c.child = None;
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for c in self.ctrs.iter_mut().chain(self.inits.iter_mut()) {
            c.done = true;
        }
    }
}
