package io.gameshard.kstreams;

/**
 * One well-formed event of the specification (section 2). Fields a type does not use
 * hold zero or {@code null}.
 */
public record Event(
    Type type,
    String player,
    long seq,
    double x,
    double y,
    double z,
    double yaw,
    double pitch,
    String target,
    int damage,
    String item) {

  /** The event types. */
  public enum Type {
    SPAWN,
    MOVE,
    ROTATE,
    SHOOT,
    LOOT
  }
}
