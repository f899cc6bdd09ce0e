//! The operator and the chart on a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager; `gameshard_e2e::harness::controlplane`): the CRD's schema and
//! CEL rules, the chart's RBAC rendered by real Helm, the operator running as the chart's
//! service account, garbage collection, leader election.
//!
//! One control plane serves every test here; each test has its own namespaces.

use std::time::{Duration, Instant};

use gameshard_crds::GameShard;
use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::chart::{
    self, CREDENTIALS, eventually, example, merge, shard_from, start_operator,
};
use gameshard_e2e::harness::controlplane::ControlPlane;
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::nodeagent::NodeAgent;
use gameshard_e2e::harness::operator::Operator;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// The smallest GameShard for a 16-partition zone: every optional block left out.
fn smallest(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "gameshard.io/v1alpha1", "kind": "GameShard",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "kafka": {"bootstrapServers": "kafka:9092", "inputTopic": "zone.events", "outputTopic": "zone.updates"},
            "partitions": 16,
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_starts_within_30_seconds_at_the_pinned_version() {
    let Some(cp) = ControlPlane::shared() else { return };
    eprintln!("control plane {} started in {:?}", cp.version(), cp.started_in());
    assert!(cp.started_in() < Duration::from_secs(30), "took {:?}", cp.started_in());
    assert!(cp.version().starts_with("v1."), "{}", cp.version());
    let admin = cp.admin().await.expect("admin client");
    // The garbage collector and the StatefulSet controller are the ones the tests need.
    let ns = cp.namespace(&admin, "smoke").await.expect("namespace");
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(admin, &ns);
    eventually(
        "the controller manager creates the default ServiceAccount",
        Duration::from_secs(20),
        || async { accounts.get_opt("default").await.ok().flatten() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_crd_accepts_the_smallest_shard_and_rejects_each_bad_spec_with_its_message() {
    let Some(cp) = ControlPlane::shared() else { return };
    let admin = cp.admin().await.expect("admin client");
    let ns = cp.namespace(&admin, "schema").await.expect("namespace");
    let Some(_) = chart::install(cp, &admin, &ns).await else { return };
    let shards: Api<GameShard> = Api::namespaced(admin.clone(), &ns);

    let created = shards
        .create(&PostParams::default(), &shard_from(smallest(&ns, "smallest")))
        .await
        .expect("the smallest 16-partition GameShard is accepted");
    // The server filled in the defaults of the schema.
    assert_eq!(created.spec.partitions_per_pod, 8);
    assert_eq!(created.spec.dataplane.cpus, 2);
    assert_eq!(created.spec.latency.p99_target_ms, 2.0);

    // Each bound and each rule, with the message `kubectl apply` would print.
    let cases: &[(&str, Value, &str)] = &[
        (
            "partitions below 1",
            json!({"spec": {"partitions": 0}}),
            "spec.partitions: Invalid value: 0: spec.partitions in body should be greater than or equal to 1",
        ),
        (
            "partitions above 10000",
            json!({"spec": {"partitions": 10001}}),
            "spec.partitions in body should be less than or equal to 10000",
        ),
        (
            "partitionsPerPod below 1",
            json!({"spec": {"partitionsPerPod": 0}}),
            "spec.partitionsPerPod in body should be greater than or equal to 1",
        ),
        (
            "a topic name with a slash",
            json!({"spec": {"kafka": {"inputTopic": "a/b"}}}),
            "spec.kafka.inputTopic in body should match '^[a-zA-Z0-9._-]+$'",
        ),
        (
            "an empty bootstrap list",
            json!({"spec": {"kafka": {"bootstrapServers": ""}}}),
            "spec.kafka.bootstrapServers in body should be at least 1 chars long",
        ),
        (
            "a latency target below 50 µs",
            json!({"spec": {"latency": {"p99TargetMs": 0.01}}}),
            "spec.latency.p99TargetMs in body should be greater than or equal to 0.05",
        ),
        (
            "zero CPUs",
            json!({"spec": {"dataplane": {"cpus": 0}}}),
            "spec.dataplane.cpus in body should be greater than or equal to 1",
        ),
        (
            "a memory that is no quantity",
            json!({"spec": {"dataplane": {"memory": "lots"}}}),
            "spec.dataplane.memory in body should match",
        ),
        (
            "an unknown pull policy",
            json!({"spec": {"dataplane": {"imagePullPolicy": "Sometimes"}}}),
            "spec.dataplane.imagePullPolicy in body should match",
        ),
        (
            "an unknown autoscaling mode",
            json!({"spec": {"autoscaling": {"mode": "Sometimes"}}}),
            "spec.autoscaling.mode: Unsupported value: \"Sometimes\"",
        ),
        (
            "min above max",
            json!({"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}}),
            "spec: Invalid value: autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "max above the partitions",
            json!({"spec": {"autoscaling": {"maxReplicas": 17}}}),
            "spec: Invalid value: autoscaling.maxReplicas must not exceed partitions: a pod without a partition serves nothing",
        ),
        (
            "replicas above the partitions",
            json!({"spec": {"replicas": 17}}),
            "spec: Invalid value: replicas must not exceed partitions: a pod without a partition serves nothing",
        ),
        (
            "zero replicas",
            json!({"spec": {"replicas": 0}}),
            "spec.replicas in body should be greater than or equal to 1",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, change, message)) in cases.iter().enumerate() {
        let mut bad = smallest(&ns, &format!("bad-{i}"));
        merge(&mut bad, change.clone());
        let post = kube::core::Request::new(format!(
            "/apis/gameshard.io/v1alpha1/namespaces/{ns}/gameshards"
        ))
        .create(&PostParams::default(), serde_json::to_vec(&bad).expect("JSON"))
        .expect("a request");
        match admin.request::<Value>(post).await {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains(message) => {}
            Err(e) => failures.push(format!("{what}: {e}; expected {message:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// One scenario: each request of the operator's job, then each refusal.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_service_account_may_do_the_operators_job_and_nothing_else() {
    let Some(cp) = ControlPlane::shared() else { return };
    let admin = cp.admin().await.expect("admin client");
    let ns = cp.namespace(&admin, "rbac").await.expect("namespace");
    let Some((release, release_ns)) = chart::install(cp, &admin, &ns).await else { return };
    let account =
        release.of_kind("ServiceAccount")[0]["metadata"]["name"].as_str().expect("name").to_owned();
    let (_, operator) = cp.service_account(&admin, &release_ns, &account).await.expect("token");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    for name in [CREDENTIALS, "unrelated"] {
        let secret: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"k": "v"}}))
                .expect("Secret");
        secrets.create(&PostParams::default(), &secret).await.expect("Secret created");
    }
    let shards: Api<GameShard> = Api::namespaced(admin.clone(), &ns);
    shards
        .create(&PostParams::default(), &shard_from(smallest(&ns, "zone")))
        .await
        .expect("created");

    // What the operator does: read shards and their Secret, apply children, write
    // status, list pods, record events, hold its Lease.
    let as_op = |c: &Client| c.clone();
    let op_shards: Api<GameShard> = Api::namespaced(as_op(&operator), &ns);
    op_shards.list(&ListParams::default()).await.expect("list GameShards");
    let status = json!({"apiVersion": "gameshard.io/v1alpha1", "kind": "GameShard", "status": {"replicas": 0}});
    op_shards
        .patch_status(
            "zone",
            &PatchParams::apply("gameshard-operator").force(),
            &Patch::Apply(status),
        )
        .await
        .expect("apply the status");
    Api::<Secret>::namespaced(as_op(&operator), &ns)
        .get(CREDENTIALS)
        .await
        .expect("get the named Secret");
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "zone"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}}, "serviceName": "zone",
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    Api::<StatefulSet>::namespaced(as_op(&operator), &ns)
        .patch("zone", &PatchParams::apply("gameshard-operator").force(), &Patch::Apply(sts))
        .await
        .expect("apply a StatefulSet");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "zone"}, "spec": {"clusterIP": "None", "ports": [{"port": 9100}]}});
    Api::<Service>::namespaced(as_op(&operator), &ns)
        .patch("zone", &PatchParams::apply("gameshard-operator").force(), &Patch::Apply(svc))
        .await
        .expect("apply a Service");
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "zone"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}}});
    Api::<PodDisruptionBudget>::namespaced(as_op(&operator), &ns)
        .patch("zone", &PatchParams::apply("gameshard-operator").force(), &Patch::Apply(pdb))
        .await
        .expect("apply a PodDisruptionBudget");
    Api::<Pod>::namespaced(as_op(&operator), &ns)
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let recorder = kube::runtime::events::Recorder::new(
        as_op(&operator),
        kube::runtime::events::Reporter { controller: "gameshard-operator".into(), instance: None },
    );
    let shard = shards.get("zone").await.expect("shard");
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "Test".into(),
                note: None,
                action: "Test".into(),
                secondary: None,
            },
            &shard.object_ref(&()),
        )
        .await
        .expect("record an event");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "gameshard-operator"}, "spec": {"holderIdentity": "x"}});
    Api::<Lease>::namespaced(as_op(&operator), &release_ns)
        .patch("gameshard-operator", &PatchParams::apply("x"), &Patch::Apply(lease))
        .await
        .expect("apply its Lease");

    // What it has no business doing.
    let forbidden = |what: &str, result: Result<(), kube::Error>| match result {
        Err(kube::Error::Api(e)) if e.code == 403 => None,
        other => Some(format!("{what}: {other:?}")),
    };
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("Pod");
    let refusals = [
        forbidden(
            "get an unrelated Secret",
            Api::<Secret>::namespaced(as_op(&operator), &ns).get("unrelated").await.map(drop),
        ),
        forbidden(
            "list Secrets",
            Api::<Secret>::namespaced(as_op(&operator), &ns)
                .list(&ListParams::default())
                .await
                .map(drop),
        ),
        forbidden(
            "create a Pod",
            Api::<Pod>::namespaced(as_op(&operator), &ns)
                .create(&PostParams::default(), &pod)
                .await
                .map(drop),
        ),
        forbidden(
            "delete a Pod",
            Api::<Pod>::namespaced(as_op(&operator), &ns)
                .delete("p", &DeleteParams::default())
                .await
                .map(drop),
        ),
        forbidden(
            "delete a GameShard",
            op_shards.delete("zone", &DeleteParams::default()).await.map(drop),
        ),
        forbidden(
            "read StatefulSets elsewhere",
            Api::<StatefulSet>::namespaced(as_op(&operator), "default")
                .list(&ListParams::default())
                .await
                .map(drop),
        ),
        forbidden(
            "read Leases of other namespaces",
            Api::<Lease>::namespaced(as_op(&operator), "kube-system")
                .list(&ListParams::default())
                .await
                .map(drop),
        ),
    ];
    let unexpected: Vec<String> = refusals.into_iter().flatten().collect();
    assert!(unexpected.is_empty(), "allowed, or not refused with 403: {unexpected:#?}");
}

/// The Apache Kafka broker this test binary shares (topics are named per test); `None`
/// (after saying why) when Kafka is not installed.
fn broker() -> Option<&'static Broker> {
    Broker::shared().expect("broker")
}

// One scenario, in the order a shard lives: created, changed, paused, deleted.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_the_example_rolls_on_change_respects_pause_and_gc_removes_children()
 {
    let Some(cp) = ControlPlane::shared() else { return };
    let Some(broker) = broker() else { return };
    let admin = cp.admin().await.expect("admin client");
    let ns = cp.namespace(&admin, "reconcile").await.expect("namespace");
    let Some((release, release_ns)) = chart::install(cp, &admin, &ns).await else { return };
    let shard = example(&ns, &broker.bootstrap());
    let name = shard["metadata"]["name"].as_str().expect("name").to_owned();
    let input = shard["spec"]["kafka"]["inputTopic"].as_str().expect("topic").to_owned();
    kafka::create_topics(&broker.bootstrap(), &[(&input, 4)]).expect("input topic");
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": CREDENTIALS}, "stringData": {"client.id": "gameshard-test"}}),
    )
    .expect("Secret");
    Api::<Secret>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret");
    let mut operator = start_operator(cp, &admin, &release, &release_ns, "operator-a").await;
    let shards: Api<GameShard> = Api::namespaced(admin.clone(), &ns);
    shards.create(&PostParams::default(), &shard_from(shard)).await.expect("created");

    let sts_api: Api<StatefulSet> = Api::namespaced(admin.clone(), &ns);
    let sts = eventually("the StatefulSet", Duration::from_secs(60), || async {
        sts_api.get_opt(&name).await.ok().flatten()
    })
    .await;
    let spec = sts.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(2), "4 partitions at 2 per pod");
    assert_eq!(sts.owner_references()[0].kind, "GameShard");
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), &ns);
    for svc in [name.clone(), format!("{name}-metrics")] {
        eventually(&format!("Service {svc}"), Duration::from_secs(30), || async {
            services.get_opt(&svc).await.ok().flatten()
        })
        .await;
    }
    eventually("the PodDisruptionBudget", Duration::from_secs(30), || async {
        pdbs.get_opt(&name).await.ok().flatten()
    })
    .await;
    let status = eventually("a status with conditions", Duration::from_secs(30), || async {
        let s = shards.get(&name).await.ok()?.status?;
        (s.conditions.len() == 5 && s.replicas == 2).then_some(s)
    })
    .await;
    let by = |t: &str| status.conditions.iter().find(|c| c.type_ == t).expect("condition").clone();
    assert_eq!(by("Ready").reason, "PodsNotReady", "no pod runs yet: {:?}", status.conditions);
    assert_eq!(by("Degraded").status, "False", "{:?}", status.conditions);
    // Autoscaling is Off in the example scaled down here, and no pod runs to measure.
    assert_eq!(by("ScalingLimited").reason, "AutoscalingOff", "{:?}", status.conditions);
    assert_eq!(by("SLOBreached").status, "Unknown", "{:?}", status.conditions);
    assert_eq!(status.partitions, Some(4));

    // The printer columns, read as `kubectl get gs` reads them.
    let request =
        http::Request::get(format!("/apis/gameshard.io/v1alpha1/namespaces/{ns}/gameshards"))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .expect("request");
    let table: Value =
        serde_json::from_str(&admin.request_text(request).await.expect("a Table")).expect("JSON");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Partitions", "Replicas", "Ready", "P99", "Target", "Epoch", "Age"]
    );
    // `kubectl get` shows the columns of priority 0; `-o wide` the Epoch too.
    let wide: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) > 0)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(wide, ["Epoch"]);
    let cells = &table["rows"][0]["cells"];
    assert_eq!(
        (&cells[0], &cells[1], &cells[2], &cells[3], &cells[5]),
        (&json!(name), &json!(4), &json!(2), &json!(0), &json!(2)),
        "{table}"
    );

    // A spec change rolls the StatefulSet: a new pod template revision.
    let before = sts_api.get(&name).await.expect("sts");
    let revision = |s: &StatefulSet| s.status.as_ref().and_then(|s| s.update_revision.clone());
    let first_revision = eventually("a first revision", Duration::from_secs(30), || async {
        revision(&sts_api.get(&name).await.ok()?)
    })
    .await;
    let change = json!({"spec": {"latency": {"p99TargetMs": 5.0}}});
    shards.patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await.expect("patched");
    let rolled = eventually("a new revision", Duration::from_secs(60), || async {
        let s = sts_api.get(&name).await.ok()?;
        (revision(&s).is_some_and(|r| r != first_revision)).then_some(s)
    })
    .await;
    let args = &rolled.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod").containers
        [0]
    .args;
    assert!(
        args.iter().flatten().any(|a| a == "5"),
        "the new target is in the arguments: {args:?}"
    );
    assert!(rolled.metadata.generation > before.metadata.generation);

    // Paused: a spec change changes nothing.
    let pause = json!({"spec": {"paused": true}});
    shards.patch(&name, &PatchParams::default(), &Patch::Merge(&pause)).await.expect("paused");
    eventually("Progressing=Paused", Duration::from_secs(30), || async {
        let s = shards.get(&name).await.ok()?.status?;
        s.conditions.iter().any(|c| c.type_ == "Progressing" && c.reason == "Paused").then_some(())
    })
    .await;
    let generation = sts_api.get(&name).await.expect("sts").metadata.generation;
    let change = json!({"spec": {"partitionsPerPod": 1, "latency": {"p99TargetMs": 9.0}}});
    shards.patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await.expect("patched");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let paused = sts_api.get(&name).await.expect("sts");
    assert_eq!(
        paused.metadata.generation, generation,
        "a paused shard's StatefulSet is left alone"
    );
    assert_eq!(paused.spec.as_ref().and_then(|s| s.replicas), Some(2));

    // Deleting the shard removes every child through the garbage collector.
    shards.delete(&name, &DeleteParams::default()).await.expect("deleted");
    eventually("the children are collected", Duration::from_secs(60), || async {
        let gone = sts_api.get_opt(&name).await.ok()?.is_none()
            && services.get_opt(&name).await.ok()?.is_none()
            && services.get_opt(&format!("{name}-metrics")).await.ok()?.is_none()
            && pdbs.get_opt(&name).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;

    let metrics = operator.metrics().expect("operator metrics");
    assert!(
        metrics.contains(&format!("gameshard_operator_reconciliations_total{{result=\"success\",shard=\"{name}\",shard_namespace=\"{ns}\"}}")),
        "{metrics}"
    );
    assert!(
        operator.exited().expect("status").is_none(),
        "the operator is still running:\n{}",
        operator.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_operators_leads_and_a_killed_leader_hands_over_within_the_lease_duration() {
    use gameshard_operator::leader::LEASE_DURATION;
    let Some(cp) = ControlPlane::shared() else { return };
    let admin = cp.admin().await.expect("admin client");
    let ns = cp.namespace(&admin, "leader").await.expect("namespace");
    let Some((release, release_ns)) = chart::install(cp, &admin, &ns).await else { return };
    assert!(release.operator_args().expect("args").contains(&"--leader-election".to_owned()));
    let mut a = start_operator(cp, &admin, &release, &release_ns, "operator-a").await;
    let mut b = start_operator(cp, &admin, &release, &release_ns, "operator-b").await;
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &release_ns);
    let holder = || async {
        leases.get_opt("gameshard-operator").await.ok().flatten()?.spec?.holder_identity
    };
    let first = eventually("a leader", Duration::from_secs(30), || async {
        holder().await.filter(|h| !h.is_empty())
    })
    .await;
    // The standby keeps standing by.
    tokio::time::sleep(LEASE_DURATION / 3).await;
    assert_eq!(holder().await.as_deref(), Some(first.as_str()), "the lease stays with its holder");
    let leader_metric = |op: &Operator| {
        op.metrics().unwrap_or_default().lines().any(|l| l == "gameshard_operator_leader 1")
    };
    let (leader, standby, next) =
        if first == "operator-a" { (&mut a, &b, "operator-b") } else { (&mut b, &a, "operator-a") };
    assert!(leader_metric(leader), "the leader says so:\n{}", leader.log_text());
    assert!(!leader_metric(standby), "the standby does not lead");

    let killed = Instant::now();
    leader.kill9();
    eventually("the standby takes over", LEASE_DURATION + Duration::from_secs(5), || async {
        (holder().await.as_deref() == Some(next)).then_some(())
    })
    .await;
    let handover = killed.elapsed();
    eprintln!("handover took {handover:?} (lease duration {LEASE_DURATION:?})");
    assert!(handover <= LEASE_DURATION + Duration::from_secs(2), "handover took {handover:?}");
}

// One scenario, from the GameShard to its pods, their updates and the status.
#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_runs_pods_through_the_node_agent_with_exact_updates_and_an_observed_p99() {
    let Some(cp) = ControlPlane::shared() else { return };
    let Some(broker) = broker() else { return };
    let admin = cp.admin().await.expect("admin client");
    let ns = cp.namespace(&admin, "loop").await.expect("namespace");
    let Some((release, release_ns)) = chart::install(cp, &admin, &ns).await else { return };
    let bootstrap = broker.bootstrap();
    let mut shard = example(&ns, &bootstrap);
    // No volumes are mounted by the node agent: the Kafka settings travel in the spec.
    shard["spec"]["kafka"].as_object_mut().expect("kafka").remove("credentialsSecret");
    // Snapshots and commits often, so the short run exercises them.
    merge(&mut shard, json!({"spec": {"dataplane": {"snapshotEverySeconds": 5}}}));
    let name = shard["metadata"]["name"].as_str().expect("name").to_owned();
    let input = shard["spec"]["kafka"]["inputTopic"].as_str().expect("topic").to_owned();
    let output = shard["spec"]["kafka"]["outputTopic"].as_str().expect("topic").to_owned();
    kafka::create_topics(&bootstrap, &[(&input, 4)]).expect("input topic");

    let dataplane = gameshard_e2e::harness::dataplane::binary().expect("gameshard-dataplane");
    let agent = NodeAgent::start(admin.clone(), &ns, &format!("node-{ns}"), &dataplane)
        .await
        .expect("node agent");
    let mut operator = start_operator(cp, &admin, &release, &release_ns, "operator-a").await;
    let shards: Api<GameShard> = Api::namespaced(admin.clone(), &ns);
    shards.create(&PostParams::default(), &shard_from(shard)).await.expect("created");

    let ready = |s: &gameshard_crds::GameShardStatus| {
        s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    };
    eventually(
        "the shard is Ready: both pods run and pass /readyz",
        Duration::from_secs(120),
        || async {
            let s = shards.get(&name).await.ok()?.status?;
            ready(&s).then_some(())
        },
    )
    .await;
    let pods = agent.pods();
    assert_eq!(pods, [format!("{name}-0"), format!("{name}-1")], "errors: {:?}", agent.errors());
    let ips: Vec<_> = pods.iter().map(|p| agent.pod_ip(p).expect("an IP")).collect();
    assert_ne!(ips[0], ips[1], "each pod has its own address");
    let pod_api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let reported = pod_api.get(&pods[0]).await.expect("pod").status.expect("status").pod_ip;
    assert_eq!(reported, Some(ips[0].to_string()));

    // Events in, exact updates out, through both pods' data planes: half at once, the
    // rest a little at a time, so that every window between two of the operator's
    // scrapes (at least 30 s apart) has updates in it.
    let records = gameshard_e2e::verify::stream(9, 200, 4, 2400, 16);
    let writer = kafka::Writer::new(&bootstrap).expect("producer");
    let send = |batch: &[(i32, Vec<u8>)]| {
        let out: Vec<_> = batch.iter().map(|(p, v)| kafka::Outgoing::value(*p, v)).collect();
        writer.send(&input, &out).expect("produce");
        writer.flush().expect("flush");
    };
    let (first, rest) = records.split_at(200);
    send(first);
    let sent = std::cell::Cell::new(0);
    let status = eventually("an observed p99 in the status", Duration::from_secs(180), || {
        let from = sent.get();
        let to = (from + 2).min(rest.len());
        send(&rest[from..to]);
        sent.set(to);
        async {
            let s = shards.get(&name).await.ok()?.status?;
            s.observed_p99_ms.is_some().then_some(s)
        }
    })
    .await;
    send(&rest[sent.get()..]);
    let p99 = status.observed_p99_ms.expect("p99");
    assert!(p99 > 0.0 && p99 < 5000.0, "observed p99 {p99} ms");
    eprintln!("observed p99 {} ({p99} ms)", status.observed_p99.clone().unwrap_or_default());

    chart::wait_exact(&bootstrap, (&input, &output), 4, &agent, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Deleting the shard stops its processes through the pods' graceful deletion.
    shards.delete(&name, &DeleteParams::default()).await.expect("deleted");
    eventually("the pods are gone", Duration::from_secs(90), || async {
        (pod_api.list(&ListParams::default()).await.ok()?.items.is_empty()
            && agent.pods().is_empty())
        .then_some(())
    })
    .await;
    assert!(operator.exited().expect("status").is_none(), "{}", operator.log_text());
}
