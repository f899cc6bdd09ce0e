//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager, built once per machine by `scripts/controlplane`.
//!
//! The API server authorizes with RBAC and authenticates with static tokens (an admin in
//! `system:masters`, the controller manager as `system:kube-controller-manager`) and with
//! service-account tokens signed by a key made at start. Its serving certificate comes
//! from a CA made at start too. Everything lives in a scratch folder and every process
//! dies with the test process ([`super::watchdog`]).
//!
//! No kubelet and no scheduler run: pods stay Pending until a [`super::nodeagent`]
//! binds and runs them.
//!
//! One control plane serves a whole test binary ([`ControlPlane::shared`]); tests keep
//! apart by namespace ([`ControlPlane::namespace`]). A [`kube::Client`] belongs to the
//! runtime it first ran on, so each test makes its own ([`ControlPlane::admin`]).

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::broker::free_port;
use super::{tools, watchdog};

/// How the harness finds or builds the control plane's binaries.
pub const CONTROLPLANE_BUILD: &str = "scripts/controlplane (scripts/setup runs it)";

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The service network the API server allocates cluster IPs from (never routed here).
const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The issuer of service-account tokens.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A running control plane.
pub struct ControlPlane {
    dir: PathBuf,
    url: String,
    ca: PathBuf,
    kubeconfig: PathBuf,
    started_in: Duration,
    version: String,
    // Kept so the processes can be stopped; the watchdog kills them at exit regardless.
    children: Mutex<Vec<(String, Child)>>,
}

/// The folder holding `etcd`, `kube-apiserver` and `kube-controller-manager`, as
/// `scripts/controlplane --check` reports it; `None` (after saying why) when they are
/// not built. Panics instead under [`tools::REQUIRE_TOOLS`].
pub fn binaries() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/controlplane");
    let why = match Command::new(&script).arg("--check").stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            return Some(PathBuf::from(dir));
        }
        Ok(_) => "the control plane is not built".to_owned(),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    assert!(
        std::env::var_os(tools::REQUIRE_TOOLS).is_none(),
        "a Kubernetes control plane is required: {why}; build it with {CONTROLPLANE_BUILD}"
    );
    tools::skip(&format!("{why}; build it with {CONTROLPLANE_BUILD}"));
    None
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use; `None` (after
    /// saying why) when its binaries are not built. Panics if it cannot start.
    pub fn shared() -> Option<&'static ControlPlane> {
        static SHARED: OnceLock<Option<Result<ControlPlane, String>>> = OnceLock::new();
        let started = SHARED.get_or_init(|| {
            let bin = binaries()?;
            Some(Self::start(&bin).map_err(|e| format!("{e:#}")))
        });
        match started {
            None => None,
            Some(Ok(cp)) => Some(cp),
            Some(Err(e)) => panic!("the control plane did not start: {e}"),
        }
    }

    /// Starts a control plane from the binaries in `bin`, and waits until it serves.
    pub fn start(bin: &Path) -> anyhow::Result<Self> {
        let bin = bin.to_owned();
        // The readiness checks use a kube client, which needs a runtime; the caller may
        // be inside one already, so they get a thread and a runtime of their own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(Self::start_async(&bin))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the control plane's start panicked"))?
    }

    async fn start_async(bin: &Path) -> anyhow::Result<Self> {
        let started = Instant::now();
        let dir = watchdog::scratch_dir("controlplane")?;
        let pki = Pki::make(&dir)?;
        let admin_token = random_token()?;
        let kcm_token = random_token()?;
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{admin_token},gameshard-admin,gameshard-admin,\"system:masters\"\n\
                 {kcm_token},system:kube-controller-manager,system:kube-controller-manager,\n"
            ),
        )?;

        let mut cp = Self {
            url: String::new(),
            ca: pki.ca_cert.clone(),
            kubeconfig: dir.join("admin.kubeconfig"),
            started_in: Duration::ZERO,
            version: String::new(),
            children: Mutex::new(Vec::new()),
            dir,
        };

        // etcd
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data = cp.dir.join("etcd");
        cp.spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=gameshard".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=gameshard={peer_url}"),
                // A test's data need not survive a power cut.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait_port("etcd", client_port)?;

        // kube-apiserver
        let port = free_port()?;
        cp.url = format!("https://127.0.0.1:{port}");
        cp.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={client_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The endpoint reconciler refuses a loopback address (since 1.37), and
                // nothing here reaches the API server through the kubernetes Service.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", cp.dir.join("apiserver").display()),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--allow-privileged=true".into(),
                "--authorization-mode=RBAC".into(),
                format!("--token-auth-file={}", cp.dir.join("tokens.csv").display()),
                format!("--service-account-issuer={ISSUER}"),
                format!("--service-account-key-file={}", pki.sa_key.display()),
                format!("--service-account-signing-key-file={}", pki.sa_key.display()),
                format!("--api-audiences={ISSUER}"),
                "--v=1".into(),
            ],
        )?;
        cp.write_kubeconfig(&cp.kubeconfig, &admin_token, "default")?;
        let admin = cp.client_from(&cp.kubeconfig).await?;
        cp.wait("kube-apiserver /readyz", || async {
            admin.request_text(get("/readyz")).await.is_ok_and(|body| body.trim() == "ok")
        })
        .await?;
        let version = admin.apiserver_version().await.context("the API server's version")?;
        cp.version = version.git_version;

        // kube-controller-manager
        let kcm_config = cp.dir.join("kube-controller-manager.kubeconfig");
        cp.write_kubeconfig(&kcm_config, &kcm_token, "kube-system")?;
        cp.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kcm_config.display()),
                format!("--service-account-private-key-file={}", pki.sa_key.display()),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                "--use-service-account-credentials=true".into(),
                "--controllers=*".into(),
                "--leader-elect=false".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                // No metrics or health endpoint is read; serving none needs no port.
                "--secure-port=0".into(),
                "--v=1".into(),
            ],
        )?;
        // The service-account controller runs once the controller manager does.
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        cp.wait("kube-controller-manager (the default ServiceAccount)", || async {
            accounts.get_opt("default").await.ok().flatten().is_some()
        })
        .await?;
        cp.started_in = started.elapsed();
        Ok(cp)
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = watchdog::command(program)?
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.children.lock().expect("not poisoned").push((name.to_owned(), child));
        Ok(())
    }

    /// Fails with the process's log if `name` exited.
    fn check_alive(&self, name: &str) -> anyhow::Result<()> {
        let mut children = self.children.lock().expect("not poisoned");
        if let Some((_, child)) = children.iter_mut().find(|(n, _)| n == name)
            && let Some(status) = child.try_wait()?
        {
            bail!("{name} exited ({status}); from its log:\n{}", summary(&self.log(name)));
        }
        Ok(())
    }

    fn wait_port(&self, name: &str, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check_alive(name)?;
            if Instant::now() > deadline {
                bail!("{name} did not listen on {port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    async fn wait<F, Fut>(&self, what: &str, mut ready: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let name = what.split_whitespace().next().unwrap_or(what);
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready().await {
            self.check_alive(name)?;
            if Instant::now() > deadline {
                bail!(
                    "{what} was not ready within {START_TIMEOUT:?}; from its log:\n{}",
                    summary(&self.log(name))
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The log file of `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// How long the start took, from nothing to a controller manager at work.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The API server's version (`v1.37.2`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin's kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client for the admin.
    pub async fn admin(&self) -> anyhow::Result<Client> {
        self.client_from(&self.kubeconfig).await
    }

    /// A client from a kubeconfig file.
    pub async fn client_from(&self, kubeconfig: &Path) -> anyhow::Result<Client> {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
        Ok(Client::try_from(config)?)
    }

    /// Writes a kubeconfig for this API server that authenticates with `token`, with
    /// `namespace` as its default.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        token: &str,
        namespace: &str,
    ) -> anyhow::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: gameshard\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: user\n  user:\n    token: {token}\n\
             contexts:\n- name: gameshard\n  context:\n    cluster: gameshard\n    user: user\n    namespace: {namespace}\n\
             current-context: gameshard\n",
            url = self.url,
            ca = self.ca.display(),
        );
        let mut file = std::fs::File::create(path)?;
        file.write_all(text.as_bytes())?;
        Ok(())
    }

    /// A new namespace named `<prefix>-<n>`, unique in this control plane.
    pub async fn namespace(&self, admin: &Client, prefix: &str) -> anyhow::Result<String> {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Relaxed));
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await?;
        Ok(name)
    }

    /// A token for the service account `namespace/name` from the `TokenRequest` API, valid for
    /// an hour.
    pub async fn service_account_token(
        &self,
        admin: &Client,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![ISSUER.to_owned()],
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token for ServiceAccount {namespace}/{name}"))?;
        Ok(answer.status.context("the TokenRequest has no status")?.token)
    }

    /// A kubeconfig (written under the scratch folder) and a client for the service
    /// account `namespace/name`, with a token from the `TokenRequest` API.
    pub async fn service_account(
        &self,
        admin: &Client,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<(PathBuf, Client)> {
        let token = self.service_account_token(admin, namespace, name).await?;
        let path = watchdog::scratch_dir("kubeconfig")?.join(format!("{namespace}-{name}"));
        self.write_kubeconfig(&path, &token, namespace)?;
        let client = self.client_from(&path).await?;
        Ok((path, client))
    }
}

fn get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(Vec::new()).expect("a valid request")
}

/// A component's errors (klog's `E` and `F` lines, etcd's error level) and the last lines
/// of its log.
fn summary(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('E') || l.starts_with('F') || l.contains("\"level\":\"error\""))
        .take(20)
        .collect();
    format!("{}\n...\n{}", errors.join("\n"), tail(path, 10))
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> anyhow::Result<String> {
    use std::fmt::Write as _;
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// The keys and certificates of one control plane, made with openssl.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> anyhow::Result<Self> {
        let pki = Self {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("service-account.key"),
        };
        let ca_key = dir.join("ca.key");
        let csr = dir.join("apiserver.csr");
        let ext = dir.join("apiserver.ext");
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n",
        )?;
        let s = |p: &Path| p.display().to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-keyout", &s(&ca_key), "-out", &s(&pki.ca_cert)],
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=gameshard-test-ca",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", &s(&pki.serving_key), "-out", &s(&csr)],
                &["-subj", "/CN=kube-apiserver"],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&pki.ca_cert),
            "-CAkey",
            &s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&pki.serving_cert),
        ])?;
        openssl(&["genrsa", "-out", &s(&pki.sa_key), "2048"])?;
        Ok(pki)
    }
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (Debian package openssl)")?;
    if !out.status.success() {
        bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
