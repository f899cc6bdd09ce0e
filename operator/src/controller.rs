//! The reconciler: reads a GameShard and what Kafka holds, applies the desired objects
//! with server-side apply, publishes the partition assignment, and writes the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gameshard_crds::control::{ASSIGNMENT_KEY, Assignment};
use gameshard_crds::{GameShard, GameShardStatus};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::desired::{self, FIELD_MANAGER, Inputs};
use crate::latency::{self, Http, Scrape, Windows};
use crate::metrics::{Metrics, ShardGauges};
use crate::status::{self, Observed, Problem};
use crate::topics::{Cluster, Kafka, KafkaError, TopicSpec};
use crate::{Error, Result};

/// How often a healthy shard is looked at again.
const RESYNC: Duration = Duration::from_secs(60);
/// How soon a shard with a problem is looked at again.
const RETRY: Duration = Duration::from_secs(15);

/// What the reconciler needs.
pub struct Context<K, S = Http> {
    /// Kubernetes client.
    pub client: Client,
    /// Kafka operations.
    pub kafka: K,
    /// Reads the data-plane pods' metrics.
    pub scrape: S,
    /// The previous scrape of each shard's pods.
    pub latency: Windows,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Data-plane image for shards that name none.
    pub default_image: String,
    /// Whether the cluster serves the Prometheus Operator's ServiceMonitor.
    pub service_monitors: bool,
}

impl<K, S> Context<K, S> {
    /// A context reporting Events as `reporter`.
    pub fn new(
        client: Client,
        kafka: K,
        scrape: S,
        metrics: Metrics,
        default_image: String,
        service_monitors: bool,
        reporter: Reporter,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            kafka,
            scrape,
            latency: Windows::default(),
            recorder,
            metrics,
            default_image,
            service_monitors,
        }
    }
}

/// The reporter of the operator's Events.
pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter { controller: FIELD_MANAGER.to_owned(), instance }
}

/// Reconciles one GameShard.
pub async fn reconcile<K: Kafka, S: Scrape>(
    shard: Arc<GameShard>,
    ctx: Arc<Context<K, S>>,
) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&shard, &ctx).await;
    let failure = match &result {
        Ok(Outcome::Served | Outcome::Deleted) => None,
        Ok(Outcome::Problem(p)) => Some(p.reason()),
        Err(e) => Some(e.metric_label()),
    };
    let namespace = shard.namespace().unwrap_or_default();
    ctx.metrics.reconciled(&namespace, &shard.name_any(), started.elapsed().as_secs_f64(), failure);
    match result? {
        Outcome::Served => Ok(Action::requeue(RESYNC)),
        Outcome::Problem(_) => Ok(Action::requeue(RETRY)),
        Outcome::Deleted => Ok(Action::await_change()),
    }
}

/// What a reconciliation found.
#[derive(Debug)]
enum Outcome {
    /// The shard is served as specified (or paused).
    Served,
    /// Something outside the cluster stops it; reported as Degraded.
    Problem(Problem),
    /// The shard is being deleted: its objects go with it through their owner
    /// references, and its topics stay (they hold the game's data).
    Deleted,
}

async fn reconcile_inner<K: Kafka, S: Scrape>(
    shard: &GameShard,
    ctx: &Context<K, S>,
) -> Result<Outcome> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    if shard.meta().deletion_timestamp.is_some() {
        ctx.metrics.forget(&ns, &name);
        ctx.latency.forget(&ns, &name);
        return Ok(Outcome::Deleted);
    }
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);

    if shard.spec.paused {
        let sts = sts_api.get_opt(&name).await?;
        let observed = observe(shard, sts.as_ref());
        write_status(shard, ctx, &observed, shard.status.clone().unwrap_or_default()).await?;
        return Ok(Outcome::Served);
    }

    let (partitions, cluster) = match check_kafka(shard, ctx, &ns).await? {
        Ok(found) => found,
        Err((problem, message)) => {
            let sts = sts_api.get_opt(&name).await?;
            let mut observed = observe(shard, sts.as_ref());
            observed.problem = Some((problem, message.clone()));
            publish_event(ctx, shard, EventType::Warning, problem.reason(), "Reconcile", &message)
                .await;
            write_status(shard, ctx, &observed, shard.status.clone().unwrap_or_default()).await?;
            return Ok(Outcome::Problem(problem));
        }
    };

    let replicas = desired::replicas_for(shard, partitions);
    let inputs = Inputs { shard, partitions, replicas, default_image: &ctx.default_image };
    let previous = shard.status.clone().unwrap_or_default();
    let assignment = desired::assignment(partitions, &desired::pod_names(shard, replicas));
    let epoch = match previous.assignment_epoch {
        Some(epoch) if previous.assignment == assignment => epoch,
        epoch => {
            let epoch = epoch.unwrap_or(0) + 1;
            let message =
                Assignment { epoch, shard: name.clone(), partitions, pods: assignment.clone() };
            let value = serde_json::to_vec(&message).expect("an assignment serializes");
            if let Err(e) =
                ctx.kafka.publish(&cluster, &shard.control_topic(), ASSIGNMENT_KEY, &value).await
            {
                let problem = kafka_problem(&e);
                let mut observed = observe(shard, None);
                observed.problem = Some((problem, format!("publishing the assignment: {e}")));
                write_status(shard, ctx, &observed, previous).await?;
                return Ok(Outcome::Problem(problem));
            }
            publish_event(
                ctx,
                shard,
                EventType::Normal,
                "AssignmentPublished",
                "Assign",
                &format!("epoch {epoch}: {partitions} partitions over {replicas} pods"),
            )
            .await;
            epoch
        }
    };

    let sts = apply(shard, ctx, &inputs).await?;
    if shard.meta().generation != previous.observed_generation {
        publish_event(
            ctx,
            shard,
            EventType::Normal,
            "Applied",
            "Apply",
            &format!("{replicas} data-plane pods for {partitions} partitions"),
        )
        .await;
    }
    if previous.replicas != 0 && previous.replicas != replicas {
        publish_event(
            ctx,
            shard,
            EventType::Normal,
            "Scaled",
            "Scale",
            &format!("from {} to {replicas} pods", previous.replicas),
        )
        .await;
    }

    let observed = observe(shard, Some(&sts));
    let status = GameShardStatus {
        partitions: Some(partitions),
        assignment,
        assignment_epoch: Some(epoch),
        desired_replicas: Some(replicas),
        ..previous
    };
    write_status(shard, ctx, &observed, status).await?;
    Ok(Outcome::Served)
}

/// Applies every desired object with server-side apply; returns the StatefulSet as the
/// API server holds it now.
async fn apply<K, S>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    inputs: &Inputs<'_>,
) -> Result<StatefulSet> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let sts = sts_api.patch(&name, &params, &Patch::Apply(&desired::statefulset(inputs))).await?;
    let svc: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    svc.patch(&name, &params, &Patch::Apply(&desired::headless_service(shard))).await?;
    svc.patch(&format!("{name}-metrics"), &params, &Patch::Apply(&desired::metrics_service(shard)))
        .await?;
    let pdb: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    pdb.patch(&name, &params, &Patch::Apply(&desired::disruption_budget(shard))).await?;
    if ctx.service_monitors {
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &ns, &ApiResource::from_gvk(&gvk));
        monitors.patch(&name, &params, &Patch::Apply(&desired::service_monitor(shard))).await?;
    }
    Ok(sts)
}

/// The input topic's partition count and the cluster to use, after creating the topics
/// the shard writes; or the problem that stops it.
async fn check_kafka<K: Kafka, S>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    ns: &str,
) -> Result<std::result::Result<(i32, Cluster), (Problem, String)>> {
    let spec = &shard.spec.kafka;
    let mut settings = spec.config.clone();
    if let Some(secret) = &spec.credentials_secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        match secrets.get_opt(&secret.name).await? {
            Some(s) => {
                for (k, v) in s.data.unwrap_or_default() {
                    settings.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
            }
            None => {
                return Ok(Err((
                    Problem::CredentialsMissing,
                    format!("Secret {:?} does not exist", secret.name),
                )));
            }
        }
    }
    let cluster = Cluster { bootstrap: spec.bootstrap_servers.clone(), settings };
    let mut names = vec![
        spec.input_topic.clone(),
        spec.output_topic.clone(),
        shard.snapshot_topic(),
        shard.control_topic(),
    ];
    names.extend(spec.dead_letter_topic.clone());
    let counts = match ctx.kafka.partitions(&cluster, &names).await {
        Ok(counts) => counts,
        Err(e) => return Ok(Err((kafka_problem(&e), e.to_string()))),
    };
    let Some(partitions) = counts[0] else {
        return Ok(Err((
            Problem::InputTopicMissing,
            format!("input topic {:?} does not exist", spec.input_topic),
        )));
    };
    if let Some(specified) = shard.spec.partitions.filter(|&p| p != partitions) {
        return Ok(Err((
            Problem::PartitionMismatch,
            format!(
                "spec.partitions is {specified} but input topic {:?} has {partitions}",
                spec.input_topic
            ),
        )));
    }
    let mut missing = Vec::new();
    for (i, (name, count)) in names.iter().zip(&counts).enumerate().skip(1) {
        let wanted = if i == 3 { 1 } else { partitions };
        match count {
            None => missing.push(TopicSpec {
                name: name.clone(),
                partitions: wanted,
                config: topic_config(i),
            }),
            Some(have) if *have < wanted => {
                return Ok(Err((
                    Problem::TopicTooSmall,
                    format!("topic {name:?} has {have} partitions; it needs {wanted}"),
                )));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        if let Err(e) = ctx.kafka.create(&cluster, &missing).await {
            return Ok(Err((kafka_problem(&e), e.to_string())));
        }
        let created: Vec<&str> = missing.iter().map(|t| t.name.as_str()).collect();
        publish_event(
            ctx,
            shard,
            EventType::Normal,
            "TopicsCreated",
            "CreateTopics",
            &created.join(", "),
        )
        .await;
    }
    Ok(Ok((partitions, cluster)))
}

/// Settings of the topics the operator creates, by their place in the topic list.
fn topic_config(index: usize) -> Vec<(&'static str, &'static str)> {
    match index {
        // Snapshots: a week, far longer than any snapshot interval; the data plane
        // snapshots every owned partition at least every six hours, idle or not.
        2 => vec![("cleanup.policy", "delete"), ("retention.ms", "604800000")],
        // Control: the latest assignment must stay.
        3 => vec![("cleanup.policy", "compact")],
        _ => Vec::new(),
    }
}

fn kafka_problem(e: &KafkaError) -> Problem {
    match e {
        KafkaError::Unreachable(_) => Problem::BrokerUnreachable,
        KafkaError::Refused(_) => Problem::KafkaRefused,
    }
}

/// What the StatefulSet (if any) says of the pods.
fn observe(shard: &GameShard, sts: Option<&StatefulSet>) -> Observed {
    let status = sts.and_then(|s| s.status.clone()).unwrap_or_default();
    let replicas = sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas).unwrap_or(0);
    Observed {
        problem: None,
        paused: shard.spec.paused,
        replicas,
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
    }
}

async fn write_status<K, S: Scrape>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    observed: &Observed,
    mut status: GameShardStatus,
) -> Result<()> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let previous = shard.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    status.conditions =
        status::conditions(observed, shard.meta().generation, &previous, Timestamp::now());
    status.observed_generation = shard.meta().generation;
    status.replicas = observed.replicas;
    status.ready_replicas = observed.ready;
    let p99 = if observed.ready > 0 {
        let hosts = ready_pod_ips(ctx, shard, &ns).await;
        let port = desired::ADMIN_PORT as u16;
        ctx.latency.p99(&ctx.scrape, (&ns, &shard.name_any()), &hosts, port).await
    } else {
        None
    };
    status.observed_p99 = p99.map(latency::display);
    status.observed_p99_ms = p99.map(|s| (s * 1e6).round() / 1e3);
    ctx.metrics.shard(
        &ns,
        &shard.name_any(),
        ShardGauges {
            replicas: observed.replicas,
            ready: observed.ready,
            desired: status.desired_replicas.unwrap_or(observed.replicas),
            min: shard.spec.replicas.min,
            max: shard.spec.replicas.max,
        },
    );
    let api: Api<GameShard> = Api::namespaced(ctx.client.clone(), &ns);
    let patch =
        json!({"apiVersion": "gameshard.io/v1alpha1", "kind": "GameShard", "status": status});
    api.patch_status(
        &shard.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// The IPs of the shard's ready pods. Scraped by IP, as Prometheus does, because pod
/// DNS names need a cluster DNS that resolves the headless Service from the operator.
/// A failed list only costs this round's p99.
async fn ready_pod_ips<K, S>(ctx: &Context<K, S>, shard: &GameShard, ns: &str) -> Vec<String> {
    let selector: Vec<String> =
        desired::selector_labels(shard).iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match pods.list(&ListParams::default().labels(&selector.join(","))).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|pod| {
                let status = pod.status?;
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(status.pod_ip).flatten()
            })
            .collect(),
        Err(error) => {
            tracing::warn!(shard = %shard.name_any(), %error, "cannot list the shard's pods");
            Vec::new()
        }
    }
}

async fn publish_event<K, S>(
    ctx: &Context<K, S>,
    shard: &GameShard,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &shard.object_ref(&())).await {
        tracing::warn!(%error, reason, "cannot record an event");
    }
}

/// What to do after a failed reconciliation: retry soon.
#[allow(clippy::needless_pass_by_value)] // the signature kube's Controller calls
pub fn error_policy<K, S>(
    shard: Arc<GameShard>,
    error: &Error,
    _ctx: Arc<Context<K, S>>,
) -> Action {
    tracing::warn!(shard = %shard.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// Runs the controller over `api` until `shutdown` resolves.
pub async fn run<K: Kafka, S: Scrape>(
    api: Api<GameShard>,
    ctx: Arc<Context<K, S>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned =
        |config: watcher::Config| config.labels("app.kubernetes.io/managed-by=gameshard-operator");
    let namespace_of = |api: &Api<GameShard>| api.namespace().map(str::to_owned);
    let (sts, svc): (Api<StatefulSet>, Api<Service>) = match namespace_of(&api) {
        Some(ns) => (Api::namespaced(client.clone(), &ns), Api::namespaced(client, &ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    Controller::new(api, watcher::Config::default().any_semantic())
        .owns(sts, owned(watcher::Config::default()))
        .owns(svc, owned(watcher::Config::default()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
            futures::future::ready(())
        })
        .await;
}
