//! The `GameShard` custom resource: one hot zone of a game world, served by a set of
//! data-plane pods that the gameshard operator keeps sized, placed and healthy. The
//! control topic's messages are in `gameshard-control`.
//!
//! Only API types live here (serde, schemars, the kube derive): no client, no runtime.
//! `gameshard-operator crd` prints the CustomResourceDefinition generated from them.

// The schema derive re-declares the types in a private scope, which the
// unreachable-pub lint mistakes for the public items.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "gameshard.io";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// Condition types the operator reports.
pub mod condition {
    /// Every data-plane pod is ready and owns its partitions.
    pub const READY: &str = "Ready";
    /// The operator is moving the shard towards its spec (pods rolling, scaling).
    pub const PROGRESSING: &str = "Progressing";
    /// Something stops the shard from being served as specified; the reason says what.
    pub const DEGRADED: &str = "Degraded";
    /// The autoscaler wants more or fewer pods than its bounds allow, or cannot decide
    /// (its signals are missing or stale).
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// The observed p99 is above the target.
    pub const SLO_BREACHED: &str = "SLOBreached";
}

/// A hot zone of the game world: the Kafka topics of its events and updates, and how
/// the data-plane pods that serve it are sized, placed and scaled.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gameshard.io",
    version = "v1alpha1",
    kind = "GameShard",
    plural = "gameshards",
    shortname = "gs",
    namespaced,
    status = "GameShardStatus",
    derive = "PartialEq",
    doc = "A hot zone of a game world, served by pinned data-plane pods the gameshard operator keeps sized and healthy.",
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".status.partitions","description":"Input partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas","description":"Data-plane pods"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas","description":"Ready data-plane pods"}"#,
    printcolumn = r#"{"name":"P99","type":"string","jsonPath":".status.observedP99","description":"Observed p99 event latency"}"#,
    printcolumn = r#"{"name":"Target","type":"number","jsonPath":".spec.latency.p99TargetMs","description":"p99 target, milliseconds"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.assignmentEpoch","description":"Partition assignment epoch","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[x_kube(validation = Rule::new("!has(self.autoscaling.maxReplicas) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.partitions) || !has(self.autoscaling.maxReplicas) || self.autoscaling.maxReplicas <= self.partitions").message("autoscaling.maxReplicas must not exceed partitions: a pod without a partition serves nothing"))]
#[x_kube(validation = Rule::new("!has(self.partitions) || !has(self.replicas) || self.replicas <= self.partitions").message("replicas must not exceed partitions: a pod without a partition serves nothing"))]
#[serde(rename_all = "camelCase")]
pub struct GameShardSpec {
    /// The Kafka cluster and the zone's topics.
    pub kafka: KafkaSpec,
    /// Partitions of the input topic. Discovered from the topic when omitted; when set
    /// and different from the topic, the shard is reported Degraded (PartitionMismatch)
    /// rather than served with the wrong count.
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: Option<i32>,
    /// Partitions each data-plane pod owns while `replicas` is unset: replicas =
    /// ceil(partitions / partitionsPerPod), within the autoscaling bounds.
    #[serde(default = "default_partitions_per_pod")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions_per_pod: i32,
    /// Data-plane pods. The scale subresource writes it: the operator's own autoscaler
    /// in `Auto` mode, or a `HorizontalPodAutoscaler` or KEDA when they drive the shard
    /// (`kubectl scale gs/<name> --replicas=N` too); the operator then moves
    /// partitions to or from the pods one at a time. Unset, it is ceil(partitions /
    /// partitionsPerPod).
    // Left out when unset: the API server refuses a null at the scale subresource's
    // specReplicasPath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub replicas: Option<i32>,
    /// The latency objective the shard is scaled and alerted on.
    #[serde(default)]
    pub latency: LatencySpec,
    /// The data-plane pods: image, whole CPUs, memory, placement.
    #[serde(default)]
    pub dataplane: DataPlaneSpec,
    /// How the operator scales the shard on its observed latency.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// How partitions move between pods.
    #[serde(default)]
    pub handoff: HandoffSpec,
    /// While true the operator changes nothing for this shard: no apply, no scaling, no
    /// topic creation. Status still reports what it sees.
    #[serde(default)]
    pub paused: bool,
}

fn default_partitions_per_pod() -> i32 {
    8
}

/// The Kafka connection and topics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,
    /// Topic of the zone's events. It must exist; its partition count sizes the shard.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub input_topic: String,
    /// Topic the entity updates go to; created with the input's partition count when
    /// absent.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub output_topic: String,
    /// Topic malformed events go to; created when absent. Without it malformed events
    /// are only counted.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub dead_letter_topic: Option<String>,
    /// Topic of the partitions' snapshots (default `<name>.snapshots`); created with the
    /// input's partition count when absent.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub snapshot_topic: Option<String>,
    /// Topic of the operator's partition assignment (default `<name>.control`); created
    /// with one partition when absent.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub control_topic: Option<String>,
    /// How updates are framed on the output topic: `Entity` (default) writes one record
    /// per changed entity, keyed `player:<id>` or `item:<id>`, for a compacted topic;
    /// `Batch` writes the NDJSON of many updates of one partition in one record (key
    /// absent, header `gameshard-framing: batch`), so the output record rate does not
    /// multiply the input's.
    #[serde(default)]
    pub output_framing: OutputFraming,
    /// Extra librdkafka settings for every client of the shard (tuning; use
    /// `credentialsSecret` for secrets).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// A Secret in the shard's namespace whose keys are librdkafka settings (for example
    /// `security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
    /// `ssl.ca.pem`). Mounted read-only into the data-plane pods and read by the
    /// operator for its own topic administration.
    pub credentials_secret: Option<SecretRef>,
}

/// Output framings (the data plane's `--output-framing`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum OutputFraming {
    /// One record per changed entity.
    #[default]
    Entity,
    /// One record per run of updates of one partition, as NDJSON.
    Batch,
}

impl OutputFraming {
    /// The value of the data plane's `--output-framing` flag.
    pub fn flag(self) -> &'static str {
        match self {
            OutputFraming::Entity => "entity",
            OutputFraming::Batch => "batch",
        }
    }
}

/// A reference to a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The latency objective.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySpec {
    /// Target p99 of event latency (record timestamp to update handed to the producer),
    /// in milliseconds.
    #[serde(default = "default_p99_target_ms")]
    #[schemars(range(min = 0.05, max = 60000.0))]
    pub p99_target_ms: f64,
}

impl Default for LatencySpec {
    fn default() -> Self {
        Self { p99_target_ms: default_p99_target_ms() }
    }
}

fn default_p99_target_ms() -> f64 {
    2.0
}

/// The data-plane pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSpec {
    /// Container image; the operator's default when omitted.
    pub image: Option<String>,
    /// Image pull policy.
    #[schemars(regex(pattern = r"^(Always|IfNotPresent|Never)$"))]
    pub image_pull_policy: Option<String>,
    /// Image pull secrets' names.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Whole CPUs per pod, requested and limited alike: with the static CPU manager a
    /// Guaranteed pod gets these cores to itself and the state machine pins one of them.
    /// Two lets the IO thread run beside it; three gives the publisher its own.
    #[serde(default = "default_cpus")]
    #[schemars(range(min = 1, max = 64))]
    pub cpus: i32,
    /// Memory per pod, requested and limited alike (a Kubernetes quantity).
    #[serde(default = "default_memory")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub memory: String,
    /// Where the pods may run.
    #[serde(default)]
    pub placement: Placement,
    /// Priority class of the pods.
    pub priority_class_name: Option<String>,
    /// Snapshot a partition after this many records (default 100000).
    #[schemars(range(min = 1))]
    pub snapshot_every_records: Option<i64>,
    /// Snapshot a partition that moved this many seconds after its last one (default 30).
    #[schemars(range(min = 1))]
    pub snapshot_every_seconds: Option<i64>,
}

impl Default for DataPlaneSpec {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            cpus: default_cpus(),
            memory: default_memory(),
            placement: Placement::default(),
            priority_class_name: None,
            snapshot_every_records: None,
            snapshot_every_seconds: None,
        }
    }
}

fn default_cpus() -> i32 {
    2
}

fn default_memory() -> String {
    "1Gi".to_owned()
}

/// Pod placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels the pods require.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Affinity rules, added to the operator's own spreading of pods across nodes.
    pub affinity: Option<Affinity>,
}

/// How the shard is scaled on its observed p99 latency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `Auto` scales the pods (it writes `spec.replicas` through the scale
    /// subresource); `Recommend` only reports the replicas it would run in
    /// `status.desiredReplicas`; `Off` leaves `spec.replicas` to people or to another
    /// autoscaler.
    #[serde(default)]
    pub mode: AutoscalingMode,
    /// Fewest pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most pods; at most, and by default, the partition count.
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// How long the p99 (or the lag) must stay above target before scaling up, in
    /// seconds.
    #[serde(default = "default_up_window")]
    #[schemars(range(min = 0))]
    pub scale_up_window_seconds: i64,
    /// How long the p99 must stay well under target (see `scaleDownBelow`) before
    /// scaling down, in seconds.
    #[serde(default = "default_down_window")]
    #[schemars(range(min = 0))]
    pub scale_down_window_seconds: i64,
    /// "Well under": the share of the target the p99 must stay below to scale down.
    #[serde(default = "default_scale_down_below")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub scale_down_below: f64,
    /// Scale down only while the remaining pods would stay below this share of their
    /// busiest thread's CPU time.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 0.05, max = 1.0))]
    pub target_utilization: f64,
    /// Count a p99 above the target as a breach only while the pods are loaded: a pod's
    /// busiest thread at `targetUtilization` or more, or a partition 100 records behind.
    /// Pods that keep up with their records are not what is slow (the time is spent in
    /// the producers or the brokers), and more of them would not lower the p99.
    #[serde(default = "yes")]
    pub scale_up_only_when_loaded: bool,
    /// Records a partition may lag behind before that alone counts as a breach: lag
    /// grows before latency does.
    #[serde(default = "default_max_lag")]
    #[schemars(range(min = 1))]
    pub max_lag_records: i64,
    /// Most pods added or removed in one step; a larger breach takes a larger step.
    #[serde(default = "default_max_step")]
    #[schemars(range(min = 1))]
    pub max_step: i32,
    /// Least time between two scaling steps, in seconds.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: i64,
    /// How often the signals are read and the policy evaluated, in seconds.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1))]
    pub interval_seconds: i64,
    /// A Prometheus server to read the signals from (`histogram_quantile` over the
    /// pods' latency histograms). Without it the operator scrapes the pods itself.
    pub prometheus: Option<PrometheusSpec>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            mode: AutoscalingMode::default(),
            min_replicas: one(),
            max_replicas: None,
            scale_up_window_seconds: default_up_window(),
            scale_down_window_seconds: default_down_window(),
            scale_down_below: default_scale_down_below(),
            target_utilization: default_target_utilization(),
            scale_up_only_when_loaded: yes(),
            max_lag_records: default_max_lag(),
            max_step: default_max_step(),
            cooldown_seconds: default_cooldown(),
            interval_seconds: default_interval(),
            prometheus: None,
        }
    }
}

fn one() -> i32 {
    1
}

fn yes() -> bool {
    true
}

fn default_up_window() -> i64 {
    60
}

fn default_down_window() -> i64 {
    600
}

fn default_scale_down_below() -> f64 {
    0.5
}

fn default_target_utilization() -> f64 {
    0.6
}

fn default_max_lag() -> i64 {
    10_000
}

fn default_max_step() -> i32 {
    2
}

fn default_cooldown() -> i64 {
    120
}

fn default_interval() -> i64 {
    15
}

/// A Prometheus server the autoscaler queries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// Base URL of its HTTP API, e.g. `http://prometheus-operated.monitoring:9090`.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub url: String,
    /// Label matchers added to every query besides `shard="<name>"`, for example
    /// `namespace="game"` where several namespaces have shards of the same name.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
    /// The range of the `rate()` queries, in seconds: at least two of the server's
    /// scrape intervals. By default the larger of `intervalSeconds` and 60 (four scrapes
    /// at the shard's ServiceMonitor's 15 s).
    #[schemars(range(min = 1))]
    pub rate_window_seconds: Option<i64>,
}

/// Autoscaling modes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum AutoscalingMode {
    /// Scale the pods.
    Auto,
    /// Report the desired replicas without acting on them.
    #[default]
    Recommend,
    /// Do nothing: `spec.replicas` is left to people or to another autoscaler.
    Off,
}

/// How partitions move between pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandoffSpec {
    /// Partitions moving between pods at once. One by default, so that a scale step
    /// pauses at most one partition at a time.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_in_flight: i32,
    /// How long a pod taking a partition waits for its former owner's release before it
    /// restores the latest snapshot without it (the former owner crashed), in seconds.
    #[serde(default = "default_release_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub release_timeout_seconds: i32,
}

impl Default for HandoffSpec {
    fn default() -> Self {
        Self { max_in_flight: one(), release_timeout_seconds: default_release_timeout() }
    }
}

fn default_release_timeout() -> i32 {
    10
}

/// What the operator observes of the shard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameShardStatus {
    /// The generation of the spec this status reflects.
    pub observed_generation: Option<i64>,
    /// Data-plane pods.
    #[serde(default)]
    pub replicas: i32,
    /// Ready data-plane pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Partitions of the input topic.
    pub partitions: Option<i32>,
    /// Epoch of the partition assignment published on the control topic.
    pub assignment_epoch: Option<i64>,
    /// Which pod owns which partitions.
    #[serde(default)]
    pub assignment: Vec<PodAssignment>,
    /// Observed p99 event latency, for display (`1.8ms`): the autoscaler's latest
    /// reading, over its last interval, from the pods' latency histograms (or the
    /// Prometheus server's); absent before its second reading, while no update is
    /// published and while its signals are missing.
    pub observed_p99: Option<String>,
    /// Observed p99 event latency in milliseconds (see `observedP99`).
    pub observed_p99_ms: Option<f64>,
    /// Replicas the autoscaler wants: after its last step in `Auto`, its recommendation
    /// in `Recommend`; absent in `Off`.
    pub desired_replicas: Option<i32>,
    /// When the autoscaler last scaled the shard.
    pub last_scale_time: Option<Time>,
    /// The last decision of the autoscaler, for people: what it saw and what it did.
    pub last_scale_decision: Option<String>,
    /// Partitions moving between pods now.
    #[serde(default)]
    pub handoffs_in_flight: i32,
    /// Label selector of the data-plane pods, for the scale subresource (HPA, KEDA).
    pub selector: Option<String>,
    /// `Ready`, `Progressing`, `Degraded`, `ScalingLimited` and `SLOBreached`, with reasons.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The partitions one pod owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct PodAssignment {
    /// The pod's name.
    pub pod: String,
    /// Its partitions.
    pub partitions: Vec<i32>,
}

impl GameShard {
    /// The snapshot topic: the spec's, or `<name>.snapshots`.
    pub fn snapshot_topic(&self) -> String {
        self.spec
            .kafka
            .snapshot_topic
            .clone()
            .unwrap_or_else(|| format!("{}.snapshots", self.name_or_default()))
    }

    /// The control topic: the spec's, or `<name>.control`.
    pub fn control_topic(&self) -> String {
        self.spec
            .kafka
            .control_topic
            .clone()
            .unwrap_or_else(|| format!("{}.control", self.name_or_default()))
    }

    fn name_or_default(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("gameshard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_blocks_take_the_same_defaults_as_omitted_fields() {
        let from_empty: DataPlaneSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(from_empty, DataPlaneSpec::default());
        assert_eq!(from_empty.cpus, 2);
        let handoff: HandoffSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(handoff, HandoffSpec::default());
        let scaling: AutoscalingSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(scaling, AutoscalingSpec::default());
        let latency: LatencySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(latency, LatencySpec::default());
    }
}
