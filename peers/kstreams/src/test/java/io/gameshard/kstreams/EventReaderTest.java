package io.gameshard.kstreams;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.nio.charset.StandardCharsets;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class EventReaderTest {
  private final EventReader reader = new EventReader();

  private EventReader.Parsed read(String s) {
    return reader.read(s.getBytes(StandardCharsets.UTF_8));
  }

  private static List<String> reasons(EventReader.Parsed p) {
    return p.malformed().stream().map(EventReader.Unit::reason).toList();
  }

  @Test
  void ndjsonLinesAreEventsAndEmptyLinesAreIgnored() {
    EventReader.Parsed p =
        read(
            "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}\n\n  \r\n"
                + "{\"type\":\"move\",\"player\":\"a\",\"seq\":2,\"x\":1.5,\"y\":-2,\"z\":3e1}\n");
    assertEquals(List.of(), p.malformed());
    assertEquals(2, p.events().size());
    Event move = p.events().get(1);
    assertEquals(Event.Type.MOVE, move.type());
    assertEquals(1.5, move.x());
    assertEquals(-2.0, move.y());
    assertEquals(30.0, move.z());
  }

  @Test
  void onlyTheBadLineOfAnNdjsonRecordIsMalformed() {
    String bad = "{\"type\":\"move\",\"player\":\"p1\"}";
    EventReader.Parsed p = read("{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1}\n" + bad + "\nnope");
    assertEquals(1, p.events().size());
    assertEquals(List.of("missing_seq", "invalid_json"), reasons(p));
    assertArrayEquals(bad.getBytes(StandardCharsets.UTF_8), p.malformed().get(0).bytes());
  }

  @Test
  void anArrayWithBadElementsIsOneDeadLetterWithTheFirstReason() {
    String record =
        "[{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1},{\"type\":\"loot\"},7,"
            + "{\"type\":\"spawn\",\"player\":\"b\",\"seq\":1}]";
    EventReader.Parsed p = read(record);
    assertEquals(2, p.events().size());
    assertEquals(List.of("missing_player"), reasons(p));
    assertArrayEquals(record.getBytes(StandardCharsets.UTF_8), p.malformed().get(0).bytes());
  }

  @ParameterizedTest(name = "record {0} is malformed as a whole: {1}")
  @CsvSource(
      delimiter = '|',
      value = {
        "this is not an event|bad_framing",
        "'   '|no_event",
        "[]|no_event",
        "[{\"type\":\"spawn\"|invalid_json",
        "[1] [2]|invalid_json",
      })
  void recordsMalformedAsAWhole(String record, String reason) {
    EventReader.Parsed p = read(record);
    assertEquals(List.of(), p.events());
    assertEquals(List.of(reason), reasons(p));
  }

  @Test
  void aRecordThatIsNotUtf8IsMalformed() {
    byte[] bytes = {'{', '"', (byte) 0xff, '"', '}'};
    assertEquals(List.of("not_utf8"), reasons(reader.read(bytes)));
  }

  @ParameterizedTest(name = "{0} is malformed: {1}")
  @CsvSource(
      delimiter = '|',
      value = {
        "{\"player\":\"a\",\"seq\":1}|missing_type",
        "{\"type\":5,\"player\":\"a\",\"seq\":1}|mistyped_type",
        "{\"type\":\"fly\",\"player\":\"a\",\"seq\":1}|unknown_type",
        "{\"type\":\"fly\",\"seq\":1}|missing_player",
        "{\"type\":\"spawn\",\"player\":\"\",\"seq\":1}|out_of_range_player",
        "{\"type\":\"spawn\",\"player\":7,\"seq\":1}|mistyped_player",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":-1}|out_of_range_seq",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":9223372036854775808}|out_of_range_seq",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1.0}|mistyped_seq",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1e2}|mistyped_seq",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":\"1\"}|mistyped_seq",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1,\"x\":1e400}|out_of_range_x",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1,\"y\":null}|mistyped_y",
        "{\"type\":\"move\",\"player\":\"a\",\"seq\":1,\"x\":1,\"y\":2}|missing_z",
        "{\"type\":\"rotate\",\"player\":\"a\",\"seq\":1,\"pitch\":2}|missing_yaw",
        "{\"type\":\"rotate\",\"player\":\"a\",\"seq\":1,\"yaw\":2,\"pitch\":true}|mistyped_pitch",
        "{\"type\":\"shoot\",\"player\":\"a\",\"seq\":1,\"damage\":5}|missing_target",
        "{\"type\":\"shoot\",\"player\":\"a\",\"seq\":1,\"target\":\"b\",\"damage\":0}|out_of_range_damage",
        "{\"type\":\"shoot\",\"player\":\"a\",\"seq\":1,\"target\":\"b\",\"damage\":101}|out_of_range_damage",
        "{\"type\":\"shoot\",\"player\":\"a\",\"seq\":1,\"target\":\"b\",\"damage\":5.5}|mistyped_damage",
        "{\"type\":\"loot\",\"player\":\"a\",\"seq\":1}|missing_item",
        "{\"type\":\"loot\",\"player\":\"a\",\"seq\":1,\"item\":[]}|mistyped_item",
        "[1,2]|not_an_object",
        "{\"type\":\"spawn\",\"player\":\"a\",\"seq\":1} x|invalid_json",
      })
  void fieldRulesGiveTheDataPlanesReasons(String line, String reason) {
    EventReader.Parsed p = read("{\"type\":\"spawn\",\"player\":\"z\",\"seq\":1}\n" + line);
    assertEquals(List.of(reason), reasons(p));
  }

  @Test
  void idsAreMeasuredInUtf8BytesAndRepeatedKeysKeepTheLastValue() {
    String sixtyFourBytes = "é".repeat(32);
    EventReader.Parsed ok =
        read("{\"type\":\"spawn\",\"player\":\"" + sixtyFourBytes + "\",\"seq\":1,\"seq\":2}");
    assertEquals(List.of(), ok.malformed());
    assertEquals(2, ok.events().get(0).seq());
    EventReader.Parsed tooLong =
        read("{\"type\":\"spawn\",\"player\":\"" + sixtyFourBytes + "x\",\"seq\":1}");
    assertEquals(List.of("out_of_range_player"), reasons(tooLong));
  }

  @Test
  void aSpawnsPositionDefaultsToTheOrigin() {
    Event e = read("{\"type\":\"spawn\",\"player\":\"a\",\"seq\":0,\"y\":4,\"extra\":{}}").events().get(0);
    assertEquals(0.0, e.x());
    assertEquals(4.0, e.y());
    assertEquals(0L, e.seq());
  }
}
