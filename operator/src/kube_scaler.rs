//! The autoscaler loop's Kubernetes side: the shard's Pod list as its
//! [`Endpoints`](crate::scaler::Endpoints), and the GameShard's scale subresource,
//! Kubernetes Events and a status refresh as its [`Actuator`](crate::scaler::Actuator).

use std::net::{IpAddr, SocketAddr};

use gameshard_crds::GameShard;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::broadcast;

use crate::scaler::{Actuator, Endpoints, Notice, Report};
use crate::signals::Endpoint;

/// The field manager of the autoscaler's writes to `spec.replicas`, apart from the
/// reconciler's so that `kubectl get gs -o yaml --show-managed-fields` tells them apart.
pub const FIELD_MANAGER: &str = "gameshard-autoscaler";

/// The shard's running pods, from the Pod list: `status.podIP` on the admin port.
pub struct PodEndpoints {
    api: Api<Pod>,
    selector: String,
    port: u16,
}

impl PodEndpoints {
    /// The pods `api` lists with label selector `selector`, read on `port`.
    pub fn new(api: Api<Pod>, selector: String, port: u16) -> Self {
        Self { api, selector, port }
    }
}

impl Endpoints for PodEndpoints {
    async fn list(&self) -> Result<Vec<Endpoint>, String> {
        let list = self
            .api
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| e.to_string())?;
        let mut pods: Vec<Endpoint> = list
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                if status.phase.as_deref() != Some("Running") {
                    return None;
                }
                let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
                Some(Endpoint { pod: pod.name_any(), addr: SocketAddr::new(ip, self.port) })
            })
            .collect();
        pods.sort();
        Ok(pods)
    }
}

/// Writes `spec.replicas` through the GameShard's scale subresource, records Events on
/// it, and asks the controller to write the status again when the report changed.
pub struct ScaleSubresource {
    api: Api<GameShard>,
    name: String,
    reference: ObjectReference,
    reporter: Reporter,
    /// For freezes: a repeated one joins the series of the first.
    recorder: Recorder,
    refresh: broadcast::Sender<ObjectRef<GameShard>>,
}

impl ScaleSubresource {
    /// For `shard`, through `api` (its namespace), with Events reported as `reporter`;
    /// status refreshes go to `refresh`.
    pub fn new(
        shard: &GameShard,
        api: Api<GameShard>,
        reporter: Reporter,
        refresh: broadcast::Sender<ObjectRef<GameShard>>,
    ) -> Self {
        let recorder = Recorder::new(api.clone().into_client(), reporter.clone());
        Self {
            api,
            name: shard.name_any(),
            reference: shard.object_ref(&()),
            reporter,
            recorder,
            refresh,
        }
    }
}

impl Actuator for ScaleSubresource {
    async fn scale(&self, replicas: i32) -> Result<(), String> {
        let params =
            PatchParams { field_manager: Some(FIELD_MANAGER.to_owned()), ..PatchParams::default() };
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        self.api
            .patch_scale(&self.name, &params, &patch)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn notify(&self, notice: &Notice) {
        let event = Event {
            type_: if notice.warning { EventType::Warning } else { EventType::Normal },
            reason: notice.reason.to_owned(),
            note: Some(notice.note.clone()),
            action: notice.action.to_owned(),
            secondary: None,
        };
        // A recorder folds an Event into the series of an earlier one of the same reason
        // and keeps the earlier note: each decision (3 to 2 pods, then 2 to 1) gets a
        // recorder of its own, so that its Event says what it decided.
        let recorder = if notice.action == "Freeze" {
            self.recorder.clone()
        } else {
            Recorder::new(self.api.clone().into_client(), self.reporter.clone())
        };
        if let Err(error) = recorder.publish(&event, &self.reference).await {
            tracing::warn!(%error, reason = notice.reason, "cannot record an event");
        }
    }

    fn reported(&self, _: &Report) {
        let mut shard = ObjectRef::new(&self.name);
        if let Some(ns) = &self.reference.namespace {
            shard = shard.within(ns);
        }
        // No controller listens in tests, and a lagging one catches up at its resync.
        let _ = self.refresh.send(shard);
    }
}
