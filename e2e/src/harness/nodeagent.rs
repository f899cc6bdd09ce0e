//! A node agent: plays the scheduler and the kubelet for the pods of one namespace, so
//! that the pods the real StatefulSet controller creates run, as local processes.
//!
//! It registers a Node (and keeps its Lease renewed, as a kubelet does, so the node
//! lifecycle controller leaves it Ready), binds each pending pod of its namespace to that
//! node through the `binding` subresource, and starts the pod's one container as a
//! process of a given binary with the container's arguments and environment: downward-API
//! fields, resource fields, `Secret` and `ConfigMap` keys resolved, and `$(VAR)` expanded
//! the way the kubelet does. It reports the pod's phase, IP, container status and its
//! `Ready` condition from the container's HTTP readiness probe, restarts a process that
//! exits (`restartPolicy: Always`), and, when the pod is deleted, sends SIGTERM, kills
//! the process once the grace period is over, and removes the pod (the kubelet's final
//! delete).
//!
//! How it differs from a kubelet:
//! - No image is pulled: every container runs the agent's binary (the image's
//!   entrypoint stands for it); a container `command` after its first word is prepended
//!   to the arguments.
//! - No network namespace: the processes share the host's network. Each pod gets its own
//!   loopback address (all of 127.0.0.0/8 is loopback on Linux) as its pod IP, and the
//!   wildcard address `0.0.0.0` in an argument or variable (`0.0.0.0:9100`) is rewritten
//!   to that address, which is what binding the wildcard inside a pod's own network
//!   namespace amounts to. Two pods can so both listen on port 9100.
//! - No volumes are mounted, no liveness probe runs, no resource limit or security
//!   context is enforced, and there are no init or sidecar containers.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::task::JoinHandle;

use super::watchdog;

/// How often the agent looks at its pods.
const TICK: Duration = Duration::from_millis(200);
/// How often the node's Lease is renewed (a kubelet's default is 10 s of a 40 s lease).
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The longest a pod waits before its container is started again.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// A running node agent; stops its loop and kills its processes when dropped.
pub struct NodeAgent {
    node: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    logs: PathBuf,
}

/// What the agent knows of its pods, by pod UID.
#[derive(Default)]
struct State {
    pods: HashMap<String, Running>,
    errors: Vec<String>,
}

/// One pod's container process.
struct Running {
    name: String,
    ip: Ipv4Addr,
    child: Option<Child>,
    restarts: i32,
    started_at: Timestamp,
    restart_at: Option<Instant>,
    ready: bool,
    /// Set once SIGTERM was sent: when to kill.
    kill_at: Option<Instant>,
    reported: Option<serde_json::Value>,
}

impl NodeAgent {
    /// Registers node `node` and runs the pods of `namespace` on it with `binary`.
    pub async fn start(
        client: Client,
        namespace: &str,
        node: &str,
        binary: &Path,
    ) -> anyhow::Result<Self> {
        register_node(&client, node).await?;
        let logs = watchdog::scratch_dir(&format!("nodeagent-{node}"))?;
        let state = Arc::new(Mutex::new(State::default()));
        let agent = Agent {
            client,
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            binary: binary.to_owned(),
            logs: logs.clone(),
            state: Arc::clone(&state),
        };
        let task = tokio::spawn(agent.run());
        Ok(Self { node: node.to_owned(), state, task, logs })
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The pod IP of the running pod `name`.
    pub fn pod_ip(&self, name: &str) -> Option<Ipv4Addr> {
        self.lock().pods.values().find(|r| r.name == name).map(|r| r.ip)
    }

    /// The process id of the running pod `name`'s container.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.lock()
            .pods
            .values()
            .find(|r| r.name == name)
            .and_then(|r| r.child.as_ref().map(Child::id))
    }

    /// The log file of pod `name`'s container (every restart appends to it).
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The names of the pods it runs now.
    pub fn pods(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().pods.values().map(|r| r.name.clone()).collect();
        names.sort();
        names
    }

    /// API errors the agent met so far (it retries them), for a failing test to show.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.task.abort();
        for running in self.lock().pods.values_mut() {
            if let Some(mut child) = running.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn register_node(client: &Client, node: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let object: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": {
            "kubernetes.io/hostname": node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }},
    }))?;
    nodes.create(&PostParams::default(), &object).await.context("registering the Node")?;
    let now = Timestamp::now().to_string();
    let status = json!({"status": {
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"},
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110"},
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": node}],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "the gameshard test node agent is running",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "gameshard-nodeagent://0",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v0.0.0-gameshard",
            "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": "",
        },
    }});
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("reporting the Node's status")?;
    Ok(())
}

/// The agent's loop and what it needs.
struct Agent {
    client: Client,
    namespace: String,
    node: String,
    binary: PathBuf,
    logs: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Agent {
    async fn run(self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut last_lease = None::<Instant>;
        loop {
            if last_lease.is_none_or(|t| t.elapsed() >= LEASE_RENEW) {
                match self.renew_lease().await {
                    Ok(()) => last_lease = Some(Instant::now()),
                    Err(e) => self.error(format!("renewing the node lease: {e:#}")),
                }
            }
            match pods.list(&ListParams::default()).await {
                Ok(list) => {
                    if let Err(e) = self.step(&pods, list.items).await {
                        self.error(format!("{e:#}"));
                    }
                }
                Err(e) => self.error(format!("listing pods: {e}")),
            }
            tokio::time::sleep(TICK).await;
        }
    }

    fn error(&self, message: String) {
        tracing::debug!(%message, "node agent");
        let mut state = self.lock();
        if state.errors.len() < 100 {
            state.errors.push(message);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn renew_lease(&self) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let lease = Lease {
            metadata: ObjectMeta { name: Some(self.node.clone()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.node.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let mut value = serde_json::to_value(&lease)?;
        value["apiVersion"] = "coordination.k8s.io/v1".into();
        value["kind"] = "Lease".into();
        leases
            .patch(
                &self.node,
                &PatchParams::apply("gameshard-nodeagent").force(),
                &Patch::Apply(value),
            )
            .await?;
        Ok(())
    }

    async fn step(&self, api: &Api<Pod>, pods: Vec<Pod>) -> anyhow::Result<()> {
        let present: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        // Pods removed behind the agent's back (force deletion): their processes go.
        self.lock().pods.retain(|uid, running| {
            let keep = present.contains(uid);
            if !keep && let Some(mut child) = running.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            keep
        });
        for pod in pods {
            let (Some(uid), name) = (pod.metadata.uid.clone(), pod.name_any()) else { continue };
            let spec = pod.spec.clone().unwrap_or_default();
            match spec.node_name.as_deref() {
                None if pod.metadata.deletion_timestamp.is_none() => {
                    self.bind(api, &name).await?;
                }
                Some(node) if node == self.node => {
                    if pod.metadata.deletion_timestamp.is_some() {
                        self.terminate(api, &pod, &uid).await?;
                    } else {
                        self.keep_running(api, &pod, &uid).await?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn bind(&self, api: &Api<Pod>, name: &str) -> anyhow::Result<()> {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        });
        api.create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
        .with_context(|| format!("binding pod {name}"))?;
        Ok(())
    }

    async fn keep_running(&self, api: &Api<Pod>, pod: &Pod, uid: &str) -> anyhow::Result<()> {
        let name = pod.name_any();
        let spec = pod.spec.clone().unwrap_or_default();
        let container = spec.containers.first().context("a pod without a container")?.clone();
        if !self.lock().pods.contains_key(uid) {
            let ip = allocate_ip(&container)?;
            self.lock().pods.insert(
                uid.to_owned(),
                Running {
                    name: name.clone(),
                    ip,
                    child: None,
                    restarts: 0,
                    started_at: Timestamp::now(),
                    restart_at: Some(Instant::now()),
                    ready: false,
                    kill_at: None,
                    reported: None,
                },
            );
        }
        // Start, or restart after an exit (restartPolicy Always, with backoff).
        let (ip, exited, due) = {
            let mut state = self.lock();
            let running = state.pods.get_mut(uid).expect("inserted above");
            let exited = running.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                running.child = None;
                running.ready = false;
                running.restarts += 1;
                let backoff = Duration::from_secs(1_u64 << running.restarts.clamp(0, 4))
                    .min(MAX_RESTART_BACKOFF);
                running.restart_at = Some(Instant::now() + backoff);
            }
            let due =
                running.child.is_none() && running.restart_at.is_some_and(|t| t <= Instant::now());
            (running.ip, exited, due)
        };
        if let Some(status) = exited {
            tracing::info!(pod = %name, %status, "container exited; restarting it");
        }
        if due {
            let child = self.spawn(pod, &container, ip).await?;
            let mut state = self.lock();
            let running = state.pods.get_mut(uid).expect("inserted above");
            running.child = Some(child);
            running.started_at = Timestamp::now();
            running.restart_at = None;
        }
        let running = self.lock().pods.get(uid).is_some_and(|r| r.child.is_some());
        let ready = running && probe(&container, ip).await;
        let status = {
            let mut state = self.lock();
            let r = state.pods.get_mut(uid).expect("inserted above");
            r.ready = ready;
            pod_status(pod, &container, r)
        };
        let changed =
            self.lock().pods.get(uid).is_some_and(|r| r.reported.as_ref() != Some(&status));
        if changed {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .with_context(|| format!("reporting pod {name}'s status"))?;
            if let Some(r) = self.lock().pods.get_mut(uid) {
                r.reported = Some(status);
            }
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after the grace period, then the final delete.
    async fn terminate(&self, api: &Api<Pod>, pod: &Pod, uid: &str) -> anyhow::Result<()> {
        let name = pod.name_any();
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30);
        let gone = {
            let mut state = self.lock();
            match state.pods.get_mut(uid) {
                None => true,
                Some(r) => match r.child.as_mut() {
                    None => true,
                    Some(child) => {
                        if child.try_wait()?.is_some() {
                            r.child = None;
                            true
                        } else if let Some(at) = r.kill_at {
                            if Instant::now() >= at {
                                let _ = child.kill();
                                let _ = child.wait();
                                r.child = None;
                                true
                            } else {
                                false
                            }
                        } else {
                            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                            let _ = kill(pid, Signal::SIGTERM);
                            r.kill_at =
                                Some(Instant::now() + Duration::from_secs(grace.max(0) as u64));
                            false
                        }
                    }
                },
            }
        };
        if gone {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_owned()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting pod {name}")),
            }
            self.lock().pods.remove(uid);
        }
        Ok(())
    }

    async fn spawn(&self, pod: &Pod, container: &Container, ip: Ipv4Addr) -> anyhow::Result<Child> {
        let name = pod.name_any();
        let env = self.environment(pod, container, ip).await?;
        let expand_all = |words: &[String]| -> Vec<String> {
            words.iter().map(|w| localize(&expand(w, &env), ip)).collect()
        };
        let command = container.command.clone().unwrap_or_default();
        let mut args = expand_all(command.get(1..).unwrap_or_default());
        args.extend(expand_all(&container.args.clone().unwrap_or_default()));
        let log_path = self.logs.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let mut cmd = watchdog::command(&self.binary)?;
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTNAME", &name)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, value) in &env {
            cmd.env(key, localize(value, ip));
        }
        tracing::info!(pod = %name, %ip, ?args, "starting the container");
        cmd.spawn().with_context(|| format!("starting {} for pod {name}", self.binary.display()))
    }

    /// The container's variables in order, each expanded against the ones before it.
    async fn environment(
        &self,
        pod: &Pod,
        container: &Container,
        ip: Ipv4Addr,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = Vec::new();
        for var in container.env.clone().unwrap_or_default() {
            let value = if let Some(source) = &var.value_from {
                if let Some(field) = &source.field_ref {
                    field_value(pod, &field.field_path, ip, &self.node).with_context(|| {
                        format!("env {}: fieldRef {}", var.name, field.field_path)
                    })?
                } else if let Some(resource) = &source.resource_field_ref {
                    resource_value(container, &resource.resource).unwrap_or_default()
                } else if let Some(key) = &source.secret_key_ref {
                    let secrets: Api<Secret> =
                        Api::namespaced(self.client.clone(), &self.namespace);
                    let secret = secrets.get(&key.name).await?;
                    let bytes = secret.data.unwrap_or_default().remove(&key.key).map(|b| b.0);
                    String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
                } else if let Some(key) = &source.config_map_key_ref {
                    let maps: Api<ConfigMap> =
                        Api::namespaced(self.client.clone(), &self.namespace);
                    maps.get(&key.name)
                        .await?
                        .data
                        .unwrap_or_default()
                        .remove(&key.key)
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            } else {
                expand(var.value.as_deref().unwrap_or_default(), &env)
            };
            env.retain(|(k, _)| *k != var.name);
            env.push((var.name, value));
        }
        Ok(env)
    }
}

/// A loopback address no one listens on at the container's ports, for a new pod.
fn allocate_ip(container: &Container) -> anyhow::Result<Ipv4Addr> {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    // Spread over 127.x.y.z by process, so that test binaries running side by side
    // rarely try the same addresses; a taken address is skipped anyway.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = (std::process::id() % 200 + 20) << 16;
    let ports: Vec<u16> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Relaxed) % 60_000 + 2;
        let ip = Ipv4Addr::from(0x7f00_0000 | base | n);
        if ip.octets()[3] == 0 || ip.octets()[3] == 255 {
            continue;
        }
        if ports.iter().all(|&port| TcpListener::bind(SocketAddr::from((ip, port))).is_ok()) {
            return Ok(ip);
        }
    }
    anyhow::bail!("no free loopback address for a pod")
}

/// A downward-API field of `pod`.
fn field_value(pod: &Pod, path: &str, ip: Ipv4Addr, node: &str) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let keyed = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.unwrap_or_else(|| node.to_owned()),
        "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ip.to_string(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        _ => keyed(&meta.labels, "metadata.labels['")
            .or_else(|| keyed(&meta.annotations, "metadata.annotations['"))
            .with_context(|| format!("unsupported field {path}"))?,
    })
}

/// `limits.cpu`, `requests.memory` and the like of the container, in plain units.
fn resource_value(container: &Container, resource: &str) -> Option<String> {
    let (kind, name) = resource.split_once('.')?;
    let resources = container.resources.clone()?;
    let map = if kind == "limits" { resources.limits } else { resources.requests }?;
    Some(map.get(name)?.0.clone())
}

/// `$(VAR)` references in `text` replaced with the values of `env`, as the kubelet
/// expands them: `$$` stands for `$`, and a reference to an unknown variable stays as
/// written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(')
            && let Some(close) = tail.find(')')
        {
            let name = &tail[..close];
            if let Some((_, value)) = env.iter().rev().find(|(k, _)| k == name) {
                out.push_str(value);
            } else {
                out.push_str("$(");
                out.push_str(name);
                out.push(')');
            }
            rest = &tail[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The wildcard address replaced with the pod's own (see the module's comment).
fn localize(text: &str, ip: Ipv4Addr) -> String {
    const WILDCARD: &str = "0.0.0.0:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(WILDCARD) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        // Part of a longer address (10.0.0.0:) when a digit or a dot comes before.
        let whole = out.chars().last().is_none_or(|c| !c.is_ascii_digit() && c != '.');
        if whole {
            out.push_str(&ip.to_string());
            out.push(':');
        } else {
            out.push_str(WILDCARD);
        }
        rest = &after[WILDCARD.len()..];
    }
    out.push_str(rest);
    out
}

/// Whether the container's readiness probe passes (an HTTP GET answered 2xx or 3xx); a
/// container without one is ready once it runs.
async fn probe(container: &Container, ip: Ipv4Addr) -> bool {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Some(http) = container.readiness_probe.as_ref().and_then(|p| p.http_get.clone()) else {
        return true;
    };
    let port = match &http.port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    };
    let Some(port) = port else { return false };
    let path = http.path.unwrap_or_else(|| "/".to_owned());
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = vec![0; 64];
        let n = stream.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}

/// The status the agent reports for a pod.
fn pod_status(pod: &Pod, container: &Container, r: &Running) -> serde_json::Value {
    let started =
        pod.status.as_ref().and_then(|s| s.start_time.clone()).unwrap_or(Time(r.started_at));
    let condition =
        |type_: &str, ok: bool| json!({"type": type_, "status": if ok { "True" } else { "False" }});
    let state = if r.child.is_some() {
        json!({"running": {"startedAt": Time(r.started_at)}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    };
    json!({
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": r.ip.to_string(),
        "podIPs": [{"ip": r.ip.to_string()}],
        "startTime": started,
        "conditions": [
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", r.ready),
            condition("Ready", r.ready),
        ],
        "containerStatuses": [{
            "name": container.name,
            "image": container.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": r.ready,
            "started": r.child.is_some(),
            "restartCount": r.restarts,
            "state": state,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let e = env(&[("POD_NAME", "zone-0"), ("A", "x")]);
        assert_eq!(expand("$(POD_NAME)", &e), "zone-0");
        assert_eq!(expand("--pod-id=$(POD_NAME)-$(A)", &e), "--pod-id=zone-0-x");
        assert_eq!(expand("$(MISSING)", &e), "$(MISSING)", "unknown references stay");
        assert_eq!(expand("$$(POD_NAME)", &e), "$(POD_NAME)", "$$ escapes");
        assert_eq!(expand("cost $5 $(A", &e), "cost $5 $(A", "no closing parenthesis");
        assert_eq!(expand("tail$", &e), "tail$");
    }

    #[test]
    fn the_wildcard_address_becomes_the_pod_ip() {
        let ip = Ipv4Addr::new(127, 0, 3, 4);
        assert_eq!(localize("0.0.0.0:9100", ip), "127.0.3.4:9100");
        assert_eq!(localize("--metrics-addr=0.0.0.0:9100", ip), "--metrics-addr=127.0.3.4:9100");
        assert_eq!(localize("10.0.0.0:1", ip), "10.0.0.0:1");
    }
}
