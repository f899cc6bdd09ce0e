//! The Kafka Streams peer on the real broker does the data plane's work: over a stream
//! with malformed records, lines and array elements in both input framings, its output
//! folds to the reference model's final state and its dead letters are exactly the
//! malformed units, so the benchmark's comparison is between equal outputs.

use std::time::{Duration, Instant};

use gameshard_e2e::harness::kstreams::{self, Peer, Topics};
use gameshard_e2e::harness::zone::{DEAD, DeadLetters, EVENTS, UPDATES, Zone};
use gameshard_e2e::verify;

/// How long the peer may take to reach the model's state: its start-up (a consumer
/// group's first rebalance, creating its changelog topics) dominates.
const CONVERGE: Duration = Duration::from_secs(180);

#[test]
fn the_kafka_streams_peer_publishes_the_models_final_state_and_exact_dead_letters()
-> anyhow::Result<()> {
    let Some(jar) = kstreams::jar()? else { return Ok(()) };
    let Some(zone) = Zone::start("kstreams-model", 4)? else { return Ok(()) };
    // Some records before the peer starts (a backlog), the rest while it runs.
    let records = verify::stream(23, 300, 4, 480, 16);
    let (backlog, live) = records.split_at(records.len() / 2);
    zone.produce(backlog)?;
    let mut peer = Peer::start(
        &jar,
        &Topics {
            brokers: zone.bootstrap(),
            application_id: zone.name().to_owned(),
            input: zone.topic(EVENTS),
            output: zone.topic(UPDATES),
            dead_letters: Some(zone.topic(DEAD)),
            config: Vec::new(),
        },
    )?;
    peer.wait_running(CONVERGE)?;
    zone.produce(live)?;

    // The output converges to the model's final state: poll until it does, and report
    // the last difference if it never does.
    let deadline = Instant::now() + CONVERGE;
    loop {
        match zone.check(DeadLetters::ExactlyOnce) {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("peer log: {}", peer.log().display())));
            }
            Err(_) => {
                peer.check_alive()?;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    peer.terminate(Duration::from_secs(60))
}
