package io.gameshard.kstreams;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

/**
 * {@code gameshard-kstreams}: the specification's world as a Kafka Streams application.
 *
 * <pre>
 * java -jar gameshard-kstreams.jar --bootstrap-servers HOST:PORT --application-id ID
 *     --input-topic T --output-topic T [--dlq-topic T] [--state-dir DIR]
 *     [--config KEY=VALUE ...]
 * </pre>
 *
 * <p>Everything else is Kafka Streams' defaults, except two stream threads: at-least-once
 * processing, persistent stores with their changelogs, record caches, the commit interval.
 * Prints {@code gameshard-kstreams: RUNNING} on standard output once every thread runs,
 * and stops cleanly on SIGTERM.
 */
public final class Peer {
  private Peer() {}

  /** Runs the peer until SIGTERM or a fatal error (exit status 1). */
  public static void main(String[] args) throws InterruptedException {
    Properties props = new Properties();
    props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 2);
    String input = null;
    String output = null;
    String deadLetters = null;
    for (int i = 0; i < args.length; i++) {
      String flag = args[i];
      if (i + 1 >= args.length) {
        usage(flag + " needs a value");
      }
      String value = args[++i];
      switch (flag) {
        case "--bootstrap-servers" -> props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, value);
        case "--application-id" -> props.put(StreamsConfig.APPLICATION_ID_CONFIG, value);
        case "--state-dir" -> props.put(StreamsConfig.STATE_DIR_CONFIG, value);
        case "--input-topic" -> input = value;
        case "--output-topic" -> output = value;
        case "--dlq-topic" -> deadLetters = value;
        case "--config" -> {
          int eq = value.indexOf('=');
          if (eq <= 0) {
            usage("--config takes KEY=VALUE, not " + value);
          }
          props.put(value.substring(0, eq), value.substring(eq + 1));
        }
        default -> usage("unknown flag " + flag);
      }
    }
    for (String required : new String[] {"bootstrap.servers", "application.id"}) {
      if (!props.containsKey(required)) {
        usage("--" + required.replace('.', '-') + " is required");
      }
    }
    if (input == null || output == null) {
      usage("--input-topic and --output-topic are required");
    }

    KafkaStreams streams =
        new KafkaStreams(WorldTopology.build(input, output, deadLetters), props);
    CountDownLatch stopped = new CountDownLatch(1);
    int[] status = {0};
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.RUNNING) {
            System.out.println("gameshard-kstreams: RUNNING");
            System.out.flush();
          } else if (now == KafkaStreams.State.ERROR) {
            status[0] = 1;
          }
          if (now == KafkaStreams.State.NOT_RUNNING || now == KafkaStreams.State.ERROR) {
            stopped.countDown();
          }
        });
    streams.setUncaughtExceptionHandler(
        e -> StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close(Duration.ofSeconds(30));
                  stopped.countDown();
                },
                "gameshard-kstreams-shutdown"));
    streams.start();
    stopped.await();
    if (status[0] != 0) {
      System.err.println("gameshard-kstreams: a stream thread failed; see the log above");
      streams.close(Duration.ofSeconds(10));
      System.exit(status[0]);
    }
  }

  private static void usage(String problem) {
    System.err.println("gameshard-kstreams: " + problem);
    System.err.println(
        "usage: gameshard-kstreams --bootstrap-servers HOST:PORT --application-id ID"
            + " --input-topic T --output-topic T [--dlq-topic T] [--state-dir DIR]"
            + " [--config KEY=VALUE ...]");
    System.exit(2);
  }
}
