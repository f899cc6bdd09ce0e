//! Local mode: the operator's logic for one GameShard file, driving data-plane
//! processes on this machine instead of a StatefulSet. The topics are checked and
//! created as on a cluster, the assignment and its handoffs go through the same control
//! topic by the same driver, and the pods are `gameshard-dataplane` processes named and
//! started as the StatefulSet's would be (`<shard>-<i>`, the same command line), each
//! with its own admin port on loopback. Editing the file while it runs takes effect,
//! as editing the resource does on a cluster.
//!
//! What a kubelet would do is done here: a pod that exits is started again, a pod is
//! ready while its `/readyz` answers 200, and a pod that is removed gets SIGTERM and,
//! after its grace period, SIGKILL.
//!
//! The shard's autoscaler is the operator's own loop ([`crate::scaler`]) with local
//! parts ([`crate::local_scaler`]): it scrapes the processes on loopback and writes its
//! steps into [`Scale`] in place of the scale subresource. Its configuration follows
//! the file (mode, target, windows, bounds, Prometheus). A step up starts processes,
//! and partitions move to them one at a time once they are ready; a step down moves
//! the partitions off first, then stops the processes that hold none.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use gameshard_control::Move;
use gameshard_crds::GameShard;
use kube::ResourceExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::cpu_limit::CpuLimits;
use crate::desired;
use crate::handoff::{self, Driver, Seen, Target};
use crate::http;
use crate::local_scaler::{LocalPods, LocalScale, Noticed};
use crate::metrics::Metrics;
use crate::scaler::{self, Pacing, Report};
use crate::signals::HttpClient;
use crate::topics::{self, Cluster, Kafka};

/// How often the loop looks at the file, the pods and the control topic.
const TICK: Duration = Duration::from_millis(500);
/// How long a removed pod may drain before it is killed (the StatefulSet's grace).
const GRACE: Duration = Duration::from_secs(30);
/// How long a pod that exited waits before it is started again.
const BACKOFF: Duration = Duration::from_secs(1);
/// How often the topics are checked again once they are fine.
const TOPICS_EVERY: Duration = Duration::from_secs(30);

/// What local mode runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The GameShard file, read again whenever it changes.
    pub file: PathBuf,
    /// The `gameshard-dataplane` binary.
    pub dataplane: PathBuf,
    /// Bootstrap servers in place of the file's `spec.kafka.bootstrapServers`.
    pub bootstrap: Option<String>,
    /// Folder for the pods' logs (`<pod>.log`).
    pub logs: PathBuf,
    /// Extra arguments for every data plane, after the ones the file gives.
    pub extra_args: Vec<String>,
    /// A CPU limit for every data plane, as a pod's `limits.cpu` is on a node.
    pub cpu_limits: Option<Arc<CpuLimits>>,
}

/// One data-plane process as the status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStatus {
    /// Its name, `<shard>-<i>`.
    pub name: String,
    /// Its admin port on 127.0.0.1.
    pub port: u16,
    /// Whether its `/readyz` answered 200 at the last look.
    pub ready: bool,
    /// Whether its process runs (started and not exited), ready or not.
    pub running: bool,
    /// Times it was started again after exiting.
    pub restarts: u32,
    /// Whether it is being removed (draining after SIGTERM).
    pub terminating: bool,
}

/// What local mode sees, for a dashboard or a test.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// The file's GameShard, as last read successfully.
    pub shard: Option<GameShard>,
    /// Why the file's latest version was not taken, if it was not.
    pub file_error: Option<String>,
    /// What stops the shard from being served (a topic, the brokers), if anything.
    pub problem: Option<String>,
    /// Partitions of the input topic.
    pub partitions: u32,
    /// The pods the shard should have.
    pub replicas: i32,
    /// The pods running, by name.
    pub pods: Vec<PodStatus>,
    /// What the handoff driver has read of the control topic.
    pub seen: Seen,
    /// Moves waiting for their new owner.
    pub in_flight: Vec<Move>,
    /// The autoscaler's latest report.
    pub report: Option<Report>,
    /// The autoscaler's latest decisions and freezes, oldest first (at most
    /// [`crate::local_scaler::KEPT_NOTICES`]).
    pub decisions: VecDeque<Noticed>,
}

/// The replicas an autoscaler (or a person, through [`Scale::set`]) asks for, in place
/// of the file's `spec.replicas`, as the scale subresource is on a cluster. Editing the
/// file's `spec.replicas` takes over again.
#[derive(Debug, Default)]
pub struct Scale(AtomicI32);

impl Scale {
    /// Asks for `replicas` pods.
    pub fn set(&self, replicas: i32) {
        self.0.store(replicas.max(1), Relaxed);
    }

    /// The replicas asked for, if any.
    pub fn get(&self) -> Option<i32> {
        Some(self.0.load(Relaxed)).filter(|&r| r > 0)
    }

    fn clear(&self) {
        self.0.store(0, Relaxed);
    }
}

/// A data-plane process.
struct Pod {
    port: u16,
    child: Option<Child>,
    ready: bool,
    restarts: u32,
    /// When SIGTERM was sent, while it is being removed.
    terminating: Option<Instant>,
    /// When it may be started again after exiting.
    restart_at: Option<Instant>,
}

/// Local mode for one GameShard file.
pub struct Local<K> {
    options: Options,
    kafka: K,
    status: Arc<Mutex<Status>>,
    scale: Arc<Scale>,
    modified: Option<SystemTime>,
    file_replicas: Option<i32>,
    driver: Option<(Cluster, String, Driver)>,
    topics_checked: Option<(Instant, Cluster)>,
    pods: BTreeMap<String, Pod>,
    cpus: usize,
    /// The shard's autoscaler loop, with the shard name it runs for.
    scaler: Option<(String, scaler::Handle)>,
    metrics: Metrics,
}

impl<K: Kafka> Local<K> {
    /// Local mode reading `options.file`, reporting into `status`, scaled by `scale`.
    pub fn new(options: Options, kafka: K, status: Arc<Mutex<Status>>, scale: Arc<Scale>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            options,
            kafka,
            status,
            scale,
            modified: None,
            file_replicas: None,
            driver: None,
            topics_checked: None,
            pods: BTreeMap::new(),
            cpus,
            scaler: None,
            metrics: Metrics::new(),
        }
    }

    /// The operator's metrics of this shard (the autoscaler's decisions, desired
    /// replicas and observed p99), for an admin server.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Runs until `shutdown` turns true, then stops every pod (SIGTERM: each drains,
    /// snapshots and commits) and waits for them.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.options.logs)?;
        while !*shutdown.borrow() {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.stop_all().await;
        Ok(())
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One look at the file, the topics, the control topic and the pods.
    async fn tick(&mut self) {
        self.reload();
        let Some(shard) = self.status().shard.clone() else { return };
        let cluster = Cluster {
            bootstrap: shard.spec.kafka.bootstrap_servers.clone(),
            settings: shard.spec.kafka.config.clone(),
        };
        let partitions = match self.check_topics(&shard, &cluster).await {
            Ok(p) => p,
            Err(problem) => {
                self.status().problem = Some(problem);
                self.supervise(&shard, self.pods.len() as i32).await;
                return;
            }
        };
        self.status().problem = None;
        let replicas = match self.scale.get() {
            Some(r) => r.clamp(1, partitions),
            None => desired::replicas_for(&shard, partitions),
        };
        self.autoscale(&shard, replicas, partitions);
        let names = desired::pod_names(&shard, replicas);
        let ready: std::collections::BTreeSet<String> =
            names.iter().filter(|p| self.pods.get(*p).is_some_and(|p| p.ready)).cloned().collect();
        let driver = self.driver(&shard, &cluster);
        let seen = driver.seen();
        if seen.caught_up {
            let pods = handoff::serving(&seen.log, &names, &ready);
            driver.set_target(Target {
                shard: shard.name_any(),
                partitions: partitions as u32,
                pods,
                max_in_flight: usize::try_from(shard.spec.handoff.max_in_flight)
                    .unwrap_or(1)
                    .max(1),
            });
        }
        let name = shard.name_any();
        let holding = handoff::holders(&seen.log, &names)
            .iter()
            .filter_map(|pod| pod.strip_prefix(&format!("{name}-"))?.parse::<i32>().ok())
            .map(|i| i + 1)
            .max()
            .unwrap_or(0);
        // Until the control topic is read, which pods hold partitions is not known.
        let floor = if seen.caught_up { 0 } else { self.pods.len() as i32 };
        let running = replicas.max(holding).max(floor);
        self.supervise(&shard, running).await;
        let in_flight = seen
            .log
            .assignment
            .as_ref()
            .map(|a| handoff::in_flight(&seen.log, a, &names))
            .unwrap_or_default();
        let pods = self.pod_statuses();
        let mut status = self.status();
        status.partitions = partitions as u32;
        status.replicas = replicas;
        status.pods = pods;
        status.in_flight = in_flight;
        status.seen = seen;
    }

    /// Starts the shard's autoscaler loop, or gives it the file's current spec, and
    /// copies its latest report into the status.
    fn autoscale(&mut self, shard: &GameShard, replicas: i32, partitions: i32) {
        let name = shard.name_any();
        let config = scaler::Config::of(shard, replicas, partitions);
        match &self.scaler {
            Some((running, handle)) if *running == name => handle.update(config),
            _ => {
                let loop_shard = scaler::Shard {
                    namespace: shard.namespace().unwrap_or_else(|| "default".to_owned()),
                    name: name.clone(),
                    endpoints: LocalPods::new(Arc::clone(&self.status)),
                    actuator: LocalScale::new(Arc::clone(&self.scale), Arc::clone(&self.status)),
                    fetch: HttpClient::new(),
                    metrics: self.metrics.clone(),
                };
                let handle = scaler::spawn(loop_shard, config, Pacing::Interval);
                self.scaler = Some((name, handle));
            }
        }
        let report = self.scaler.as_ref().and_then(|(_, h)| h.report());
        if report.is_some() {
            self.status().report = report;
        }
    }

    /// Reads the file again if it changed.
    fn reload(&mut self) {
        let modified = std::fs::metadata(&self.options.file).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == self.modified {
            return;
        }
        self.modified = modified;
        match read(&self.options.file, self.options.bootstrap.as_deref()) {
            Ok(shard) => {
                if self.file_replicas != shard.spec.replicas {
                    // The file's replicas were edited: they take over from the autoscaler.
                    self.file_replicas = shard.spec.replicas;
                    self.scale.clear();
                }
                tracing::info!(file = %self.options.file.display(), "GameShard file read");
                let mut status = self.status();
                status.shard = Some(shard);
                status.file_error = None;
            }
            Err(e) => {
                tracing::warn!(file = %self.options.file.display(), error = %e, "GameShard file not taken");
                self.status().file_error = Some(e);
            }
        }
    }

    async fn check_topics(&mut self, shard: &GameShard, cluster: &Cluster) -> Result<i32, String> {
        if let Some((at, checked)) = &self.topics_checked
            && at.elapsed() < TOPICS_EVERY
            && checked == cluster
            && let Some(p) = self.status().seen.log.assignment.as_ref().map(|a| a.partitions)
        {
            return Ok(p as i32);
        }
        match topics::ensure(&self.kafka, shard, cluster).await {
            Ok((partitions, created)) => {
                if !created.is_empty() {
                    tracing::info!(topics = ?created, "topics created");
                }
                self.topics_checked = Some((Instant::now(), cluster.clone()));
                Ok(partitions)
            }
            Err((problem, message)) => Err(format!("{}: {message}", problem.reason())),
        }
    }

    fn driver(&mut self, shard: &GameShard, cluster: &Cluster) -> &Driver {
        let topic = shard.control_topic();
        let stale = self.driver.as_ref().is_none_or(|(c, t, _)| c != cluster || *t != topic);
        if stale {
            let driver = Driver::start(self.kafka.control(cluster, &topic), shard.name_any());
            self.driver = Some((cluster.clone(), topic, driver));
        }
        &self.driver.as_ref().expect("started above").2
    }

    /// Keeps pods `0..running` up and ready-checked, and removes the others.
    async fn supervise(&mut self, shard: &GameShard, running: i32) {
        let wanted = desired::pod_names(shard, running);
        for (i, name) in wanted.iter().enumerate() {
            if !self.pods.contains_key(name) {
                let port = free_port();
                self.pods.insert(
                    name.clone(),
                    Pod {
                        port,
                        child: None,
                        ready: false,
                        restarts: 0,
                        terminating: None,
                        restart_at: None,
                    },
                );
            }
            let (cpus, options) = (self.cpus, self.options.clone());
            let pod = self.pods.get_mut(name).expect("inserted above");
            if pod.terminating.is_some() {
                continue;
            }
            let exited = match &mut pod.child {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                tracing::warn!(pod = %name, %status, "data-plane process exited; starting it again");
                pod.child = None;
                pod.ready = false;
                pod.restarts += 1;
                pod.restart_at = Some(Instant::now() + BACKOFF);
            }
            if pod.child.is_none() && pod.restart_at.is_none_or(|t| Instant::now() >= t) {
                match start(shard, name, i, pod.port, cpus, &options) {
                    Ok(child) => {
                        tracing::info!(pod = %name, port = pod.port, "data-plane process started");
                        pod.child = Some(child);
                        pod.restart_at = None;
                    }
                    Err(e) => {
                        tracing::error!(pod = %name, error = %e, "cannot start the data plane");
                        pod.restart_at = Some(Instant::now() + BACKOFF);
                    }
                }
            }
        }
        // Readiness, as a probe would read it.
        let probes: Vec<(String, u16)> = self
            .pods
            .iter()
            .filter(|(_, p)| p.child.is_some())
            .map(|(n, p)| (n.clone(), p.port))
            .collect();
        let answers = futures::future::join_all(probes.iter().map(|(_, port)| async move {
            http::get(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(1)).await
        }))
        .await;
        for ((name, _), answer) in probes.iter().zip(answers) {
            if let Some(pod) = self.pods.get_mut(name) {
                pod.ready = matches!(answer, Ok((200, _)));
            }
        }
        // Pods past `running` are removed: SIGTERM, then SIGKILL after the grace.
        let extra: Vec<String> =
            self.pods.keys().filter(|n| !wanted.contains(n)).cloned().collect();
        for name in extra {
            let pod = self.pods.get_mut(&name).expect("listed above");
            let gone = pod.child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if gone {
                tracing::info!(pod = %name, "data-plane process removed");
                self.pods.remove(&name);
                if let Some(limits) = &self.options.cpu_limits {
                    limits.remove(&name);
                }
                continue;
            }
            match pod.terminating {
                None => {
                    tracing::info!(pod = %name, "removing the data-plane process");
                    signal(pod, Signal::SIGTERM);
                    pod.terminating = Some(Instant::now());
                }
                Some(at) if at.elapsed() > GRACE => signal(pod, Signal::SIGKILL),
                Some(_) => {}
            }
        }
    }

    fn pod_statuses(&self) -> Vec<PodStatus> {
        self.pods
            .iter()
            .map(|(name, p)| PodStatus {
                name: name.clone(),
                port: p.port,
                ready: p.ready,
                running: p.child.is_some(),
                restarts: p.restarts,
                terminating: p.terminating.is_some(),
            })
            .collect()
    }

    async fn stop_all(&mut self) {
        // No step may land while the pods drain.
        self.scaler = None;
        for pod in self.pods.values_mut() {
            signal(pod, Signal::SIGTERM);
        }
        let deadline = Instant::now() + GRACE;
        for (name, pod) in &mut self.pods {
            let Some(child) = &mut pod.child else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                tracing::warn!(pod = %name, "the data plane did not drain in time; killing it");
                let _ = child.start_kill();
            }
        }
    }
}

/// Reads a GameShard file, with `bootstrap` in place of its brokers when given, and
/// checks the rules the CRD's schema would.
pub fn read(path: &Path, bootstrap: Option<&str>) -> Result<GameShard, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut shard: GameShard = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{} is not a GameShard: {e}", path.display()))?;
    if let Some(b) = bootstrap {
        b.clone_into(&mut shard.spec.kafka.bootstrap_servers);
    }
    if shard.metadata.name.is_none() {
        return Err(format!("{}: metadata.name is required", path.display()));
    }
    let a = &shard.spec.autoscaling;
    if a.max_replicas.is_some_and(|max| a.min_replicas > max) {
        return Err("autoscaling.minReplicas must not exceed autoscaling.maxReplicas".into());
    }
    if let (Some(p), Some(max)) = (shard.spec.partitions, a.max_replicas)
        && max > p
    {
        return Err("autoscaling.maxReplicas must not exceed partitions".into());
    }
    Ok(shard)
}

/// The data plane's command line for pod `name` (the `index`th), as the StatefulSet
/// gives it, with what a kubelet would resolve: the pod name, its own admin address on
/// loopback, and a state-machine core of its own where the machine has enough.
pub fn pod_args(
    shard: &GameShard,
    name: &str,
    index: usize,
    port: u16,
    cpus: usize,
) -> Vec<String> {
    let mut args = Vec::new();
    let mut given = desired::dataplane_args(shard).into_iter();
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--pod-id" => {
                given.next();
                args.extend(["--pod-id".to_owned(), name.to_owned()]);
            }
            "--metrics-addr" => {
                given.next();
                args.extend(["--metrics-addr".to_owned(), format!("127.0.0.1:{port}")]);
            }
            // No Secret is mounted here; credentials come with `spec.kafka.config`.
            "--kafka-config-dir" => {
                given.next();
            }
            _ => args.push(arg),
        }
    }
    args.extend(["--pin-core".to_owned(), (index % cpus.max(1)).to_string()]);
    args
}

fn start(
    shard: &GameShard,
    name: &str,
    index: usize,
    port: u16,
    cpus: usize,
    options: &Options,
) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(options.logs.join(format!("{name}.log")))?;
    let mut child = Command::new(&options.dataplane)
        .args(pod_args(shard, name, index, port, cpus))
        .args(&options.extra_args)
        .env("POD_NAME", name)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    if let (Some(limits), Some(pid)) = (&options.cpu_limits, child.id())
        && let Err(e) = limits.apply(name, pid)
    {
        let _ = child.start_kill();
        return Err(std::io::Error::new(e.kind(), format!("limiting its CPU: {e}")));
    }
    Ok(child)
}

fn signal(pod: &Pod, signal: Signal) {
    if let Some(pid) = pod.child.as_ref().and_then(Child::id) {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(extra: &str) -> GameShard {
        let text = format!(
            "apiVersion: gameshard.io/v1alpha1\nkind: GameShard\nmetadata:\n  name: zone\nspec:\n  kafka:\n    bootstrapServers: far:9092\n    inputTopic: in\n    outputTopic: out\n{extra}"
        );
        serde_saphyr::from_str(&text).unwrap()
    }

    #[test]
    fn a_pods_command_line_is_the_statefulsets_with_what_a_kubelet_resolves() {
        let mut s = shard("");
        s.spec.kafka.credentials_secret = Some(gameshard_crds::SecretRef { name: "creds".into() });
        let args = pod_args(&s, "zone-3", 3, 4567, 2);
        let pairs: Vec<(&str, &str)> =
            args.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
        assert!(pairs.contains(&("--pod-id", "zone-3")), "{args:?}");
        assert!(pairs.contains(&("--metrics-addr", "127.0.0.1:4567")));
        assert!(pairs.contains(&("--pin-core", "1")), "pods spread over the CPUs");
        assert!(pairs.contains(&("--control-topic", "zone.control")));
        assert!(!args.iter().any(|a| a == "--kafka-config-dir" || a.contains("$(")), "{args:?}");
    }

    #[test]
    fn a_file_is_read_with_its_brokers_replaced_and_its_bounds_checked() {
        let dir = std::env::temp_dir().join(format!("gameshard-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zone.yaml");
        std::fs::write(
            &path,
            "apiVersion: gameshard.io/v1alpha1\nkind: GameShard\nmetadata:\n  name: zone\nspec:\n  kafka:\n    bootstrapServers: far:9092\n    inputTopic: in\n    outputTopic: out\n  partitions: 4\n",
        )
        .unwrap();
        let s = read(&path, Some("127.0.0.1:9999")).unwrap();
        assert_eq!(s.spec.kafka.bootstrap_servers, "127.0.0.1:9999");
        std::fs::write(
            &path,
            "apiVersion: gameshard.io/v1alpha1\nkind: GameShard\nmetadata:\n  name: zone\nspec:\n  kafka:\n    bootstrapServers: far:9092\n    inputTopic: in\n    outputTopic: out\n  partitions: 4\n  autoscaling:\n    maxReplicas: 8\n",
        )
        .unwrap();
        assert!(read(&path, None).unwrap_err().contains("maxReplicas"));
        std::fs::write(&path, "not: a shard").unwrap();
        assert!(read(&path, None).unwrap_err().contains("not a GameShard"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_scale_holds_the_autoscalers_replicas_until_cleared() {
        let scale = Scale::default();
        assert_eq!(scale.get(), None);
        scale.set(3);
        assert_eq!(scale.get(), Some(3));
        scale.clear();
        assert_eq!(scale.get(), None);
    }
}
