package io.gameshard.kstreams;

import java.util.Optional;
import java.util.Set;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.StreamPartitioner;
import org.apache.kafka.streams.state.Stores;

/**
 * The peer's topology: the input topic into the world processor, which owns the players
 * and items stores (persistent, with their default changelogs), and out to the update
 * and dead-letter topics, each to the partition number of its input.
 */
public final class WorldTopology {
  /** The players store: player id to state. */
  public static final String PLAYERS = "players";

  /** The items store: item id to the id of its claimant. */
  public static final String ITEMS = "items";

  /** The update sink. */
  public static final String UPDATES = "updates";

  /** The dead-letter sink. */
  public static final String DEAD_LETTERS = "dead-letters";

  private static final String SOURCE = "events";
  private static final String WORLD = "world";

  private WorldTopology() {}

  /**
   * The topology from {@code input} to {@code output}, and to {@code deadLetters} unless
   * it is {@code null}.
   */
  public static Topology build(String input, String output, String deadLetters) {
    Topology t = new Topology();
    t.addSource(SOURCE, Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(), input);
    t.addProcessor(WORLD, () -> new WorldProcessor(deadLetters != null), SOURCE);
    t.addStateStore(
        Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(PLAYERS),
            Serdes.String(),
            new JsonSerde<>(Player.class)),
        WORLD);
    t.addStateStore(
        Stores.keyValueStoreBuilder(
            Stores.persistentKeyValueStore(ITEMS), Serdes.String(), Serdes.String()),
        WORLD);
    Serializer<Update> updateJson = new JsonSerde<>(Update.class).serializer();
    StreamPartitioner<String, Update> updatePartition =
        (topic, key, value, partitions) -> Optional.of(Set.of(value.srcPartition()));
    t.addSink(UPDATES, output, Serdes.String().serializer(), updateJson, updatePartition, WORLD);
    if (deadLetters != null) {
      Serializer<DeadLetter> raw = (topic, value) -> value.bytes();
      StreamPartitioner<byte[], DeadLetter> deadPartition =
          (topic, key, value, partitions) -> Optional.of(Set.of(value.srcPartition()));
      t.addSink(
          DEAD_LETTERS, deadLetters, Serdes.ByteArray().serializer(), raw, deadPartition, WORLD);
    }
    return t;
  }
}
