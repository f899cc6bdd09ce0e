//! The gameshard chart on a [`ControlPlane`], the way the tests on a real API server use
//! it: installed by real Helm to watch one namespace, its operator started as the
//! chart's service account, and GameShards made from the example of `examples/`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use gameshard_crds::GameShard;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

use super::controlplane::ControlPlane;
use super::helm::{self, Release};
use super::kafka;
use super::nodeagent::NodeAgent;
use super::operator::Operator;
use crate::verify;

/// Where the operator runs, as the chart's values put it.
pub const OPERATOR_NAMESPACE_PREFIX: &str = "gameshard-system";
/// The Secret the test shards name for their Kafka settings.
pub const CREDENTIALS: &str = "kafka-credentials";

/// Polls `check` every 200 ms until it returns `Some`, for at most `timeout`; panics
/// naming `what` when it never does.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_seen(what, timeout, || {
        let answer = check();
        async { answer.await.ok_or_else(|| "nothing yet".to_owned()) }
    })
    .await
}

/// Polls `check` as [`eventually`] does; `check` answers `Err` with what it saw instead,
/// and the panic shows the last of it.
pub async fn eventually_seen<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {timeout:?}; last seen: {seen}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the chart's CRD, installed by Helm from crds/, is Established.
pub async fn crd_established(admin: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    eventually("the GameShard CRD is Established", Duration::from_secs(30), || async {
        let crd = crds.get_opt("gameshards.gameshard.io").await.ok().flatten()?;
        let established =
            crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// A Helm release of the chart managing `watched`, with the operator's namespace; `None`
/// (after saying why) when Helm's library is not installed.
pub async fn install(
    cp: &ControlPlane,
    admin: &Client,
    watched: &str,
) -> Option<(Release, String)> {
    let release_ns = cp.namespace(admin, OPERATOR_NAMESPACE_PREFIX).await.expect("namespace");
    let values = json!({
        "watchNamespaces": [watched],
        "kafkaSecrets": [CREDENTIALS],
        // The Prometheus Operator's kinds are not installed here.
        "prometheusRule": {"enabled": false},
    });
    let release = helm::install(cp, "gameshard", &release_ns, &values).expect("helm install")?;
    crd_established(admin).await;
    Some((release, release_ns))
}

/// The operator as the chart deploys it: its Deployment's arguments and environment,
/// with a token of the chart's service account from the `TokenRequest` API.
pub async fn start_operator(
    cp: &ControlPlane,
    admin: &Client,
    release: &Release,
    release_ns: &str,
    identity: &str,
) -> Operator {
    let account =
        release.of_kind("ServiceAccount")[0]["metadata"]["name"].as_str().expect("name").to_owned();
    let (kubeconfig, _) = cp.service_account(admin, release_ns, &account).await.expect("token");
    let args = release.operator_args().expect("args");
    let env = vec![
        ("POD_NAME".to_owned(), identity.to_owned()),
        ("POD_NAMESPACE".to_owned(), release_ns.to_owned()),
        ("RUST_LOG".to_owned(), "info,gameshard_operator=debug".to_owned()),
    ];
    Operator::start(&kubeconfig, &args, &env).expect("operator started")
}

/// `value` as a GameShard.
pub fn shard_from(value: Value) -> GameShard {
    serde_json::from_value(value).expect("a GameShard")
}

/// Merges `b` into `a` as a JSON merge patch does, without its removals.
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The example GameShard of examples/, scaled down to this machine, in `namespace` on
/// `bootstrap`, every topic named after the namespace (the tests share one broker), and
/// autoscaling Off.
pub fn example(namespace: &str, bootstrap: &str) -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/gameshard.yaml"))
            .expect("examples/gameshard.yaml");
    let mut shard: Value = serde_saphyr::from_str(&text).expect("YAML");
    shard["metadata"]["namespace"] = namespace.into();
    shard["spec"]["kafka"]["config"] = json!({});
    merge(
        &mut shard,
        json!({"spec": {
            "kafka": {
                "bootstrapServers": bootstrap,
                "inputTopic": format!("{namespace}.events"),
                "outputTopic": format!("{namespace}.updates"),
                "deadLetterTopic": format!("{namespace}.dead-letters"),
                "snapshotTopic": format!("{namespace}.snapshots"),
                "controlTopic": format!("{namespace}.control"),
            },
            "partitions": 4,
            "partitionsPerPod": 2,
            "dataplane": {"cpus": 1, "memory": "256Mi"},
            "autoscaling": {"mode": "Off", "minReplicas": 1, "maxReplicas": 4},
        }}),
    );
    shard
}

/// Waits up to `timeout` until the updates on `output` give, entity by entity, the
/// states the reference model gives for everything on `input` (both of `partitions`
/// partitions). On failure, says what differs, with each pod's `/status` and the end of
/// its log.
pub async fn wait_exact(
    bootstrap: &str,
    (input, output): (&str, &str),
    partitions: i32,
    agent: &NodeAgent,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let updates = kafka::read_all(bootstrap, output, partitions).map_err(|e| e.to_string())?;
        let records = kafka::read_all(bootstrap, input, partitions).map_err(|e| e.to_string())?;
        let Some(why) = verify::differences(&updates, &records) else { return Ok(()) };
        if Instant::now() > deadline {
            let mut report = String::new();
            for pod in agent.pods() {
                let status = agent
                    .pod_ip(&pod)
                    .and_then(|ip| super::dataplane::get((ip, 9100).into(), "/status").ok())
                    .map(|(_, body)| body)
                    .unwrap_or_default();
                let log = super::controlplane::tail(&agent.log(&pod), 15);
                let _ = write!(report, "\n--- {pod} /status: {status}\n{log}");
            }
            return Err(format!(
                "the updates do not match the model within {timeout:?}: {why}{report}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
