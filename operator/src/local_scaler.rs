//! The autoscaler loop's local side: the data-plane processes of local mode as its
//! [`Endpoints`], and local mode's [`Scale`] as its [`Actuator`], with each notice
//! logged and kept in local mode's [`Status`] for a display.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::local::{Scale, Status};
use crate::scaler::{Actuator, Endpoints, Notice, Report};
use crate::signals::Endpoint;

/// How many notices [`Status::decisions`] keeps: enough for a display's few lines and
/// for a whole demo run's scale steps.
pub const KEPT_NOTICES: usize = 64;

/// A notice with the time it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Noticed {
    /// When the autoscaler gave it.
    pub at: SystemTime,
    /// What it said.
    pub notice: Notice,
}

/// The running data-plane processes of local mode, on 127.0.0.1 at their admin ports,
/// as the Kubernetes side lists the shard's running pods: started, and not being
/// removed.
pub struct LocalPods {
    status: Arc<Mutex<Status>>,
}

impl LocalPods {
    /// The pods `status` shows.
    pub fn new(status: Arc<Mutex<Status>>) -> Self {
        Self { status }
    }
}

impl Endpoints for LocalPods {
    async fn list(&self) -> Result<Vec<Endpoint>, String> {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pods: Vec<Endpoint> = status
            .pods
            .iter()
            .filter(|p| p.running && !p.terminating)
            .map(|p| Endpoint {
                pod: p.name.clone(),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, p.port)),
            })
            .collect();
        pods.sort();
        Ok(pods)
    }
}

/// Writes the replicas into local mode's [`Scale`], logs every notice and keeps the
/// latest ones and the latest report in [`Status`].
pub struct LocalScale {
    scale: Arc<Scale>,
    status: Arc<Mutex<Status>>,
}

impl LocalScale {
    /// Scales through `scale`, reports into `status`.
    pub fn new(scale: Arc<Scale>, status: Arc<Mutex<Status>>) -> Self {
        Self { scale, status }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Actuator for LocalScale {
    async fn scale(&self, replicas: i32) -> Result<(), String> {
        self.scale.set(replicas);
        Ok(())
    }

    async fn notify(&self, notice: &Notice) {
        if notice.warning {
            tracing::warn!(reason = notice.reason, action = notice.action, note = %notice.note, "autoscaler");
        } else {
            tracing::info!(reason = notice.reason, action = notice.action, note = %notice.note, "autoscaler");
        }
        let mut status = self.status();
        let decisions: &mut VecDeque<Noticed> = &mut status.decisions;
        if decisions.len() == KEPT_NOTICES {
            decisions.pop_front();
        }
        decisions.push_back(Noticed { at: SystemTime::now(), notice: notice.clone() });
    }

    fn reported(&self, report: &Report) {
        self.status().report = Some(report.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::PodStatus;

    fn pod(name: &str, port: u16, running: bool, terminating: bool) -> PodStatus {
        PodStatus { name: name.into(), port, ready: running, running, restarts: 0, terminating }
    }

    #[tokio::test]
    async fn the_endpoints_are_the_running_pods_not_being_removed() {
        let status = Arc::new(Mutex::new(Status::default()));
        status.lock().unwrap().pods = vec![
            pod("zone-1", 2, true, false),
            pod("zone-0", 1, true, false),
            pod("zone-2", 3, false, false),
            pod("zone-3", 4, true, true),
        ];
        let pods = LocalPods::new(Arc::clone(&status)).list().await.unwrap();
        let names: Vec<&str> = pods.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(names, ["zone-0", "zone-1"]);
        assert_eq!(pods[0].addr, SocketAddr::from(([127, 0, 0, 1], 1)));
    }

    #[tokio::test]
    async fn a_step_sets_the_scale_and_notices_are_kept_newest_last() {
        let status = Arc::new(Mutex::new(Status::default()));
        let scale = Arc::new(Scale::default());
        let actuator = LocalScale::new(Arc::clone(&scale), Arc::clone(&status));
        actuator.scale(3).await.unwrap();
        assert_eq!(scale.get(), Some(3));
        for i in 0..=KEPT_NOTICES {
            let note = format!("step {i}");
            actuator
                .notify(&Notice { warning: false, reason: "ScaledUp", action: "Scale", note })
                .await;
        }
        let status = status.lock().unwrap();
        assert_eq!(status.decisions.len(), KEPT_NOTICES);
        assert_eq!(status.decisions.back().unwrap().notice.note, format!("step {KEPT_NOTICES}"));
        assert_eq!(status.decisions.front().unwrap().notice.note, "step 1");
    }
}
