//! `gameshard-operator`: `run` starts the controller and its admin server; `crd` prints
//! the CustomResourceDefinition; `render -f FILE` prints what would be applied for a
//! GameShard, without a cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use gameshard_crds::GameShard;
use gameshard_operator::admin;
use gameshard_operator::controller::{self, Context};
use gameshard_operator::desired::{self, Inputs};
use gameshard_operator::leader::Elector;
use gameshard_operator::metrics::Metrics;
use gameshard_operator::signals::HttpClient;
use gameshard_operator::topics::RdKafka;
use kube::api::Api;
use kube::{Client, CustomResourceExt, ResourceExt};

/// The default data-plane image, for shards that name none.
const DATAPLANE_IMAGE: &str =
    concat!("ghcr.io/gameshard/gameshard-dataplane:", env!("CARGO_PKG_VERSION"));

#[derive(Parser)]
#[command(name = "gameshard-operator", version, about = "Runs gameshard hot zones on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the GameShard CustomResourceDefinition as YAML.
    Crd,
    /// Print, as YAML, every object the operator would apply for a GameShard.
    Render(RenderArgs),
    /// Run one GameShard file on this machine: the same topics, assignment, handoffs
    /// and autoscaling, with data-plane processes instead of a StatefulSet.
    Local(LocalArgs),
}

#[derive(clap::Args)]
struct LocalArgs {
    /// The GameShard file; edits take effect while it runs.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Bootstrap servers in place of the file's `spec.kafka.bootstrapServers`.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// The gameshard-dataplane binary (default: next to this one, else on PATH).
    #[arg(long)]
    dataplane: Option<PathBuf>,
    /// Folder of the data planes' logs.
    #[arg(long, default_value = "gameshard-local-logs")]
    logs: PathBuf,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "GAMESHARD_OPERATOR_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespaces to watch, comma-separated (default: all).
    #[arg(long, env = "GAMESHARD_OPERATOR_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Elect a leader among replicas through a Lease in the operator's namespace.
    #[arg(long, env = "GAMESHARD_OPERATOR_LEADER_ELECTION")]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "gameshard-operator")]
    lease_name: String,
    /// Data-plane image for shards that name none.
    #[arg(long, env = "GAMESHARD_DATAPLANE_IMAGE", default_value = DATAPLANE_IMAGE)]
    dataplane_image: String,
}

#[derive(clap::Args)]
struct RenderArgs {
    /// The GameShard YAML file.
    #[arg(short = 'f', long)]
    file: PathBuf,
    /// Input partitions, when the GameShard does not say (the operator would read them
    /// from the input topic).
    #[arg(long)]
    partitions: Option<i32>,
    /// Data-plane image for shards that name none.
    #[arg(long, default_value = DATAPLANE_IMAGE)]
    dataplane_image: String,
    /// Include the ServiceMonitor (the operator applies it when the cluster serves it).
    #[arg(long)]
    service_monitor: bool,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => emit(&serde_saphyr::to_string(&GameShard::crd())?),
        Command::Render(args) => render(&args),
        Command::Run(args) => {
            logs();
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
        }
        Command::Local(args) => {
            logs();
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(local(args))
        }
    }
}

fn logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Local mode until SIGINT or SIGTERM, which drains every data plane.
async fn local(args: LocalArgs) -> anyhow::Result<()> {
    let dataplane = match args.dataplane {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("gameshard-dataplane"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("gameshard-dataplane")),
    };
    gameshard_operator::local::read(&args.file, args.bootstrap_servers.as_deref())
        .map_err(|e| anyhow::anyhow!("-f: {e}"))?;
    let options = gameshard_operator::local::Options {
        file: args.file,
        dataplane,
        bootstrap: args.bootstrap_servers,
        logs: args.logs,
        extra_args: Vec::new(),
        cpu_limits: None,
    };
    let status = Arc::default();
    let scale = Arc::default();
    let local = gameshard_operator::local::Local::new(options, RdKafka::default(), status, scale);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async { if let Some(t) = &mut term { t.recv().await; } } => {}
        }
        let _ = stop.send(true);
    });
    local.run(stopped).await
}

/// Runs one controller over every namespace, or one per watched namespace, until
/// `shutdown` resolves.
async fn run_controllers(
    client: Client,
    namespaces: Vec<String>,
    ctx: Arc<Context<RdKafka>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    if namespaces.is_empty() {
        controller::run(Api::<GameShard>::all(client), ctx, shutdown).await;
        return;
    }
    let mut stops = Vec::new();
    let mut runs = Vec::new();
    for ns in &namespaces {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        let api = Api::<GameShard>::namespaced(client.clone(), ns);
        runs.push(controller::run(api, Arc::clone(&ctx), async move {
            let _ = rx.await;
        }));
    }
    let forward = async move {
        shutdown.await;
        for stop in stops {
            let _ = stop.send(());
        }
    };
    futures::future::join(futures::future::join_all(runs), forward).await;
}

/// Waits for the leader lease; `None` if SIGTERM comes first.
async fn elect(
    client: &Client,
    lease_name: &str,
    identity: &str,
    sigterm: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<Option<Elector>> {
    let namespace =
        std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_owned());
    tracing::info!(%identity, lease = %lease_name, %namespace, "waiting for the leader lease");
    let elector = tokio::select! {
        elector = Elector::new(client.clone(), &namespace, lease_name, identity) => elector?,
        _ = sigterm.recv() => return Ok(None),
    };
    tokio::select! {
        () = elector.acquire() => {}
        _ = sigterm.recv() => return Ok(None),
    }
    tracing::info!(%identity, "leading");
    Ok(Some(elector))
}

fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("-f: reading {}", args.file.display()))?;
    let mut shard: GameShard = serde_saphyr::from_str(&text)
        .with_context(|| format!("-f: {} is not a GameShard", args.file.display()))?;
    let Some(partitions) = args.partitions.or(shard.spec.partitions) else {
        bail!(
            "--partitions: {} does not set spec.partitions; say how many the input topic has",
            args.file.display()
        );
    };
    if shard.namespace().is_none() {
        shard.metadata.namespace = Some("default".to_owned());
    }
    // Objects read from the API have a uid, which owner references carry.
    shard.metadata.uid.get_or_insert_with(|| "00000000-0000-0000-0000-000000000000".to_owned());
    let replicas = desired::replicas_for(&shard, partitions);
    let inputs =
        Inputs { shard: &shard, partitions, replicas, default_image: &args.dataplane_image };
    let mut out = String::new();
    for object in desired::objects(&inputs, args.service_monitor) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&object)?);
    }
    emit(&out)
}

/// Writes `text` to standard output; a reader that went away is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let admin_server = admin::serve(args.metrics_addr, metrics.clone(), Arc::clone(&ready))
        .map_err(|e| {
            anyhow::anyhow!("--metrics-addr: cannot listen on {}: {e}", args.metrics_addr)
        })?;
    tracing::info!(addr = %admin_server.addr(), "admin server listening");

    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("gameshard-operator-{}", std::process::id()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    let lease = if args.leader_election {
        ready.store(true, Relaxed);
        let Some(elector) = elect(&client, &args.lease_name, &identity, &mut sigterm).await? else {
            return Ok(());
        };
        Some(elector)
    } else {
        None
    };
    metrics.leader.set(1);
    let service_monitors = client
        .list_api_group_resources("monitoring.coreos.com/v1")
        .await
        .is_ok_and(|r| r.resources.iter().any(|r| r.kind == "ServiceMonitor"));
    let reporter = controller::reporter(Some(identity));
    let ctx = Arc::new(Context::new(
        client.clone(),
        RdKafka::default(),
        HttpClient::new(),
        metrics,
        args.dataplane_image,
        service_monitors,
        reporter,
    ));
    ready.store(true, Relaxed);

    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = shutdown_rx.await;
    };
    let controllers = run_controllers(client.clone(), args.namespaces.clone(), ctx, shutdown);
    // Leadership ends the process: a replica that lost the lease exits, and its restart
    // stands by for the lease again.
    let leadership = async {
        match &lease {
            Some(elector) => Some(elector.hold().await),
            None => std::future::pending().await,
        }
    };
    let stop = async {
        let mut stop_rx = stop_rx;
        tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = stop_rx.changed() => "interrupted",
        }
    };
    tokio::pin!(controllers);
    let lost = tokio::select! {
        () = &mut controllers => bail!("the controller stopped"),
        lost = leadership => lost,
        why = stop => {
            tracing::info!(why, "stopping");
            None
        }
    };
    if let Some(lost) = &lost {
        tracing::warn!(%lost, "no longer leading; stopping");
    }
    let _ = shutdown_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    match (lost, &lease) {
        (Some(lost), _) => bail!("{lost}; exiting so that a new leader takes over"),
        (None, Some(elector)) => elector.release().await,
        (None, None) => {}
    }
    Ok(())
}
