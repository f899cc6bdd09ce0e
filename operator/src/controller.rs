//! The reconciler: reads a GameShard and what Kafka holds, applies the desired objects
//! with server-side apply, publishes the partition assignment, and writes the status.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use gameshard_crds::{GameShard, GameShardStatus, PodAssignment};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::autoscaler;
use crate::desired::{self, FIELD_MANAGER, Inputs};
use crate::handoff::{self, Driver, Seen, Target};
use crate::kube_scaler::{PodEndpoints, ScaleSubresource};
use crate::metrics::{Metrics, ShardGauges};
use crate::scaler::{self, Pacing, Scalers};
use crate::signals::{Fetch, HttpClient};
use crate::status::{self, Observed, Problem, Scaling};
use crate::topics::{self, Cluster, Kafka, KafkaError};
use crate::{Error, Result};

/// How often a healthy shard is looked at again.
const RESYNC: Duration = Duration::from_secs(60);
/// How soon a shard with a problem is looked at again.
const RETRY: Duration = Duration::from_secs(15);
/// How soon a shard whose partitions are moving is looked at again: a scale-down
/// removes its pods once their partitions have left.
const MOVING: Duration = Duration::from_secs(2);

/// The finalizer that lets a deleted shard's control-topic messages and metric series
/// go before the shard does.
pub const FINALIZER: &str = "gameshard.io/cleanup";

/// How long cleaning up a deleted shard's control-topic messages is retried before it
/// is given up (the cluster may be gone for good), with a Warning event.
const CLEANUP_PATIENCE: Duration = Duration::from_mins(2);

/// The handoff driver of each shard, with what it was started on.
#[derive(Default)]
pub struct Drivers {
    running: Mutex<HashMap<(String, String), Running>>,
}

struct Running {
    cluster: Cluster,
    topic: String,
    driver: Arc<Driver>,
}

impl Drivers {
    /// The driver of shard `key` on `topic` of `cluster`, started (or restarted, when
    /// either changed) now if need be.
    pub fn get<K: Kafka>(
        &self,
        kafka: &K,
        key: (&str, &str),
        cluster: &Cluster,
        topic: &str,
    ) -> Arc<Driver> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (key.0.to_owned(), key.1.to_owned());
        if let Some(r) = running.get(&key)
            && r.cluster == *cluster
            && r.topic == topic
        {
            return Arc::clone(&r.driver);
        }
        let driver = Arc::new(Driver::start(kafka.control(cluster, topic), key.1.clone()));
        running.insert(
            key,
            Running {
                cluster: cluster.clone(),
                topic: topic.to_owned(),
                driver: Arc::clone(&driver),
            },
        );
        driver
    }

    /// What the driver of shard (`namespace`, `name`) has seen, if it runs.
    pub fn seen(&self, namespace: &str, name: &str) -> Option<Seen> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.get(&(namespace.to_owned(), name.to_owned())).map(|r| r.driver.seen())
    }

    /// Stops the driver of a deleted shard; returns what it saw.
    pub fn stop(&self, namespace: &str, name: &str) -> Option<Seen> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        running.remove(&(namespace.to_owned(), name.to_owned())).map(|r| r.driver.seen())
    }
}

/// What the reconciler needs.
pub struct Context<K, S = HttpClient> {
    /// Kubernetes client.
    pub client: Client,
    /// Kafka operations.
    pub kafka: K,
    /// Fetches the data-plane pods' metrics and Prometheus queries, for the autoscaler.
    pub http: S,
    /// Each shard's autoscaler loop; reconcile starts and updates them, and writes what
    /// they report into the status.
    pub scalers: Scalers,
    /// Shards whose autoscaler has something new for the status: the controller
    /// reconciles them.
    pub refresh: tokio::sync::broadcast::Sender<ObjectRef<GameShard>>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Who reports them.
    pub reporter: Reporter,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Data-plane image for shards that name none.
    pub default_image: String,
    /// Whether the cluster serves the Prometheus Operator's ServiceMonitor.
    pub service_monitors: bool,
    /// Each shard's handoff driver.
    pub drivers: Drivers,
}

impl<K, S> Context<K, S> {
    /// A context reporting Events as `reporter`.
    pub fn new(
        client: Client,
        kafka: K,
        http: S,
        metrics: Metrics,
        default_image: String,
        service_monitors: bool,
        reporter: Reporter,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter.clone());
        // Refreshes are rare (a decision, a condition changing): a few per shard and
        // interval at most; a receiver that lags drops some, and its resync covers them.
        let (refresh, _) = tokio::sync::broadcast::channel(64);
        Self {
            client,
            kafka,
            http,
            scalers: Scalers::default(),
            refresh,
            recorder,
            reporter,
            metrics,
            default_image,
            service_monitors,
            drivers: Drivers::default(),
        }
    }

    /// The same context with the autoscaler loops paced by `pacing` (tests tick them by
    /// hand with [`Pacing::Manual`]).
    #[must_use]
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.scalers = Scalers::new(pacing);
        self
    }
}

/// The reporter of the operator's Events.
pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter { controller: FIELD_MANAGER.to_owned(), instance }
}

/// Reconciles one GameShard, behind the finalizer that cleans up after its deletion.
pub async fn reconcile<K: Kafka, S: Fetch>(
    shard: Arc<GameShard>,
    ctx: Arc<Context<K, S>>,
) -> Result<Action> {
    let started = Instant::now();
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    let api: Api<GameShard> = Api::namespaced(ctx.client.clone(), &ns);
    // A problem outside the cluster is a served reconcile with a Degraded status, and a
    // failure for the metric.
    let problem = Mutex::new(None);
    let result = finalizer(&api, FINALIZER, shard, |event| async {
        let outcome = match event {
            finalizer::Event::Apply(shard) => serve(&shard, &ctx).await?,
            finalizer::Event::Cleanup(shard) => cleanup(&shard, &ctx).await?,
        };
        Ok(match outcome {
            Outcome::Served => Action::requeue(RESYNC),
            Outcome::Moving => Action::requeue(MOVING),
            Outcome::Problem(p) => {
                *problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(p.reason());
                Action::requeue(RETRY)
            }
            Outcome::Deleted => Action::await_change(),
        })
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    let failure = match &result {
        Ok(_) => *problem.lock().unwrap_or_else(PoisonError::into_inner),
        Err(e) => Some(e.metric_label()),
    };
    ctx.metrics.reconciled(&ns, &name, started.elapsed().as_secs_f64(), failure);
    result
}

/// What a reconciliation found.
#[derive(Debug)]
pub enum Outcome {
    /// The shard is served as specified (or paused).
    Served,
    /// The shard is served, and partitions are moving between its pods.
    Moving,
    /// Something outside the cluster stops it; reported as Degraded.
    Problem(Problem),
    /// The shard is being deleted: its control-topic messages and metric series went,
    /// its objects go with it through their owner references, and its topics stay
    /// (they hold the game's data).
    Deleted,
}

async fn serve<K: Kafka, S: Fetch>(shard: &GameShard, ctx: &Context<K, S>) -> Result<Outcome> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);

    if shard.spec.paused {
        let known = shard.status.as_ref().and_then(|s| s.partitions).or(shard.spec.partitions);
        if let Some(partitions) = known {
            autoscale(shard, ctx, partitions)?;
        }
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

    autoscale(shard, ctx, partitions)?;
    let replicas = desired::replicas_for(shard, partitions);
    let names = desired::pod_names(shard, replicas);
    let Steering { seen, pending, running } =
        steer(shard, ctx, &cluster, partitions, &names).await?;
    let previous = shard.status.clone().unwrap_or_default();
    // Until the driver has read the control topic, which pods hold partitions is not
    // known: no pod is removed meanwhile.
    let running = if seen.caught_up { running } else { running.max(previous.replicas) };
    let inputs = Inputs { shard, partitions, replicas: running, default_image: &ctx.default_image };

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
    if previous.replicas != 0 && previous.replicas != running {
        publish_event(
            ctx,
            shard,
            EventType::Normal,
            "Scaled",
            "Scale",
            &format!("from {} to {running} pods", previous.replicas),
        )
        .await;
    }

    let in_flight =
        seen.log.assignment.as_ref().map_or(0, |a| handoff::in_flight(&seen.log, a, &names).len());
    let moving = pending || in_flight > 0 || running > replicas;
    let observed = Observed { moving: moving.then_some(in_flight), ..observe(shard, Some(&sts)) };
    let status = GameShardStatus {
        partitions: Some(partitions),
        assignment: status_assignment(&seen),
        assignment_epoch: seen.log.assignment.as_ref().map(|a| a.epoch as i64),
        handoffs_in_flight: in_flight as i32,
        ..previous
    };
    write_status(shard, ctx, &observed, status).await?;
    Ok(if moving { Outcome::Moving } else { Outcome::Served })
}

/// Starts the shard's autoscaler loop, or gives it the current spec.
fn autoscale<K, S: Fetch>(shard: &GameShard, ctx: &Context<K, S>, partitions: i32) -> Result<()> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    let config = scaler::Config::of(shard, desired::replicas_for(shard, partitions), partitions);
    ctx.scalers.ensure(&ns, &name, config, || scaler::Shard {
        namespace: ns.clone(),
        name: name.clone(),
        endpoints: PodEndpoints::new(
            Api::namespaced(ctx.client.clone(), &ns),
            desired::selector(shard),
            desired::ADMIN_PORT as u16,
        ),
        actuator: ScaleSubresource::new(
            shard,
            Api::namespaced(ctx.client.clone(), &ns),
            ctx.reporter.clone(),
            ctx.refresh.clone(),
        ),
        fetch: ctx.http.clone(),
        metrics: ctx.metrics.clone(),
    });
    Ok(())
}

/// Where the shard's partitions are going, and the pods that must run meanwhile.
struct Steering {
    seen: Seen,
    /// The driver has more to publish (or has not read the topic yet).
    pending: bool,
    /// Pods to run: the shard's, or more while a removed pod still holds partitions.
    running: i32,
}

/// Points the shard's handoff driver at its pods: it moves partitions one at a time to
/// the pods that are ready, and the pods that still hold partitions keep running until
/// they have handed them over.
async fn steer<K: Kafka, S>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    cluster: &Cluster,
    partitions: i32,
    names: &[String],
) -> Result<Steering> {
    let (ns, name) = (shard.namespace().ok_or(Error::NotNamespaced)?, shard.name_any());
    let driver = ctx.drivers.get(&ctx.kafka, (&ns, &name), cluster, &shard.control_topic());
    let seen = driver.seen();
    // Until the driver has read the control topic's history it cannot tell a first
    // assignment from a later one: the target waits.
    let mut pending = !seen.caught_up;
    if seen.caught_up {
        // Before the first assignment every pod there will be takes partitions, ready or
        // not, so the pods' readiness is only read after it.
        let ready = if seen.log.assignment.is_some() {
            ready_pods(ctx, &ns, shard).await?
        } else {
            BTreeSet::new()
        };
        let pods = handoff::serving(&seen.log, names, &ready);
        let target = Target {
            shard: name.clone(),
            partitions: partitions as u32,
            pods,
            max_in_flight: usize::try_from(shard.spec.handoff.max_in_flight).unwrap_or(1).max(1),
        };
        pending = !matches!(
            handoff::next(&seen.log, &target, &handoff::plan(&seen.log, &target)),
            handoff::Step::Done
        );
        driver.set_target(target);
    }
    let running = handoff::holders(&seen.log, names)
        .iter()
        .filter_map(|pod| pod.strip_prefix(&format!("{name}-"))?.parse::<i32>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
        .max(names.len() as i32);
    Ok(Steering { seen, pending, running })
}

/// The latest assignment, as the status shows it.
fn status_assignment(seen: &Seen) -> Vec<PodAssignment> {
    seen.log.assignment.as_ref().map_or_else(Vec::new, |a| {
        a.pods
            .iter()
            .map(|p| PodAssignment {
                pod: p.pod.clone(),
                partitions: p.partitions.iter().map(|&n| n as i32).collect(),
            })
            .collect()
    })
}

/// The shard's pods whose Ready condition is true.
async fn ready_pods<K, S>(
    ctx: &Context<K, S>,
    ns: &str,
    shard: &GameShard,
) -> Result<BTreeSet<String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&desired::selector(shard))).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                && pod.metadata.deletion_timestamp.is_none()
        })
        .map(|pod| pod.name_any())
        .collect())
}

/// Cleans up after a deleted shard: its handoff driver, its messages on the control
/// topic (tombstones, which compaction acts on) and its metric series. Given up, with a
/// Warning event, once the cluster has not answered for [`CLEANUP_PATIENCE`].
async fn cleanup<K: Kafka, S: Fetch>(shard: &GameShard, ctx: &Context<K, S>) -> Result<Outcome> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let name = shard.name_any();
    let seen = ctx.drivers.stop(&ns, &name);
    ctx.scalers.stop(&ns, &name);
    let partitions = seen
        .and_then(|s| s.log.assignment.map(|a| a.partitions))
        .or_else(|| shard.status.as_ref().and_then(|s| s.partitions).map(|p| p as u32))
        .or(shard.spec.partitions.map(|p| p as u32))
        .unwrap_or(0);
    let mut keys = vec![gameshard_control::assignment_key(&name)];
    for p in 0..partitions {
        keys.push(gameshard_control::release_key(&name, p));
        keys.push(gameshard_control::acquired_key(&name, p));
    }
    let cleared = match cluster_of(shard, ctx, &ns).await? {
        Ok(cluster) => ctx.kafka.tombstones(&cluster, &shard.control_topic(), &keys).await,
        Err((_, message)) => Err(KafkaError::Refused(message)),
    };
    if let Err(e) = cleared {
        let since = shard
            .meta()
            .deletion_timestamp
            .as_ref()
            .map_or(Duration::ZERO, |t| Timestamp::now().duration_since(t.0).unsigned_abs());
        if since < CLEANUP_PATIENCE {
            return Err(Error::Cleanup(e.to_string()));
        }
        publish_event(
            ctx,
            shard,
            EventType::Warning,
            "CleanupAbandoned",
            "Delete",
            &format!("the control topic's messages of this shard stay: {e}"),
        )
        .await;
    }
    ctx.metrics.forget(&ns, &name);
    Ok(Outcome::Deleted)
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

/// The shard's Kafka cluster with its settings and credentials; or the problem that
/// stops reaching it.
async fn cluster_of<K, S>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    ns: &str,
) -> Result<std::result::Result<Cluster, (Problem, String)>> {
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
    Ok(Ok(Cluster { bootstrap: spec.bootstrap_servers.clone(), settings }))
}

/// The input topic's partition count and the cluster to use, after creating the topics
/// the shard writes; or the problem that stops it.
async fn check_kafka<K: Kafka, S>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    ns: &str,
) -> Result<std::result::Result<(i32, Cluster), (Problem, String)>> {
    let cluster = match cluster_of(shard, ctx, ns).await? {
        Ok(cluster) => cluster,
        Err(problem) => return Ok(Err(problem)),
    };
    let (partitions, created) = match topics::ensure(&ctx.kafka, shard, &cluster).await {
        Ok(found) => found,
        Err(problem) => return Ok(Err(problem)),
    };
    if !created.is_empty() {
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
        moving: None,
        scaling: None,
    }
}

async fn write_status<K, S: Fetch>(
    shard: &GameShard,
    ctx: &Context<K, S>,
    observed: &Observed,
    mut status: GameShardStatus,
) -> Result<()> {
    let ns = shard.namespace().ok_or(Error::NotNamespaced)?;
    let previous = shard.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let report = ctx.scalers.report(&ns, &shard.name_any());
    let observed = Observed {
        scaling: report.as_ref().map(|r| Scaling {
            limited: r.scaling_limited.clone(),
            breached: r.slo_breached.clone(),
        }),
        ..observed.clone()
    };
    status.conditions =
        status::conditions(&observed, shard.meta().generation, &previous, Timestamp::now());
    status.observed_generation = shard.meta().generation;
    status.replicas = observed.replicas;
    status.ready_replicas = observed.ready;
    status.selector = Some(desired::selector(shard));
    // The autoscaler's latest report: reconcile reads it and scrapes nothing itself.
    if let Some(report) = &report {
        let p99 = report.p99();
        status.observed_p99 = p99.map(autoscaler::ms);
        status.observed_p99_ms = p99.map(|s| (s * 1e6).round() / 1e3);
        status.desired_replicas = report.desired;
        status.last_scale_time = report
            .last_scale
            .and_then(|t| Timestamp::try_from(t).ok())
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        status.last_scale_decision.clone_from(&report.last_decision);
    }
    let bounds = desired::replica_bounds(shard, status.partitions.unwrap_or(i32::MAX));
    ctx.metrics.shard(
        &ns,
        &shard.name_any(),
        ShardGauges {
            replicas: observed.replicas,
            ready: observed.ready,
            desired: status.desired_replicas.unwrap_or(observed.replicas),
            min: bounds.0,
            max: bounds.1,
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
pub async fn run<K: Kafka, S: Fetch>(
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
    // The autoscaler's refreshes: each controller reconciles those of its own shards.
    let refresh = futures::stream::unfold(ctx.refresh.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(shard) => return Some((shard, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Controller::new(api, watcher::Config::default().any_semantic())
        .reconcile_on(refresh)
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
