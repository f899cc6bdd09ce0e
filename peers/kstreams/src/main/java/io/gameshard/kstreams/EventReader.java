package io.gameshard.kstreams;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Splits an input record into its events and malformed units (specification section 2)
 * and validates each event object's fields, with Jackson.
 */
public final class EventReader {
  /** Longest id ({@code player}, {@code target}, {@code item}) in UTF-8 bytes. */
  public static final int MAX_ID_BYTES = 64;

  private static final int MAX_DAMAGE = 100;

  private final ObjectMapper mapper;

  /** A reader with its own Jackson mapper. */
  public EventReader() {
    // JSON allows numbers of any length; a coordinate of 400 digits is a number out of
    // range, not invalid JSON, so Jackson's default length limit is lifted.
    JsonFactory factory =
        JsonFactory.builder()
            .streamReadConstraints(
                StreamReadConstraints.builder().maxNumberLength(Integer.MAX_VALUE).build())
            .build();
    mapper = new ObjectMapper(factory).enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
  }

  /** What a record holds: its events in order, and its malformed units. */
  public record Parsed(List<Event> events, List<Unit> malformed) {}

  /**
   * A malformed unit: one NDJSON line, or a whole record (a record malformed as a whole,
   * or an array with bad elements, once, with the first bad element's reason).
   */
  public record Unit(String reason, byte[] bytes) {}

  /** Reads the events of one input record value. */
  public Parsed read(byte[] value) {
    List<Event> events = new ArrayList<>();
    List<Unit> malformed = new ArrayList<>();
    if (!isUtf8(value)) {
      malformed.add(new Unit("not_utf8", value));
      return new Parsed(events, malformed);
    }
    int first = 0;
    while (first < value.length && isWhitespace(value[first])) {
      first++;
    }
    if (first == value.length) {
      malformed.add(new Unit("no_event", value));
    } else if (value[first] == '{') {
      readLines(value, events, malformed);
    } else if (value[first] == '[') {
      readArray(value, events, malformed);
    } else {
      malformed.add(new Unit("bad_framing", value));
    }
    return new Parsed(events, malformed);
  }

  private void readLines(byte[] value, List<Event> events, List<Unit> malformed) {
    int start = 0;
    while (start <= value.length) {
      int end = start;
      while (end < value.length && value[end] != '\n') {
        end++;
      }
      if (!blank(value, start, end)) {
        try {
          events.add(event(parse(value, start, end - start)));
        } catch (Malformed m) {
          malformed.add(new Unit(m.reason(), Arrays.copyOfRange(value, start, end)));
        }
      }
      start = end + 1;
    }
  }

  private void readArray(byte[] value, List<Event> events, List<Unit> malformed) {
    JsonNode root;
    try {
      root = parse(value, 0, value.length);
    } catch (Malformed m) {
      malformed.add(new Unit(m.reason(), value));
      return;
    }
    if (root.isEmpty()) {
      malformed.add(new Unit("no_event", value));
      return;
    }
    String firstBad = null;
    for (JsonNode element : root) {
      try {
        events.add(event(element));
      } catch (Malformed m) {
        if (firstBad == null) {
          firstBad = m.reason();
        }
      }
    }
    if (firstBad != null) {
      malformed.add(new Unit(firstBad, value));
    }
  }

  private JsonNode parse(byte[] bytes, int offset, int length) throws Malformed {
    try {
      return mapper.readTree(bytes, offset, length);
    } catch (JsonProcessingException e) {
      throw new Malformed("invalid_json");
    } catch (IOException e) {
      throw new Malformed("invalid_json");
    }
  }

  /** Validates one event object, in the order of the data plane's rules. */
  static Event event(JsonNode node) throws Malformed {
    if (!node.isObject()) {
      throw new Malformed("not_an_object");
    }
    JsonNode kind = node.get("type");
    if (kind == null) {
      throw new Malformed("missing_type");
    }
    if (!kind.isTextual()) {
      throw new Malformed("mistyped_type");
    }
    String player = id(node, "player");
    long seq = integer(node, "seq", 0, Long.MAX_VALUE);
    return switch (kind.textValue()) {
      case "spawn" ->
          new Event(
              Event.Type.SPAWN,
              player,
              seq,
              optionalNumber(node, "x"),
              optionalNumber(node, "y"),
              optionalNumber(node, "z"),
              0,
              0,
              null,
              0,
              null);
      case "move" ->
          new Event(
              Event.Type.MOVE,
              player,
              seq,
              number(node, "x"),
              number(node, "y"),
              number(node, "z"),
              0,
              0,
              null,
              0,
              null);
      case "rotate" -> {
        double yaw = number(node, "yaw");
        double pitch = number(node, "pitch");
        yield new Event(Event.Type.ROTATE, player, seq, 0, 0, 0, yaw, pitch, null, 0, null);
      }
      case "shoot" -> {
        String target = id(node, "target");
        int damage = (int) integer(node, "damage", 1, MAX_DAMAGE);
        yield new Event(Event.Type.SHOOT, player, seq, 0, 0, 0, 0, 0, target, damage, null);
      }
      case "loot" ->
          new Event(Event.Type.LOOT, player, seq, 0, 0, 0, 0, 0, null, 0, id(node, "item"));
      default -> throw new Malformed("unknown_type");
    };
  }

  /** A string of 1 to {@link #MAX_ID_BYTES} UTF-8 bytes. */
  private static String id(JsonNode node, String field) throws Malformed {
    JsonNode v = node.get(field);
    if (v == null) {
      throw new Malformed("missing_" + field);
    }
    if (!v.isTextual()) {
      throw new Malformed("mistyped_" + field);
    }
    String s = v.textValue();
    int bytes = utf8Length(s);
    if (bytes == 0 || bytes > MAX_ID_BYTES) {
      throw new Malformed("out_of_range_" + field);
    }
    return s;
  }

  /** A JSON number written without fraction or exponent, within {@code min..max}. */
  private static long integer(JsonNode node, String field, long min, long max) throws Malformed {
    JsonNode v = node.get(field);
    if (v == null) {
      throw new Malformed("missing_" + field);
    }
    if (!v.isIntegralNumber()) {
      throw new Malformed("mistyped_" + field);
    }
    if (!v.canConvertToLong() || v.longValue() < min || v.longValue() > max) {
      throw new Malformed("out_of_range_" + field);
    }
    return v.longValue();
  }

  /** Any JSON number whose value is finite as a double. */
  private static double number(JsonNode node, String field) throws Malformed {
    JsonNode v = node.get(field);
    if (v == null) {
      throw new Malformed("missing_" + field);
    }
    return finite(v, field);
  }

  /** Like {@link #number}, 0 when absent. */
  private static double optionalNumber(JsonNode node, String field) throws Malformed {
    JsonNode v = node.get(field);
    return v == null ? 0.0 : finite(v, field);
  }

  private static double finite(JsonNode v, String field) throws Malformed {
    if (!v.isNumber()) {
      throw new Malformed("mistyped_" + field);
    }
    double d = v.doubleValue();
    if (!Double.isFinite(d)) {
      throw new Malformed("out_of_range_" + field);
    }
    return d;
  }

  /** The length of {@code s} in UTF-8, without encoding it. */
  static int utf8Length(String s) {
    int bytes = 0;
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c < 0x80) {
        bytes += 1;
      } else if (c < 0x800) {
        bytes += 2;
      } else if (Character.isHighSurrogate(c)
          && i + 1 < s.length()
          && Character.isLowSurrogate(s.charAt(i + 1))) {
        bytes += 4;
        i++;
      } else {
        bytes += 3;
      }
    }
    return bytes;
  }

  private static boolean isUtf8(byte[] value) {
    try {
      StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(value));
      return true;
    } catch (CharacterCodingException e) {
      return false;
    }
  }

  private static boolean blank(byte[] value, int start, int end) {
    for (int i = start; i < end; i++) {
      if (!isWhitespace(value[i])) {
        return false;
      }
    }
    return true;
  }

  private static boolean isWhitespace(byte b) {
    return b == ' ' || b == '\t' || b == '\n' || b == '\r';
  }
}
