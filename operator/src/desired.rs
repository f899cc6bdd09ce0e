//! The objects a GameShard should have: pure functions from the resource (and what the
//! operator observed of Kafka) to Kubernetes objects, with no client anywhere.

use std::collections::BTreeMap;

use gameshard_crds::GameShard;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "gameshard-operator";

/// Port of the data plane's admin server (metrics and probes).
pub const ADMIN_PORT: i32 = 9100;

/// Where the Kafka credentials Secret is mounted in data-plane pods.
pub const KAFKA_CONFIG_DIR: &str = "/etc/gameshard/kafka";

/// Non-root user of the data-plane and operator images.
pub const RUN_AS_USER: i64 = 65_532;

/// What the desired objects are computed from.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The resource.
    pub shard: &'a GameShard,
    /// Partitions of its input topic.
    pub partitions: i32,
    /// Data-plane pods to run: the shard's replicas, or more while partitions are still
    /// moving off the pods a scale-down removes.
    pub replicas: i32,
    /// The data-plane image when the resource names none.
    pub default_image: &'a str,
}

/// Pods for `partitions` partitions: `spec.replicas` when set (by a person, the scale
/// subresource or the autoscaler), else one per `partitionsPerPod` within the
/// autoscaling bounds; never more pods than partitions, never fewer than one.
pub fn replicas_for(shard: &GameShard, partitions: i32) -> i32 {
    let spec = &shard.spec;
    let partitions = partitions.max(1);
    let wanted = spec.replicas.unwrap_or_else(|| {
        let per_pod = spec.partitions_per_pod.max(1);
        let (min, max) = replica_bounds(shard, partitions);
        ((partitions + per_pod - 1) / per_pod).clamp(min, max)
    });
    wanted.clamp(1, partitions)
}

/// The autoscaler's bounds for a shard of `partitions` partitions: `minReplicas` and
/// `maxReplicas` (by default the partition count), never above the partition count.
pub fn replica_bounds(shard: &GameShard, partitions: i32) -> (i32, i32) {
    crate::autoscaler::bounds(&shard.spec.autoscaling, partitions)
}

/// The label selector of the shard's data-plane pods, as the scale subresource reports
/// it.
pub fn selector(shard: &GameShard) -> String {
    selector_labels(shard).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The name of the shard's StatefulSet and Services.
pub fn name(shard: &GameShard) -> String {
    shard.name_any()
}

/// The pods of a StatefulSet of `replicas` replicas.
pub fn pod_names(shard: &GameShard, replicas: i32) -> Vec<String> {
    (0..replicas).map(|i| format!("{}-{i}", name(shard))).collect()
}

/// Labels that select the shard's data-plane pods.
pub fn selector_labels(shard: &GameShard) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "gameshard".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), name(shard)),
        ("app.kubernetes.io/component".to_owned(), "dataplane".to_owned()),
    ])
}

/// Labels of every object the operator creates for the shard.
pub fn labels(shard: &GameShard) -> BTreeMap<String, String> {
    let mut l = selector_labels(shard);
    l.insert("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned());
    l.insert("app.kubernetes.io/part-of".to_owned(), "gameshard".to_owned());
    l.insert("gameshard.io/shard".to_owned(), name(shard));
    l
}

/// The owner reference that makes Kubernetes delete the objects with the shard.
pub fn owner(shard: &GameShard) -> OwnerReference {
    shard.controller_owner_ref(&()).expect("a GameShard read from the API has a name and a uid")
}

fn meta(shard: &GameShard, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: shard.namespace(),
        labels: Some(labels(shard)),
        owner_references: Some(vec![owner(shard)]),
        ..ObjectMeta::default()
    }
}

/// The data plane's command line for the shard.
pub fn dataplane_args(shard: &GameShard) -> Vec<String> {
    let spec = &shard.spec;
    let k = &spec.kafka;
    let mut args = vec![
        "--brokers".to_owned(),
        k.bootstrap_servers.clone(),
        "--shard".to_owned(),
        name(shard),
        "--input-topic".to_owned(),
        k.input_topic.clone(),
        "--output-topic".to_owned(),
        k.output_topic.clone(),
        "--snapshot-topic".to_owned(),
        shard.snapshot_topic(),
        "--control-topic".to_owned(),
        shard.control_topic(),
        // Expanded by the kubelet from the POD_NAME variable.
        "--pod-id".to_owned(),
        "$(POD_NAME)".to_owned(),
        "--metrics-addr".to_owned(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--latency-target-ms".to_owned(),
        spec.latency.p99_target_ms.to_string(),
        "--output-framing".to_owned(),
        k.output_framing.flag().to_owned(),
        "--handoff-timeout-secs".to_owned(),
        spec.handoff.release_timeout_seconds.to_string(),
    ];
    if let Some(dlq) = &k.dead_letter_topic {
        args.extend(["--dlq-topic".to_owned(), dlq.clone()]);
    }
    if let Some(n) = spec.dataplane.snapshot_every_records {
        args.extend(["--snapshot-every-records".to_owned(), n.to_string()]);
    }
    if let Some(n) = spec.dataplane.snapshot_every_seconds {
        args.extend(["--snapshot-every-secs".to_owned(), n.to_string()]);
    }
    if k.credentials_secret.is_some() {
        args.extend(["--kafka-config-dir".to_owned(), KAFKA_CONFIG_DIR.to_owned()]);
    }
    for (key, value) in &k.config {
        args.extend(["--kafka".to_owned(), format!("{key}={value}")]);
    }
    args
}

/// The data-plane container: Guaranteed resources (whole CPUs, requests equal to
/// limits), probes on the admin server, and a locked-down security context.
fn container(inputs: &Inputs<'_>) -> Container {
    let spec = &inputs.shard.spec.dataplane;
    let resources: BTreeMap<String, Quantity> = BTreeMap::from([
        ("cpu".to_owned(), Quantity(spec.cpus.to_string())),
        ("memory".to_owned(), Quantity(spec.memory.clone())),
    ]);
    // The admin server answers a probe within milliseconds, from a thread of its own and
    // apart from any other client, so a probe's timeout only has to cover a loaded
    // node's scheduling delays. A failed liveness probe restarts the pod (a restore and
    // a replay), a failed readiness probe only takes it out of the Service: liveness
    // waits longer.
    let probe = |path: &str, period: i32, timeout: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: "dataplane".to_owned(),
        image: Some(spec.image.clone().unwrap_or_else(|| inputs.default_image.to_owned())),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(dataplane_args(inputs.shard)),
        env: Some(vec![EnvVar {
            name: "POD_NAME".to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("admin".to_owned()),
            container_port: ADMIN_PORT,
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 5)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: inputs.shard.spec.kafka.credentials_secret.as_ref().map(|_| {
            vec![VolumeMount {
                name: "kafka".to_owned(),
                mount_path: KAFKA_CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
        }),
        ..Container::default()
    }
}

/// The StatefulSet of data-plane pods: stable names (the operator assigns partitions by
/// pod name), started in parallel, spread across nodes.
pub fn statefulset(inputs: &Inputs<'_>) -> StatefulSet {
    let shard = inputs.shard;
    let placement = &shard.spec.dataplane.placement;
    let selector =
        LabelSelector { match_labels: Some(selector_labels(shard)), ..LabelSelector::default() };
    let pod = PodSpec {
        containers: vec![container(inputs)],
        // The data plane talks to Kafka only.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            // Mounted Secret files get this group, so the non-root user can read them.
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(selector.clone()),
            ..TopologySpreadConstraint::default()
        }]),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        affinity: placement.affinity.clone(),
        priority_class_name: shard.spec.dataplane.priority_class_name.clone(),
        image_pull_secrets: (!shard.spec.dataplane.image_pull_secrets.is_empty()).then(|| {
            shard
                .spec
                .dataplane
                .image_pull_secrets
                .iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        volumes: shard.spec.kafka.credentials_secret.as_ref().map(|s| {
            vec![Volume {
                name: "kafka".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(s.name.clone()),
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }]
        }),
        // A drain takes at most the data plane's drain timeout (20 s by default).
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    StatefulSet {
        metadata: meta(shard, name(shard)),
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas),
            service_name: Some(name(shard)),
            pod_management_policy: Some("Parallel".to_owned()),
            selector,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(shard)),
                    annotations: Some(BTreeMap::from([(
                        "kubectl.kubernetes.io/default-container".to_owned(),
                        "dataplane".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The headless Service that gives the pods stable DNS names.
pub fn headless_service(shard: &GameShard) -> Service {
    Service {
        metadata: meta(shard, name(shard)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(shard)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![admin_port()]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The Service Prometheus scrapes.
pub fn metrics_service(shard: &GameShard) -> Service {
    let mut metadata = meta(shard, format!("{}-metrics", name(shard)));
    metadata
        .labels
        .get_or_insert_default()
        .insert("gameshard.io/metrics".to_owned(), "dataplane".to_owned());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(shard)),
            ports: Some(vec![admin_port()]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn admin_port() -> ServicePort {
    ServicePort {
        name: Some("admin".to_owned()),
        port: ADMIN_PORT,
        target_port: Some(IntOrString::String("admin".to_owned())),
        ..ServicePort::default()
    }
}

/// At most one data-plane pod down by choice at a time: each pod owns partitions no
/// other pod serves.
pub fn disruption_budget(shard: &GameShard) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(shard, name(shard)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(shard)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The Prometheus Operator ServiceMonitor for the metrics Service.
pub fn service_monitor(shard: &GameShard) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta(shard, name(shard)),
        "spec": {
            "selector": {"matchLabels": {
                "app.kubernetes.io/instance": name(shard),
                "gameshard.io/metrics": "dataplane",
            }},
            "endpoints": [{"port": "admin", "path": "/metrics", "interval": "15s"}],
        }
    })
}

/// Every object the operator applies for the shard, as JSON, in apply order.
pub fn objects(inputs: &Inputs<'_>, with_service_monitor: bool) -> Vec<Value> {
    let shard = inputs.shard;
    let mut out = vec![
        typed(&statefulset(inputs), "apps/v1", "StatefulSet"),
        typed(&headless_service(shard), "v1", "Service"),
        typed(&metrics_service(shard), "v1", "Service"),
        typed(&disruption_budget(shard), "policy/v1", "PodDisruptionBudget"),
    ];
    if with_service_monitor {
        out.push(service_monitor(shard));
    }
    out
}

/// `object` as JSON with its `apiVersion` and `kind`.
pub fn typed<T: serde::Serialize>(object: &T, api_version: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or(Value::Null);
    v["apiVersion"] = api_version.into();
    v["kind"] = kind.into();
    v
}
