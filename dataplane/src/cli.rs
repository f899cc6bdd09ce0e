//! The data plane's command line. Every flag also reads an environment variable
//! (`GAMESHARD_` + the flag in upper snake case); a bad or missing value is reported in
//! one line that names the flag.

use std::net::SocketAddr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgGroup, Parser, ValueEnum};

/// Settings that librdkafka must not take from `--kafka`, because the data plane sets
/// them itself and its guarantees rest on them.
const RESERVED_SETTINGS: [(&str, &str); 5] = [
    ("bootstrap.servers", "use --brokers"),
    ("group.id", "the consumer group is the shard name"),
    ("enable.auto.commit", "offsets are committed once their updates are acknowledged"),
    ("enable.auto.offset.store", "offsets are committed once their updates are acknowledged"),
    ("enable.partition.eof", "the data plane reads partitions without end"),
];

/// `gameshard-dataplane`: applies a shard's game events and publishes entity updates.
#[derive(Clone, Debug, Parser)]
#[command(name = "gameshard-dataplane", version, about, long_about = None, allow_negative_numbers = true)]
#[command(group(ArgGroup::new("mode").required(true).args(["partitions", "control_topic"])))]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "GAMESHARD_BROKERS", value_name = "HOST:PORT[,...]", value_parser = brokers)]
    pub brokers: String,
    /// Shard name: the consumer group and the `shard` label of every metric.
    #[arg(long, env = "GAMESHARD_SHARD", value_name = "NAME", value_parser = name)]
    pub shard: String,
    /// Topic of the shard's events.
    #[arg(long, env = "GAMESHARD_INPUT_TOPIC", value_name = "T", value_parser = topic)]
    pub input_topic: String,
    /// Topic the entity updates go to (at least as many partitions as the input).
    #[arg(long, env = "GAMESHARD_OUTPUT_TOPIC", value_name = "T", value_parser = topic)]
    pub output_topic: String,
    /// Topic malformed events go to; without it they are only counted.
    #[arg(long, env = "GAMESHARD_DLQ_TOPIC", value_name = "T", value_parser = topic)]
    pub dlq_topic: Option<String>,
    /// Topic of the partitions' snapshots (as many partitions as the input); without it
    /// a restart replays every partition from its earliest offset.
    #[arg(long, env = "GAMESHARD_SNAPSHOT_TOPIC", value_name = "T", value_parser = topic)]
    pub snapshot_topic: Option<String>,
    /// Run standalone on these input partitions: `0-7`, `0,3,5` or `0-3,8`.
    #[arg(long, env = "GAMESHARD_PARTITIONS", value_name = "LIST", value_parser = partitions, conflicts_with_all = ["control_topic", "pod_id"])]
    pub partitions: Option<Partitions>,
    /// Follow the operator's partition assignment on this topic.
    #[arg(long, env = "GAMESHARD_CONTROL_TOPIC", value_name = "T", value_parser = topic, requires = "pod_id")]
    pub control_topic: Option<String>,
    /// This pod's name in the operator's assignment.
    #[arg(long, env = "GAMESHARD_POD_ID", value_name = "ID", value_parser = name, requires = "control_topic")]
    pub pod_id: Option<String>,
    /// Address of the admin server (/metrics, /healthz, /readyz, /status).
    #[arg(
        long,
        env = "GAMESHARD_METRICS_ADDR",
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:9100"
    )]
    pub metrics_addr: SocketAddr,
    /// CPU for the state-machine thread (default: the first CPU of the allowed set).
    #[arg(long, env = "GAMESHARD_PIN_CORE", value_name = "N")]
    pub pin_core: Option<usize>,
    /// Extra librdkafka setting for every client (security, tuning); repeatable. The
    /// environment variable takes several, separated by `;`.
    #[arg(long = "kafka", env = "GAMESHARD_KAFKA", value_name = "KEY=VALUE", value_parser = setting, value_delimiter = ';')]
    pub kafka: Vec<(String, String)>,
    /// A folder of librdkafka settings, one file per setting (file name = key, content =
    /// value), as a mounted Kubernetes Secret provides them; read at start-up.
    #[arg(long, env = "GAMESHARD_KAFKA_CONFIG_DIR", value_name = "DIR")]
    pub kafka_config_dir: Option<std::path::PathBuf>,
    /// The shard's p99 latency target in milliseconds, exported for alerts and scaling.
    #[arg(long, env = "GAMESHARD_LATENCY_TARGET_MS", value_name = "MS", value_parser = target)]
    pub latency_target_ms: Option<f64>,
    /// Snapshot a partition after this many records since its last snapshot.
    #[arg(long, env = "GAMESHARD_SNAPSHOT_EVERY_RECORDS", value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_records: u64,
    /// Snapshot a partition that moved this many seconds after its last snapshot.
    #[arg(long, env = "GAMESHARD_SNAPSHOT_EVERY_SECS", value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_secs: u64,
    /// Largest snapshot chunk, in KiB (a snapshot is written as several records).
    #[arg(long, env = "GAMESHARD_SNAPSHOT_CHUNK_KB", value_name = "KIB", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=900))]
    pub snapshot_chunk_kb: u64,
    /// Microseconds the state machine polls for the next batch before it parks.
    #[arg(long, env = "GAMESHARD_SPIN_US", value_name = "US", default_value_t = 200)]
    pub spin_us: u64,
    /// Most events per batch between pipeline threads.
    #[arg(long, env = "GAMESHARD_MAX_BATCH_EVENTS", value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_batch_events: u64,
    /// Seconds to wait for a partition's former owner to release it before restoring
    /// its latest snapshot without the release (the former owner crashed).
    #[arg(long, env = "GAMESHARD_HANDOFF_TIMEOUT_SECS", value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub handoff_timeout_secs: u64,
    /// Seconds a drain (SIGTERM) may take before the data plane gives up and exits 1.
    #[arg(long, env = "GAMESHARD_DRAIN_TIMEOUT_SECS", value_name = "S", default_value_t = 20)]
    pub drain_timeout_secs: u64,
    /// How updates are framed on the output topic: `entity`, one record per changed
    /// entity (for a compacted topic), or `batch`, the NDJSON of many updates of one
    /// partition in one record.
    #[arg(long, env = "GAMESHARD_OUTPUT_FRAMING", value_name = "FRAMING", value_enum, default_value_t = OutputFraming::Entity)]
    pub output_framing: OutputFraming,
}

/// How updates are framed on the output topic (SPEC section 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFraming {
    /// One record per update, keyed `player:<id>` or `item:<id>`.
    #[default]
    Entity,
    /// One record holds many updates of one input partition as NDJSON, without a key.
    Batch,
}

impl Args {
    /// The snapshot interval.
    pub fn snapshot_every(&self) -> Duration {
        Duration::from_secs(self.snapshot_every_secs)
    }
}

/// A sorted list of distinct input partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partitions(pub Vec<u32>);

/// Parses the command line, or returns the one-line message to print and the exit
/// code (0 for `--help` and `--version`, whose text is returned whole).
pub fn parse<I, T>(args: I) -> Result<Args, (String, i32)>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Args::try_parse_from(args).map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => (e.render().to_string(), 0),
        _ => (one_line(&e), 2),
    })
}

/// A clap error as one line naming the flag.
fn one_line(e: &clap::Error) -> String {
    let flag = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => flag_name(s),
        Some(ContextValue::Strings(v)) => {
            v.iter().map(|s| flag_name(s)).collect::<Vec<_>>().join(", ")
        }
        _ => String::new(),
    };
    let invalid = flag(ContextKind::InvalidArg);
    match e.kind() {
        ErrorKind::MissingRequiredArgument => {
            if invalid.contains("--partitions") || invalid.contains("--control-topic") {
                "error: one of --partitions or --control-topic (with --pod-id) is required".into()
            } else {
                format!("error: missing {invalid} (or its GAMESHARD_ variable)")
            }
        }
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) => format!("{v:?}"),
                _ => "the value".into(),
            };
            let why = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
            if why.is_empty() {
                format!("error: {invalid}: {value} is not valid")
            } else {
                format!("error: {invalid}: {value}: {why}")
            }
        }
        ErrorKind::ArgumentConflict => {
            format!("error: {invalid} cannot be used with {}", flag(ContextKind::PriorArg))
        }
        ErrorKind::UnknownArgument => format!("error: unknown flag {invalid}; see --help"),
        _ => {
            let text = e.render().to_string();
            text.lines().next().unwrap_or("error: invalid command line").to_owned()
        }
    }
}

/// `--flag <VALUE>` → `--flag`.
fn flag_name(s: &str) -> String {
    s.split_whitespace().next().unwrap_or(s).to_owned()
}

fn brokers(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("expected HOST:PORT[,HOST:PORT...]".into());
    }
    for b in s.split(',') {
        let b = b.trim();
        let Some((host, port)) = b.rsplit_once(':') else {
            return Err(format!("{b:?} has no port (expected HOST:PORT)"));
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("{b:?} has no host (expected HOST:PORT)"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("{b:?} has no valid port (1-65535)")),
        }
    }
    Ok(s.split(',').map(str::trim).collect::<Vec<_>>().join(","))
}

/// A Kafka topic name.
fn topic(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 249 {
        return Err("a topic name has 1 to 249 characters".into());
    }
    if s == "."
        || s == ".."
        || !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("a topic name uses only letters, digits, '.', '_' and '-'".into());
    }
    Ok(s.to_owned())
}

/// A shard or pod name: a valid consumer group id and metric label value.
fn name(s: &str) -> Result<String, String> {
    topic(s).map_err(|_| "a name has 1 to 249 letters, digits, '.', '_' or '-'".into())
}

fn partitions(s: &str) -> Result<Partitions, String> {
    let mut all = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let number = |n: &str| {
            n.trim().parse::<u32>().map_err(|_| format!("{n:?} is not a partition number"))
        };
        let (start, end) = if let Some((a, b)) = part.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let n = number(part)?;
            (n, n)
        };
        if start > end {
            return Err(format!("{part:?} runs backwards"));
        }
        if end - start > 65_535 {
            return Err(format!("{part:?} is too large a range"));
        }
        all.extend(start..=end);
    }
    let listed = all.len();
    all.sort_unstable();
    all.dedup();
    if all.len() != listed {
        return Err("a partition is listed twice".into());
    }
    Ok(Partitions(all))
}

fn target(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err("expected a positive number of milliseconds".into()),
    }
}

/// Reads the settings of a `--kafka-config-dir` folder: one file per setting, skipping
/// hidden entries (a mounted Secret keeps its bookkeeping there). A value keeps its
/// content but a final newline.
pub fn settings_dir(dir: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("--kafka-config-dir: cannot read {}: {e}", dir.display()))?;
    let mut settings = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("--kafka-config-dir: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || entry.path().is_dir() {
            continue;
        }
        let value = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("--kafka-config-dir: cannot read {name}: {e}"))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        settings.push(
            setting(&format!("{name}={value}")).map_err(|e| format!("--kafka-config-dir: {e}"))?,
        );
    }
    settings.sort();
    Ok(settings)
}

fn setting(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err("expected KEY=VALUE".into());
    };
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_')
    {
        return Err(format!("{key:?} is not a librdkafka setting name"));
    }
    if let Some((_, why)) = RESERVED_SETTINGS.iter().find(|(k, _)| *k == key) {
        return Err(format!("{key} is set by gameshard ({why})"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [&str; 9] = [
        "gameshard-dataplane",
        "--brokers",
        "k1:9092,k2:9093",
        "--shard",
        "zone-1",
        "--input-topic",
        "zone-1.events",
        "--output-topic",
        "zone-1.updates",
    ];

    fn run(extra: &[&str]) -> Result<Args, (String, i32)> {
        parse(BASE.iter().copied().chain(extra.iter().copied()))
    }

    fn error(extra: &[&str]) -> String {
        let (message, code) = run(extra).expect_err("the command line is refused");
        assert_eq!(code, 2, "{message}");
        assert_eq!(message.lines().count(), 1, "one line: {message}");
        message
    }

    #[test]
    fn a_complete_standalone_command_line_parses() {
        let args =
            run(&["--partitions", "0-3,7", "--kafka", "security.protocol=SSL", "--pin-core", "1"])
                .unwrap();
        assert_eq!(args.partitions, Some(Partitions(vec![0, 1, 2, 3, 7])));
        assert_eq!(args.brokers, "k1:9092,k2:9093");
        assert_eq!(args.kafka, [("security.protocol".to_owned(), "SSL".to_owned())]);
        assert_eq!(args.metrics_addr, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(args.pin_core, Some(1));
        assert!(args.dlq_topic.is_none());
        assert_eq!(args.output_framing, OutputFraming::Entity);
        let batch = run(&["--partitions", "0", "--output-framing", "batch"]).unwrap();
        assert_eq!(batch.output_framing, OutputFraming::Batch);
    }

    #[test]
    fn the_controlled_mode_needs_both_of_its_flags() {
        assert!(run(&["--control-topic", "zone-1.control", "--pod-id", "zone-1-0"]).is_ok());
        assert!(error(&["--control-topic", "zone-1.control"]).contains("--pod-id"));
        assert!(
            error(&["--partitions", "0", "--control-topic", "c", "--pod-id", "p"])
                .contains("cannot be used with")
        );
    }

    #[test]
    fn each_missing_required_flag_is_named() {
        for (i, flag) in
            ["--brokers", "--shard", "--input-topic", "--output-topic"].iter().enumerate()
        {
            let mut argv: Vec<&str> = BASE.to_vec();
            argv.drain(1 + 2 * i..3 + 2 * i);
            argv.extend(["--partitions", "0"]);
            let (message, code) = parse(argv).expect_err("refused");
            assert_eq!(code, 2);
            assert!(
                message.starts_with("error: missing ") && message.contains(flag),
                "{flag}: {message}"
            );
        }
        assert_eq!(
            error(&[]),
            "error: one of --partitions or --control-topic (with --pod-id) is required"
        );
    }

    #[test]
    fn bad_values_are_refused_in_one_line_naming_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--partitions", "0-x"], "--partitions"),
            (&["--partitions", "7-3"], "--partitions"),
            (&["--partitions", "1,1"], "--partitions"),
            (&["--partitions", ""], "--partitions"),
            (&["--partitions", "0", "--dlq-topic", "bad topic"], "--dlq-topic"),
            (&["--partitions", "0", "--metrics-addr", "nowhere"], "--metrics-addr"),
            (&["--partitions", "0", "--kafka", "novalue"], "--kafka"),
            (&["--partitions", "0", "--kafka", "group.id=x"], "--kafka"),
            (&["--partitions", "0", "--pin-core", "-1"], "--pin-core"),
            (&["--partitions", "0", "--snapshot-every-records", "0"], "--snapshot-every-records"),
            (&["--partitions", "0", "--bogus"], "--bogus"),
            (&["--partitions", "0", "--output-framing", "lines"], "--output-framing"),
        ];
        for (extra, flag) in cases {
            let message = error(extra);
            assert!(
                message.starts_with("error: ") && message.contains(flag),
                "{extra:?}: {message}"
            );
        }
        let message = parse([
            "gameshard-dataplane",
            "--brokers",
            "k1",
            "--shard",
            "s",
            "--input-topic",
            "i",
            "--output-topic",
            "o",
            "--partitions",
            "0",
        ])
        .expect_err("refused")
        .0;
        assert!(message.contains("--brokers") && message.contains("no port"), "{message}");
    }

    #[test]
    fn help_is_not_an_error() {
        let (text, code) = parse(["gameshard-dataplane", "--help"]).expect_err("help exits");
        assert_eq!(code, 0);
        assert!(text.contains("--brokers") && text.contains("GAMESHARD_BROKERS"));
    }
}
