//! The desired-state functions: sizing, QoS and pinning, hardening, topics, labels,
//! ownership and the partition assignment.

use gameshard_crds::GameShard;
use gameshard_operator::desired::{self, Inputs};
use serde_json::{Value, json};

fn shard(spec: &Value) -> GameShard {
    let mut v = json!({
        "apiVersion": "gameshard.io/v1alpha1",
        "kind": "GameShard",
        "metadata": {"name": "zone-7", "namespace": "game", "uid": "abc"},
        "spec": {"kafka": {"bootstrapServers": "k:9092", "inputTopic": "in", "outputTopic": "out"}},
    });
    for (k, val) in spec.as_object().expect("object").clone() {
        v["spec"][k] = val;
    }
    serde_json::from_value(v).expect("valid GameShard")
}

fn objects(s: &GameShard, partitions: i32) -> Vec<Value> {
    let replicas = desired::replicas_for(s, partitions);
    desired::objects(&Inputs { shard: s, partitions, replicas, default_image: "img:1" }, true)
}

#[test]
fn replicas_follow_partitions_per_pod_within_the_bounds() {
    // (partitions, per pod, min, max, expected)
    let table = [
        (64, 8, 1, 64, 8),
        (64, 16, 1, 64, 4),
        (65, 8, 1, 64, 9),
        (64, 8, 10, 64, 10),
        (64, 8, 1, 4, 4),
        (3, 1, 5, 64, 3),
        (1, 8, 1, 64, 1),
    ];
    for (partitions, per_pod, min, max, want) in table {
        let s = shard(
            &json!({"partitionsPerPod": per_pod, "autoscaling": {"minReplicas": min, "maxReplicas": max}}),
        );
        assert_eq!(
            desired::replicas_for(&s, partitions),
            want,
            "{partitions} partitions, {per_pod}/pod, [{min}, {max}]"
        );
    }
}

#[test]
fn set_replicas_win_over_partitions_per_pod_but_never_exceed_the_partitions() {
    for (replicas, partitions, want) in [(5, 64, 5), (80, 64, 64), (1, 1, 1)] {
        let s = shard(&json!({"replicas": replicas, "autoscaling": {"maxReplicas": 2}}));
        assert_eq!(desired::replicas_for(&s, partitions), want, "{replicas} of {partitions}");
    }
    let s = shard(&json!({}));
    assert_eq!(desired::replica_bounds(&s, 64), (1, 64), "maxReplicas defaults to the partitions");
    assert_eq!(
        desired::selector(&s),
        "app.kubernetes.io/component=dataplane,app.kubernetes.io/instance=zone-7,app.kubernetes.io/name=gameshard"
    );
}

#[test]
fn pods_are_guaranteed_qos_on_whole_cpus() {
    let s = shard(&json!({"dataplane": {"cpus": 3, "memory": "3Gi"}}));
    let sts = &objects(&s, 16)[0];
    let resources = &sts["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"], json!({"cpu": "3", "memory": "3Gi"}));
    assert_eq!(resources["limits"], resources["requests"], "requests equal limits: Guaranteed");
}

#[test]
fn pods_are_hardened_and_need_no_kubernetes_access() {
    let s = shard(&json!({}));
    let pod = &objects(&s, 16)[0]["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0]["securityContext"];
    assert_eq!(c["runAsNonRoot"], true);
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(c["allowPrivilegeEscalation"], false);
    assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["containers"][0]["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname");
}

#[test]
fn probes_have_explicit_timeouts_and_liveness_is_the_more_patient() {
    let s = shard(&json!({}));
    let c = &objects(&s, 16)[0]["spec"]["template"]["spec"]["containers"][0];
    let (ready, live) = (&c["readinessProbe"], &c["livenessProbe"]);
    assert_eq!(ready["httpGet"]["port"], "admin");
    assert_eq!(live["httpGet"]["port"], "admin");
    assert_eq!(ready["timeoutSeconds"], 2, "{ready}");
    assert_eq!(live["timeoutSeconds"], 5, "{live}");
    for p in [ready, live] {
        assert!(p["timeoutSeconds"].as_i64() < p["periodSeconds"].as_i64(), "{p}");
    }
}

#[test]
fn the_command_line_names_every_topic_with_defaults_from_the_shard_name() {
    let s = shard(
        &json!({"kafka": {"bootstrapServers": "k:9092", "inputTopic": "in", "outputTopic": "out", "deadLetterTopic": "dl", "config": {"linger.ms": "2"}, "credentialsSecret": {"name": "creds"}}}),
    );
    let args = desired::dataplane_args(&s);
    let pairs: Vec<(&str, &str)> = args.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
    for want in [
        ("--brokers", "k:9092"),
        ("--shard", "zone-7"),
        ("--input-topic", "in"),
        ("--output-topic", "out"),
        ("--dlq-topic", "dl"),
        ("--snapshot-topic", "zone-7.snapshots"),
        ("--control-topic", "zone-7.control"),
        ("--pod-id", "$(POD_NAME)"),
        ("--kafka", "linger.ms=2"),
        ("--kafka-config-dir", "/etc/gameshard/kafka"),
        ("--latency-target-ms", "2"),
    ] {
        assert!(pairs.contains(&want), "{want:?} in {args:?}");
    }
    let sts = &objects(&s, 4)[0];
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "creds");
    assert_eq!(pod["containers"][0]["volumeMounts"][0]["readOnly"], true);
}

#[test]
fn every_object_is_labelled_and_owned_by_the_shard() {
    let s = shard(&json!({}));
    let all = objects(&s, 16);
    let kinds: Vec<&str> = all.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["StatefulSet", "Service", "Service", "PodDisruptionBudget", "ServiceMonitor"]
    );
    for o in &all {
        assert_eq!(o["metadata"]["namespace"], "game");
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/instance"], "zone-7");
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "gameshard-operator");
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["uid"].as_str(), owner["controller"].as_bool()),
            (Some("GameShard"), Some("abc"), Some(true))
        );
    }
    let selector = &all[0]["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &all[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/instance"],
        &selector["app.kubernetes.io/instance"]
    );
    assert_eq!(all[1]["spec"]["clusterIP"], "None", "the headless Service gives pods stable names");
    assert_eq!(all[3]["spec"]["maxUnavailable"], 1);
}
