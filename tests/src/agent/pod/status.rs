//! The pod's status as the API server sees it: phase, conditions, container states.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::PodRun;
use crate::agent::now;

impl PodRun {
    fn cond(&mut self, ty: &str, ok: bool) -> Value {
        let st = if ok { "True" } else { "False" };
        let e = self
            .cond_times
            .entry(ty.to_string())
            .or_insert_with(|| (st.to_string(), now()));
        if e.0 != st {
            *e = (st.to_string(), now());
        }
        json!({"type": ty, "status": st, "lastTransitionTime": e.1})
    }

    pub(super) async fn report(&mut self) {
        let policy = self
            .spec()
            .restart_policy
            .unwrap_or_else(|| "Always".into());
        let all_started = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.ever_started);
        let all_done = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.done);
        let phase = if self.failed.is_some() {
            "Failed"
        } else if !self.set_up || !all_started {
            "Pending"
        } else if all_done {
            if self.ctrs.iter().all(|c| c.last_exit == Some(0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            let _ = policy;
            "Running"
        };
        let ready = phase == "Running" && self.ctrs.iter().all(|c| c.ready && c.child.is_some());
        let spec = self.spec();
        let statuses: Vec<Value> = if self.ctrs.is_empty() {
            spec.containers
                .iter()
                .map(|c| {
                    let (reason, msg) = self
                        .failed
                        .clone()
                        .or_else(|| self.pending.clone())
                        .unwrap_or_else(|| ("ContainerCreating".into(), String::new()));
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": false,
                           "started": false, "restartCount": 0,
                           "state": {"waiting": {"reason": reason, "message": msg}}})
                })
                .collect()
        } else {
            self.ctrs
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "name": c.spec.name, "image": c.spec.image,
                        "imageID": format!("ferrolb-testbed://{}", c.argv.first().cloned().unwrap_or_default()),
                        "ready": c.ready && c.child.is_some(), "started": c.child.is_some(),
                        "restartCount": c.restarts, "state": c.state, "lastState": c.last_state,
                    });
                    if let Some(pid) = c.pid {
                        v["containerID"] = json!(format!("ferrolb-testbed://{pid}"));
                    }
                    v
                })
                .collect()
        };
        let conditions = vec![
            self.cond("PodReadyToStartContainers", self.set_up),
            self.cond(
                "Initialized",
                self.set_up && self.init_done >= self.inits.len(),
            ),
            self.cond("Ready", ready),
            self.cond("ContainersReady", ready),
            self.cond("PodScheduled", true),
        ];
        let init_statuses: Vec<Value> = self
            .inits
            .iter()
            .map(|c| {
                let mut v = json!({
                    "name": c.spec.name, "image": c.spec.image,
                    "imageID": format!("ferrolb-testbed://{}", c.argv.first().cloned().unwrap_or_default()),
                    "ready": c.done && c.last_exit == Some(0), "started": c.child.is_some(),
                    "restartCount": c.restarts, "state": c.state, "lastState": c.last_state,
                });
                if let Some(pid) = c.pid {
                    v["containerID"] = json!(format!("ferrolb-testbed://{pid}"));
                }
                v
            })
            .collect();
        let node_ip = self.ctx.args.node_ip.to_string();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": node_ip,
            "hostIPs": std::iter::once(node_ip.clone())
                .chain(self.ctx.args.node_ipv6.map(|a| a.to_string()))
                .map(|ip| json!({"ip": ip}))
                .collect::<Vec<_>>(),
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if self.set_up || self.host_network {
            let ip = self.pod_ip();
            status["podIP"] = json!(ip);
            status["podIPs"] = json!(
                self.pod_ips()
                    .iter()
                    .map(|ip| json!({"ip": ip}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some((reason, msg)) = &self.failed {
            status["reason"] = json!(reason);
            status["message"] = json!(msg);
        }
        // Like the kubelet's status manager: what the API server holds is compared too, so a
        // condition someone else changed (kube-controller-manager marks pods NotReady when it
        // lost a node's heartbeats, e.g. after the API server was away) is put right again.
        let api_ready = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status == "True");
        if self.last_sent.as_ref() == Some(&status) && api_ready.is_none_or(|r| r == ready) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match pods
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(_) => self.last_sent = Some(status),
            Err(e) => {
                tracing::debug!(pod = %self.name, error = %e, "status update");
                self.last_sent = None;
            }
        }
    }
}
