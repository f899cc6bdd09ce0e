//! Bad configuration: a clear one-line error naming the flag (or the Kafka setting), a
//! non-zero exit, and nothing consumed. Refused credentials and an untrusted CA are
//! named within seconds, not after the broker check's timeout.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gameshard_e2e::harness::broker::Broker;
use gameshard_e2e::harness::dataplane;
use gameshard_e2e::harness::zone::{EVENTS, TempDir, UPDATES, Zone};
use gameshard_e2e::harness::{kafka, tls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(dataplane::binary().expect("data plane binary"));
    command.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GAMESHARD_")) {
        command.env_remove(k);
    }
    command.envs(env.iter().copied()).output().expect("runs")
}

/// Asserts a failed start: exit `code`, exactly one line on stderr, naming `flag`.
fn assert_refused(out: &Output, code: i32, flag: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {stderr}");
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(flag),
        "names {flag}: {}",
        lines[0]
    );
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

const FULL: [&str; 10] = [
    "--brokers",
    "127.0.0.1:9",
    "--shard",
    "zone-a",
    "--input-topic",
    "events",
    "--output-topic",
    "updates",
    "--partitions",
    "0",
];

#[test]
fn each_missing_required_flag_is_named() {
    for flag in ["--brokers", "--shard", "--input-topic", "--output-topic"] {
        let i = FULL.iter().position(|a| *a == flag).expect("flag in the full command line");
        let args: Vec<&str> = FULL
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && *j != i + 1)
            .map(|(_, a)| *a)
            .collect();
        assert_refused(&run(&args, &[]), 2, flag);
    }
    assert_refused(&run(&FULL[..8], &[]), 2, "--partitions");
}

#[test]
fn bad_values_are_named_before_anything_connects() {
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [FULL.as_slice(), extra].concat()
    }
    assert_refused(&run(&with(&["--partitions", "3-1"]), &[]), 2, "--partitions");
    assert_refused(&run(&with(&["--kafka", "enable.auto.commit=true"]), &[]), 2, "--kafka");
    assert_refused(&run(&with(&["--metrics-addr", "localhost"]), &[]), 2, "--metrics-addr");
    assert_refused(&run(&with(&["--pin-core", "4096"]), &[]), 1, "--pin-core");
    assert_refused(
        &run(&[], &[("GAMESHARD_BROKERS", "nope"), ("GAMESHARD_SHARD", "s")]),
        2,
        "--brokers",
    );
}

#[test]
fn an_unreachable_broker_is_named_and_every_flag_reads_its_variable() {
    // Everything from the environment: parsing passes, the broker check fails.
    let env = [
        ("GAMESHARD_BROKERS", "127.0.0.1:9"),
        ("GAMESHARD_SHARD", "zone-a"),
        ("GAMESHARD_INPUT_TOPIC", "events"),
        ("GAMESHARD_OUTPUT_TOPIC", "updates"),
        ("GAMESHARD_PARTITIONS", "0-3"),
        ("GAMESHARD_KAFKA", "socket.timeout.ms=2000;reconnect.backoff.max.ms=200"),
    ];
    // Built first (once per test binary), so that the time is the data plane's alone.
    dataplane::binary().expect("data plane binary");
    let started = Instant::now();
    assert_refused(&run(&[], &env), 1, "--brokers");
    // It gives up after its 10 s check rather than retrying forever.
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn unknown_topics_and_partitions_are_named_and_nothing_is_consumed() {
    let Some(zone) = Zone::start("badconfig", 2).expect("zone starts") else { return };
    let b = zone.bootstrap();
    zone.produce(&[(0, br#"{"type":"spawn","player":"a","seq":1}"#.to_vec())]).expect("produce");
    let (events, updates, missing, narrow) =
        (zone.topic(EVENTS), zone.topic(UPDATES), zone.topic("missing"), zone.topic("narrow"));
    let base = |input: &str, output: &str, partitions: &str| -> Vec<String> {
        [
            "--brokers",
            &b,
            "--shard",
            zone.name(),
            "--input-topic",
            input,
            "--output-topic",
            output,
            "--partitions",
            partitions,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    assert_refused(&run(&refs(&base(&missing, &updates, "0")), &[]), 1, "--input-topic");
    assert_refused(&run(&refs(&base(&events, &missing, "0")), &[]), 1, "--output-topic");
    assert_refused(&run(&refs(&base(&events, &updates, "0-2")), &[]), 1, "--partitions");
    let mut dlq = base(&events, &updates, "0");
    dlq.extend(["--dlq-topic".into(), missing.clone()]);
    assert_refused(&run(&refs(&dlq), &[]), 1, "--dlq-topic");
    kafka::create_topics(&b, &[(&narrow, 1)]).expect("topic");
    assert_refused(&run(&refs(&base(&events, &narrow, "0")), &[]), 1, "--output-topic");

    // Nothing was consumed, committed or published.
    assert_eq!(kafka::high_watermarks(&b, &updates, 2).expect("watermarks"), [0, 0]);
    let group: BaseConsumer =
        kafka::config(&b).set("group.id", zone.name()).create().expect("client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&events, 0);
    tpl.add_partition(&events, 1);
    let committed =
        group.committed_offsets(tpl, Duration::from_secs(5)).expect("committed offsets");
    for e in committed.elements() {
        assert!(!matches!(e.offset(), Offset::Offset(_)), "no offset committed: {:?}", e.offset());
    }
}

/// Runs the data plane against the broker's `SASL_SSL` listener with `settings` in a
/// credentials folder, and asserts that it is refused within seconds with one line
/// that starts with `setting`.
fn assert_security_refused(
    zone: &Zone,
    broker: &Broker,
    settings: &[(String, String)],
    setting: &str,
) {
    let secret = TempDir::new("bad-credentials").expect("temp dir");
    kafka::write_settings_dir(&secret.0, settings).expect("settings written");
    let args = zone.args_via(
        &broker.sasl_bootstrap(),
        &["--kafka-config-dir", secret.0.to_str().expect("UTF-8 path")],
    );
    let started = Instant::now();
    let out = run(&refs(&args), &[]);
    let took = started.elapsed();
    assert_refused(&out, 1, setting);
    let line = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(line.starts_with(&format!("error: {setting}: ")), "starts with the setting: {line}");
    assert!(took < Duration::from_secs(5), "refused in {took:?}, not after a timeout: {line}");
}

#[test]
fn refused_credentials_and_an_untrusted_ca_exit_within_seconds_naming_the_setting() {
    let Some(broker) = Broker::shared().expect("broker starts") else { return };
    let zone = Zone::on(broker, "badsecurity", 1).expect("zone");
    dataplane::binary().expect("data plane binary");
    let with = |key: &str, value: &str| -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> =
            broker.sasl_settings().into_iter().filter(|(k, _)| k != key).collect();
        settings.push((key.to_owned(), value.to_owned()));
        settings
    };
    assert_security_refused(
        &zone,
        broker,
        &with("sasl.password", "not-the-password"),
        "sasl.password",
    );
    assert_security_refused(&zone, broker, &with("sasl.username", "nobody"), "sasl.password");

    // A CA that did not sign the broker's certificate, inline or as a file.
    let dir = TempDir::new("other-ca").expect("temp dir");
    let other = tls::ca(&dir.0, "another-ca").expect("CA made");
    let pem = std::fs::read_to_string(&other).expect("CA read");
    assert_security_refused(&zone, broker, &with("ssl.ca.pem", &pem), "ssl.ca.pem");
    let mut located: Vec<(String, String)> =
        broker.sasl_settings().into_iter().filter(|(k, _)| k != "ssl.ca.pem").collect();
    located.push(("ssl.ca.location".into(), other.to_str().expect("UTF-8 path").into()));
    assert_security_refused(&zone, broker, &located, "ssl.ca.location");
}
