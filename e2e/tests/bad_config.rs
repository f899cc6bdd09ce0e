//! Bad configuration: a clear one-line error naming the flag, a non-zero exit, and
//! nothing consumed.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gameshard_e2e::harness::dataplane;
use gameshard_e2e::harness::kafka;
use gameshard_e2e::harness::zone::Zone;
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
    let base = |input: &str, output: &str, partitions: &str| -> Vec<String> {
        [
            "--brokers",
            &b,
            "--shard",
            "zone-a",
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
    assert_refused(&run(&refs(&base("missing", "updates", "0")), &[]), 1, "--input-topic");
    assert_refused(&run(&refs(&base("events", "missing", "0")), &[]), 1, "--output-topic");
    assert_refused(&run(&refs(&base("events", "updates", "0-2")), &[]), 1, "--partitions");
    let mut dlq = base("events", "updates", "0");
    dlq.extend(["--dlq-topic".into(), "missing".into()]);
    assert_refused(&run(&refs(&dlq), &[]), 1, "--dlq-topic");
    kafka::create_topics(&b, &[("narrow", 1)]).expect("topic");
    assert_refused(&run(&refs(&base("events", "narrow", "0")), &[]), 1, "--output-topic");

    // Nothing was consumed, committed or published.
    assert_eq!(kafka::high_watermarks(&b, "updates", 2).expect("watermarks"), [0, 0]);
    let group: BaseConsumer = kafka::config(&b).set("group.id", "zone-a").create().expect("client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("events", 0);
    tpl.add_partition("events", 1);
    let committed =
        group.committed_offsets(tpl, Duration::from_secs(5)).expect("committed offsets");
    for e in committed.elements() {
        assert!(!matches!(e.offset(), Offset::Offset(_)), "no offset committed: {:?}", e.offset());
    }
}
