//! An Apache Kafka broker on loopback: one combined broker and controller in `KRaft`
//! mode, run from the release `scripts/setup` resolves into the machine's cache.
//!
//! Each broker has its own folder (configuration, certificates, log directory), three
//! free ports (a PLAINTEXT listener, a `SASL_SSL` listener with SCRAM-SHA-512, and the
//! controller's), and a log file outside that folder whose path every failure names.
//! Tests of one binary share one broker ([`Broker::shared`]) and name their topics
//! per test; a test that kills or restarts the broker starts its own
//! ([`Broker::start`]).
//!
//! A broker never outlives its test process: a [`Watchdog`] kills the JVM and removes
//! its folder when that process ends, however it ends.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::watchdog::Watchdog;
use super::{kafka, tls, tools};

/// The pom that pins the Apache Kafka release (`kafka.version`), shared with every
/// Java peer.
const KAFKA_POM: &str = include_str!("../../kafka/pom.xml");

/// What installs the broker.
pub const KAFKA_INSTALL: &str = "run scripts/setup (a Java 17 runtime, Maven, and the \
    Kafka release of e2e/kafka/pom.xml in ~/.cache/gameshard)";

/// The SCRAM-SHA-512 user the `SASL_SSL` listener knows, created when storage is formatted.
pub const SASL_USER: &str = "gameshard";
/// That user's password.
pub const SASL_PASSWORD: &str = "gameshard-test-secret";
/// The protocol of the secured listener.
pub const SECURITY_PROTOCOL: &str = "SASL_SSL";
/// The SASL mechanism of the `SASL_SSL` listener.
pub const SASL_MECHANISM: &str = "SCRAM-SHA-512";

/// The `KRaft` cluster id every test broker is formatted with (base64url of 16 bytes).
const CLUSTER_ID: &str = "R2FtZVNoYXJkVGVzdDAwMA";

/// How long a broker may take from its start to answering metadata requests. A cold
/// JVM on a busy two-core machine takes a few seconds; quorum formation can take longer
/// under load.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The Apache Kafka version the harness runs, read from `e2e/kafka/pom.xml`.
pub fn kafka_version() -> &'static str {
    KAFKA_POM
        .split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim())
        .expect("e2e/kafka/pom.xml sets kafka.version")
}

/// The folder `scripts/setup` resolves the Kafka release into.
pub fn kafka_home() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("gameshard").join(format!("kafka-{}", kafka_version())))
}

/// Whether a Java runtime and the Kafka release are installed; when not, says why the
/// calling test is skipped (a panic under `GAMESHARD_REQUIRE_TOOLS`).
pub fn installed() -> bool {
    Installation::require().is_some()
}

/// A Java runtime and a complete Kafka classpath.
#[derive(Clone, Debug)]
struct Installation {
    java: PathBuf,
    libs: PathBuf,
}

impl Installation {
    /// The installation, or `None` after saying why the calling test is skipped (a
    /// panic under `GAMESHARD_REQUIRE_TOOLS`).
    fn require() -> Option<Self> {
        let java = std::env::var_os("JAVA_HOME")
            .map(|home| PathBuf::from(home).join("bin").join("java"))
            .filter(|java| java.is_file())
            .or_else(|| tools::find("java"));
        let Some(java) = java else {
            tools::missing("java", KAFKA_INSTALL);
            return None;
        };
        let home = kafka_home().filter(|home| home.join("complete").is_file());
        let Some(home) = home else {
            tools::missing(&format!("Apache Kafka {}", kafka_version()), KAFKA_INSTALL);
            return None;
        };
        tools::find("openssl").or_else(|| {
            tools::missing("openssl", tls::OPENSSL_INSTALL);
            None
        })?;
        Some(Self { java, libs: home.join("libs") })
    }
}

/// The broker's loopback ports.
#[derive(Clone, Copy, Debug)]
struct Ports {
    plaintext: u16,
    sasl_ssl: u16,
    controller: u16,
}

/// A running Apache Kafka broker; killed, and its folder removed, when dropped.
pub struct Broker {
    install: Installation,
    dir: PathBuf,
    ports: Ports,
    log: PathBuf,
    certificates: tls::Certificates,
    jvm: Option<Child>,
    watchdog: Option<Watchdog>,
}

impl Broker {
    /// The broker this test process shares between its tests, started on first use, or
    /// `None` (after saying why) when Kafka is not installed. Tests on it name their
    /// topics (and consumer groups) after themselves, so that they can run in parallel.
    pub fn shared() -> anyhow::Result<Option<&'static Broker>> {
        static SHARED: OnceLock<Result<Broker, String>> = OnceLock::new();
        let Some(install) = Installation::require() else { return Ok(None) };
        SHARED
            .get_or_init(|| Broker::launch(install).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map(Some)
            .map_err(|e| anyhow!("{e}"))
    }

    /// Starts a broker of the caller's own, or returns `None` (after saying why) when
    /// Kafka is not installed. For tests that stop, kill or restart it.
    pub fn start() -> anyhow::Result<Option<Self>> {
        let Some(install) = Installation::require() else { return Ok(None) };
        Self::launch(install).map(Some)
    }

    fn launch(install: Installation) -> anyhow::Result<Self> {
        // Held together, so that the three ports differ.
        let listeners = [(); 3].map(|()| TcpListener::bind("127.0.0.1:0"));
        let [plaintext, sasl_ssl, controller] =
            listeners.map(|l| l.and_then(|l| l.local_addr()).map(|a| a.port()));
        let ports = Ports { plaintext: plaintext?, sasl_ssl: sasl_ssl?, controller: controller? };
        let dir = std::env::temp_dir().join(format!(
            "gameshard-kafka-{}-{}",
            std::process::id(),
            ports.plaintext
        ));
        let log = std::env::temp_dir().join(format!("gameshard-kafka-{}.log", ports.plaintext));
        std::fs::create_dir_all(dir.join("tls"))?;
        let certificates = tls::broker(&dir.join("tls"))?;
        let mut broker = Self { install, dir, ports, log, certificates, jvm: None, watchdog: None };
        broker.configure()?;
        broker.format()?;
        broker.spawn()?;
        Ok(broker)
    }

    /// Writes `server.properties` and the Log4j 2 configuration.
    fn configure(&self) -> anyhow::Result<()> {
        let Ports { plaintext, sasl_ssl, controller } = self.ports;
        let listeners = format!(
            "PLAINTEXT://127.0.0.1:{plaintext},SASL_SSL://127.0.0.1:{sasl_ssl},CONTROLLER://127.0.0.1:{controller}"
        );
        let data = self.dir.join("data");
        let properties = [
            ("process.roles", "broker,controller".to_owned()),
            ("node.id", "1".to_owned()),
            ("controller.quorum.bootstrap.servers", format!("127.0.0.1:{controller}")),
            ("listeners", listeners.clone()),
            ("advertised.listeners", listeners),
            ("controller.listener.names", "CONTROLLER".to_owned()),
            ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT".to_owned(),
            ),
            ("log.dirs", path(&data)?.to_owned()),
            // The `SASL_SSL` listener: SCRAM users from the metadata log, a PEM keystore.
            ("sasl.enabled.mechanisms", SASL_MECHANISM.to_owned()),
            (
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".to_owned(),
            ),
            ("listener.name.sasl_ssl.ssl.keystore.type", "PEM".to_owned()),
            (
                "listener.name.sasl_ssl.ssl.keystore.location",
                path(&self.certificates.keystore)?.to_owned(),
            ),
            // One node: every internal topic with one replica, and few partitions, so
            // the first consumer group or transaction does not wait for fifty.
            ("offsets.topic.replication.factor", "1".to_owned()),
            ("offsets.topic.num.partitions", "1".to_owned()),
            ("transaction.state.log.replication.factor", "1".to_owned()),
            ("transaction.state.log.min.isr", "1".to_owned()),
            ("transaction.state.log.num.partitions", "1".to_owned()),
            ("share.coordinator.state.topic.replication.factor", "1".to_owned()),
            ("share.coordinator.state.topic.min.isr", "1".to_owned()),
            ("share.coordinator.state.topic.num.partitions", "1".to_owned()),
            ("group.initial.rebalance.delay.ms", "0".to_owned()),
            // Topics exist only when a test or the operator creates them, as in
            // production: a misnamed topic is an error, not a new topic.
            ("auto.create.topics.enable", "false".to_owned()),
            // The log cleaner's default 128 MiB buffer would take a quarter of the heap.
            ("log.cleaner.dedupe.buffer.size", "16777216".to_owned()),
        ];
        let text = properties.iter().fold(String::new(), |mut text, (k, v)| {
            let _ = writeln!(text, "{k}={v}");
            text
        });
        std::fs::write(self.dir.join("server.properties"), text)?;
        std::fs::write(
            self.dir.join("log4j2.properties"),
            "rootLogger.level = INFO\n\
             rootLogger.appenderRef.stdout.ref = stdout\n\
             appender.stdout.type = Console\n\
             appender.stdout.name = stdout\n\
             appender.stdout.layout.type = PatternLayout\n\
             appender.stdout.layout.pattern = [%d] %p %m (%c)%n\n\
             # Each client and server config is dumped whole at INFO: thousands of lines.\n\
             logger.config.name = org.apache.kafka.common.config.AbstractConfig\n\
             logger.config.level = WARN\n",
        )?;
        Ok(())
    }

    /// Formats the log directory (`kafka-storage.sh format --standalone`), creating the
    /// SCRAM user.
    fn format(&self) -> anyhow::Result<()> {
        let out = self
            .java()
            .args(["kafka.tools.StorageTool", "format", "--cluster-id", CLUSTER_ID])
            .arg("--config")
            .arg(self.dir.join("server.properties"))
            .arg("--standalone")
            .arg("--add-scram")
            .arg(format!("{SASL_MECHANISM}=[name={SASL_USER},password={SASL_PASSWORD}]"))
            .stdin(Stdio::null())
            .output()
            .context("running kafka.tools.StorageTool")?;
        std::fs::write(&self.log, [out.stdout.as_slice(), &out.stderr].concat())?;
        if !out.status.success() {
            bail!("formatting the broker's storage failed ({}); see {}", out.status, self.log());
        }
        Ok(())
    }

    /// A `java` command with the broker's classpath, heap and logging.
    fn java(&self) -> Command {
        let mut command = Command::new(&self.install.java);
        command
            // A small heap: test topics are small, and two brokers may run at once.
            .args(["-Xms128m", "-Xmx512m"])
            // What kafka-run-class.sh gives the broker.
            .args([
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(self.install.libs.join("*"));
        command
    }

    /// Starts the JVM and its watchdog, and waits until the broker answers.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let jvm = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the Kafka broker")?;
        let watchdog = Watchdog::guard(jvm.id(), Some(&self.dir));
        self.jvm = Some(jvm);
        self.watchdog = Some(watchdog.context("starting the broker's watchdog")?);
        self.wait_ready()
    }

    /// Waits until a metadata request on the PLAINTEXT listener lists the broker (the
    /// port opens before requests are served, so an open port proves nothing), and then
    /// until a group coordinator answers: the first group request creates the offsets
    /// topic, and requests meanwhile fail with `NotCoordinator`.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client: BaseConsumer = kafka::config(&self.bootstrap())
            .set("group.id", "gameshard-harness")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "200")
            .create()?;
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition("gameshard-harness", 0);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if client
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok_and(|m| !m.brokers().is_empty())
                && client.committed_offsets(offsets.clone(), Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.jvm.as_mut().and_then(|j| j.try_wait().ok().flatten()) {
                self.jvm = None;
                self.end_watchdog();
                bail!("the Kafka broker exited ({status}) while starting; see {}", self.log());
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "the Kafka broker did not answer within {READY_TIMEOUT:?}; see {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PLAINTEXT listener's bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.plaintext)
    }

    /// The `SASL_SSL` listener's bootstrap address.
    pub fn sasl_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.sasl_ssl)
    }

    /// The CA certificate that signed the broker's certificate (PEM).
    pub fn ca_certificate(&self) -> &Path {
        &self.certificates.ca
    }

    /// The librdkafka settings a credentials Secret gives a client of the `SASL_SSL`
    /// listener: the protocol, the SCRAM user and its password, and the CA to trust
    /// (`ssl.ca.pem`, the certificate itself, as a Secret holds it).
    pub fn sasl_settings(&self) -> Vec<(String, String)> {
        let ca = std::fs::read_to_string(&self.certificates.ca).unwrap_or_default();
        [
            ("security.protocol", SECURITY_PROTOCOL),
            ("sasl.mechanism", SASL_MECHANISM),
            ("sasl.username", SASL_USER),
            ("sasl.password", SASL_PASSWORD),
            ("ssl.ca.pem", ca.trim_end()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// The broker's log file, as a printable path.
    pub fn log(&self) -> String {
        self.log.display().to_string()
    }

    /// Whether the JVM runs.
    pub fn is_running(&mut self) -> bool {
        self.jvm.as_mut().is_some_and(|j| matches!(j.try_wait(), Ok(None)))
    }

    /// Kills the broker with SIGKILL: no controlled shutdown, unflushed logs.
    pub fn kill9(&mut self) {
        if let Some(mut jvm) = self.jvm.take() {
            let _ = jvm.kill();
            let _ = jvm.wait();
        }
        self.end_watchdog();
    }

    /// Stops the broker with SIGTERM (a controlled shutdown) and waits for it to exit,
    /// killing it after `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut jvm) = self.jvm.take() else { bail!("the broker is not running") };
        kill(Pid::from_raw(jvm.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = jvm.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = jvm.kill();
                let _ = jvm.wait();
                self.end_watchdog();
                bail!("the broker did not stop within {timeout:?} of SIGTERM; see {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.end_watchdog();
        Ok(status)
    }

    /// Starts the broker again after [`kill9`](Self::kill9) or [`stop`](Self::stop), on
    /// the same log directory and ports, and waits until it answers.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the broker is already running");
        }
        self.spawn()
    }

    /// Ends the watchdog of a JVM that is gone.
    fn end_watchdog(&mut self) {
        self.watchdog = None;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

/// A TCP port nobody listens on now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
