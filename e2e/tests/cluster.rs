//! On a real cluster (kind or k3d): install the chart, apply a GameShard, wait for it to
//! be Ready, produce events and read the updates back, exactly as the model says.
//!
//! Runs only when `GAMESHARD_E2E_KUBECONFIG` names a kubeconfig. It also needs:
//! - `GAMESHARD_E2E_KAFKA`: bootstrap servers reachable from the pods and from here,
//! - `GAMESHARD_E2E_OPERATOR_IMAGE` and `GAMESHARD_E2E_DATAPLANE_IMAGE`: images the
//!   cluster can pull (with kind: `kind load docker-image ...`),
//! - `helm` on `PATH`.
//!
//! See the README's "Testing on a cluster" section.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use gameshard_crds::GameShard;
use gameshard_e2e::harness::kafka;
use gameshard_e2e::verify;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

struct Cluster {
    kubeconfig: PathBuf,
    kafka: String,
    operator_image: String,
    dataplane_image: String,
}

fn cluster() -> Option<Cluster> {
    let Some(kubeconfig) = std::env::var_os("GAMESHARD_E2E_KUBECONFIG") else {
        gameshard_e2e::harness::tools::skip(
            "set GAMESHARD_E2E_KUBECONFIG (and GAMESHARD_E2E_KAFKA, GAMESHARD_E2E_OPERATOR_IMAGE, GAMESHARD_E2E_DATAPLANE_IMAGE) to run against a cluster",
        );
        return None;
    };
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is required with GAMESHARD_E2E_KUBECONFIG"))
    };
    Some(Cluster {
        kubeconfig: kubeconfig.into(),
        kafka: var("GAMESHARD_E2E_KAFKA"),
        operator_image: var("GAMESHARD_E2E_OPERATOR_IMAGE"),
        dataplane_image: var("GAMESHARD_E2E_DATAPLANE_IMAGE"),
    })
}

fn helm(c: &Cluster, args: &[&str]) {
    let status = Command::new("helm")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(args)
        .status()
        .expect("helm runs");
    assert!(status.success(), "helm {args:?}");
}

fn split(image: &str) -> (&str, &str) {
    image.rsplit_once(':').unwrap_or((image, "latest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_a_zone_end_to_end_on_a_cluster() {
    let Some(c) = cluster() else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let ns = format!("gameshard-e2e-{}", std::process::id());
    let (repo, tag) = split(&c.operator_image);
    let (dataplane_repo, dataplane_tag) = split(&c.dataplane_image);
    helm(
        &c,
        &[
            "install",
            "gameshard",
            root.join("charts/gameshard").to_str().expect("path"),
            "--namespace",
            &ns,
            "--create-namespace",
            "--set",
            &format!("image.repository={repo}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            &format!("dataplaneImage.repository={dataplane_repo}"),
            "--set",
            &format!("dataplaneImage.tag={dataplane_tag}"),
            "--wait",
            "--timeout",
            "5m",
        ],
    );

    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&c.kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    let client = Client::try_from(config).expect("client");
    let input = format!("{ns}.events");
    kafka::create_topics(&c.kafka, &[(&input, 4)]).expect("input topic");
    let shard: GameShard = serde_json::from_value(serde_json::json!({
        "apiVersion": "gameshard.io/v1alpha1", "kind": "GameShard",
        "metadata": {"name": "zone", "namespace": ns},
        "spec": {
            "kafka": {"bootstrapServers": c.kafka, "inputTopic": input, "outputTopic": format!("{ns}.updates"), "deadLetterTopic": format!("{ns}.dead")},
            "partitionsPerPod": 2,
            "dataplane": {"cpus": 1, "memory": "256Mi"},
            "autoscaling": {"mode": "Off"},
        }
    }))
    .expect("GameShard");
    let shards: Api<GameShard> = Api::namespaced(client.clone(), &ns);
    shards.create(&PostParams::default(), &shard).await.expect("created");

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let current = shards.get("zone").await.expect("read back");
        let ready = current
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "not Ready in 5 minutes: {:?}", current.status);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    let records = verify::stream(5, 200, 4, 200, 16);
    let w = kafka::Writer::new(&c.kafka).expect("producer");
    let out: Vec<_> = records.iter().map(|(p, v)| kafka::Outgoing::value(*p, v)).collect();
    w.send(&input, &out).expect("produce");
    w.flush().expect("flush");
    // Every update of every record is on the output topic once the group's committed
    // offsets reach the input's end.
    let ends = kafka::high_watermarks(&c.kafka, &input, 4).expect("watermarks");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let updates = kafka::read_all(&c.kafka, &format!("{ns}.updates"), 4).expect("updates");
        let input_records = kafka::read_all(&c.kafka, &input, 4).expect("input");
        let done = verify::fold(&updates).ok() == Some(verify::expected(&input_records));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the updates did not match the model within 2 minutes (input ends {ends:?})"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let dead = verify::dead_letters(
        &kafka::read_all(&c.kafka, &format!("{ns}.dead"), 4).expect("dead letters"),
    )
    .expect("valid");
    let mut unique = dead.clone();
    unique.dedup();
    assert_eq!(
        unique,
        verify::expected_dead_letters(&kafka::read_all(&c.kafka, &input, 4).expect("input"))
    );

    // Pausing stops changes; deleting removes the pods through their owner references.
    let paused = serde_json::json!({"spec": {"paused": true}});
    shards.patch("zone", &PatchParams::default(), &Patch::Merge(&paused)).await.expect("paused");
    shards.delete("zone", &DeleteParams::default()).await.expect("deleted");
    helm(&c, &["uninstall", "gameshard", "--namespace", &ns]);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
