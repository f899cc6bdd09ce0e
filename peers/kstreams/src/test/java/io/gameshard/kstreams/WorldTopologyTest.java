package io.gameshard.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Collectors;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.test.TestRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class WorldTopologyTest {
  private static final ObjectMapper JSON = new ObjectMapper();

  @TempDir java.nio.file.Path state;

  private TopologyTestDriver driver;
  private TestInputTopic<byte[], byte[]> events;
  private TestOutputTopic<String, String> updates;
  private TestOutputTopic<byte[], byte[]> dead;

  @BeforeEach
  void start() {
    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, "world-test");
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
    props.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
    driver = new TopologyTestDriver(WorldTopology.build("events", "updates", "dead"), props);
    events =
        driver.createInputTopic(
            "events", Serdes.ByteArray().serializer(), Serdes.ByteArray().serializer());
    updates =
        driver.createOutputTopic(
            "updates", Serdes.String().deserializer(), Serdes.String().deserializer());
    dead =
        driver.createOutputTopic(
            "dead", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer());
  }

  @AfterEach
  void stop() {
    driver.close();
  }

  private void send(String value, long timestamp) {
    events.pipeInput(new TestRecord<>(null, value.getBytes(StandardCharsets.UTF_8), null, timestamp));
  }

  private Map<String, JsonNode> latest() throws Exception {
    Map<String, JsonNode> out = new java.util.LinkedHashMap<>();
    for (TestRecord<String, String> r : updates.readRecordsToList()) {
      out.put(r.key(), JSON.readTree(r.value()));
    }
    return out;
  }

  @Test
  void aRecordPublishesEachChangedEntityOnceWithItsFullState() throws Exception {
    send(
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1,\"x\":1.25}\n"
            + "{\"type\":\"spawn\",\"player\":\"b\",\"seq\":1}\n"
            + "{\"type\":\"rotate\",\"player\":\"a\",\"seq\":2,\"yaw\":-90,\"pitch\":120}\n"
            + "{\"type\":\"shoot\",\"player\":\"a\",\"seq\":3,\"target\":\"b\",\"damage\":30}\n"
            + "{\"type\":\"loot\",\"player\":\"b\",\"seq\":2,\"item\":\"chest\"}",
        1_700_000_000_123L);
    List<TestRecord<String, String>> records = updates.readRecordsToList();
    assertEquals(
        List.of("player:a", "player:b", "item:chest"),
        records.stream().map(TestRecord::key).collect(Collectors.toList()));
    JsonNode a = JSON.readTree(records.get(0).value());
    assertEquals(
        JSON.readTree(
            "{\"kind\":\"player\",\"id\":\"a\",\"x\":1.25,\"y\":0.0,\"z\":0.0,\"yaw\":270.0,"
                + "\"pitch\":90.0,\"hp\":100,\"alive\":true,\"score\":0,\"loot\":0,\"seq\":3,"
                + "\"src_partition\":0,\"src_offset\":0,\"src_ts\":1700000000123}"),
        a);
    JsonNode b = JSON.readTree(records.get(1).value());
    assertEquals(70, b.get("hp").intValue());
    assertEquals(1, b.get("loot").intValue());
    assertEquals(
        JSON.readTree(
            "{\"kind\":\"item\",\"id\":\"chest\",\"claimed_by\":\"b\",\"src_partition\":0,"
                + "\"src_offset\":0,\"src_ts\":1700000000123}"),
        JSON.readTree(records.get(2).value()));
    assertTrue(dead.isEmpty());
  }

  @Test
  void theWorldPersistsAcrossRecordsInTheStores() throws Exception {
    send("[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1},{\"type\":\"spawn\",\"player\":\"b\",\"seq\":1}]", 1);
    updates.readRecordsToList();
    send("{\"type\":\"shoot\",\"player\":\"a\",\"seq\":2,\"target\":\"b\",\"damage\":100}", 2);
    Map<String, JsonNode> second = latest();
    assertEquals(1, second.get("player:a").get("score").intValue());
    assertEquals(false, second.get("player:b").get("alive").booleanValue());
    assertEquals(1, second.get("player:b").get("src_offset").intValue());
    send("{\"type\":\"move\",\"player\":\"b\",\"seq\":2,\"x\":1,\"y\":1,\"z\":1}", 3);
    Map<String, JsonNode> third = latest();
    assertEquals(List.of("player:b"), List.copyOf(third.keySet()));
    assertEquals(0.0, third.get("player:b").get("x").doubleValue());
    assertEquals(2, third.get("player:b").get("seq").intValue());
    send("{\"type\":\"move\",\"player\":\"b\",\"seq\":2,\"x\":1,\"y\":1,\"z\":1}", 4);
    assertTrue(updates.isEmpty(), "a stale event changes nothing");
  }

  @Test
  void malformedUnitsGoToTheDeadLetterTopicWithTheirSource() {
    send("{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}", 1);
    String bad = "{\"type\":\"move\",\"player\":\"p1\"}";
    send("{\"type\":\"spawn\",\"player\":\"c\",\"seq\":1}\n" + bad, 2);
    send("garbage", 3);
    List<TestRecord<byte[], byte[]>> letters = dead.readRecordsToList();
    assertEquals(2, letters.size());
    TestRecord<byte[], byte[]> line = letters.get(0);
    assertEquals(bad, new String(line.value(), StandardCharsets.UTF_8));
    assertEquals("missing_seq", header(line, "gameshard-error"));
    assertEquals("0", header(line, "gameshard-src-partition"));
    assertEquals("1", header(line, "gameshard-src-offset"));
    assertEquals("garbage", new String(letters.get(1).value(), StandardCharsets.UTF_8));
    assertEquals("bad_framing", header(letters.get(1), "gameshard-error"));
    assertEquals("2", header(letters.get(1), "gameshard-src-offset"));
  }

  private static String header(TestRecord<byte[], byte[]> r, String name) {
    return new String(r.headers().lastHeader(name).value(), StandardCharsets.UTF_8);
  }
}
