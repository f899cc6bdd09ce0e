package io.gameshard.kstreams;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Applies each input record's events to the task's world, kept in two state stores
 * (players and items), and forwards one update per entity the record changed, then its
 * malformed units to the dead-letter sink.
 */
public final class WorldProcessor implements Processor<byte[], byte[], Object, Object> {
  private static final Logger LOG = LoggerFactory.getLogger(WorldProcessor.class);

  private final EventReader reader = new EventReader();
  private final boolean deadLetters;
  private ProcessorContext<Object, Object> context;
  private KeyValueStore<String, Player> players;
  private KeyValueStore<String, String> items;

  /** A processor that forwards malformed units when {@code deadLetters} is set. */
  public WorldProcessor(boolean deadLetters) {
    this.deadLetters = deadLetters;
  }

  @Override
  public void init(ProcessorContext<Object, Object> context) {
    this.context = context;
    this.players = context.getStateStore(WorldTopology.PLAYERS);
    this.items = context.getStateStore(WorldTopology.ITEMS);
  }

  @Override
  public void process(Record<byte[], byte[]> record) {
    RecordMetadata source = context.recordMetadata().orElseThrow();
    int partition = source.partition();
    long offset = source.offset();
    byte[] value = record.value() == null ? new byte[0] : record.value();
    EventReader.Parsed parsed = reader.read(value);

    // Each entity is read from its store once per record and written back once, with
    // the state after the record's last change to it.
    Changes changes = new Changes();
    for (Event e : parsed.events()) {
      World.apply(e, changes);
    }
    for (Map.Entry<String, Player> c : changes.changedPlayers.entrySet()) {
      players.put(c.getKey(), c.getValue());
      Update u = Update.OfPlayer.of(c.getKey(), c.getValue(), partition, offset, record.timestamp());
      context.forward(
          new Record<Object, Object>("player:" + c.getKey(), u, record.timestamp()),
          WorldTopology.UPDATES);
    }
    for (Map.Entry<String, String> c : changes.claims.entrySet()) {
      items.put(c.getKey(), c.getValue());
      Update u = Update.OfItem.of(c.getKey(), c.getValue(), partition, offset, record.timestamp());
      context.forward(
          new Record<Object, Object>("item:" + c.getKey(), u, record.timestamp()),
          WorldTopology.UPDATES);
    }

    for (EventReader.Unit unit : parsed.malformed()) {
      LOG.debug("malformed unit at partition {} offset {}: {}", partition, offset, unit.reason());
      if (!deadLetters) {
        continue;
      }
      RecordHeaders headers = new RecordHeaders();
      headers.add("gameshard-error", unit.reason().getBytes(StandardCharsets.UTF_8));
      headers.add(
          "gameshard-src-partition", Integer.toString(partition).getBytes(StandardCharsets.UTF_8));
      headers.add("gameshard-src-offset", Long.toString(offset).getBytes(StandardCharsets.UTF_8));
      context.forward(
          new Record<Object, Object>(
              null, new DeadLetter(partition, unit.bytes()), record.timestamp(), headers),
          WorldTopology.DEAD_LETTERS);
    }
  }

  /** The world as one record sees it: the stores, plus what the record changed so far. */
  private final class Changes implements WorldState {
    private final Map<String, Player> loaded = new HashMap<>();
    final Map<String, Player> changedPlayers = new LinkedHashMap<>();
    final Map<String, String> claims = new LinkedHashMap<>();

    @Override
    public Player player(String id) {
      // The same instance for every read within the record, so that changes made in
      // place are seen by the record's later events.
      return loaded.computeIfAbsent(id, players::get);
    }

    @Override
    public void playerChanged(String id, Player p) {
      loaded.put(id, p);
      changedPlayers.put(id, p);
    }

    @Override
    public boolean claimed(String item) {
      return claims.containsKey(item) || items.get(item) != null;
    }

    @Override
    public void claim(String item, String player) {
      claims.put(item, player);
    }
  }
}
