package io.gameshard.kstreams;

/**
 * Thrown when an event, a line or a record breaks a rule of the event format. Its
 * message is the reason written to the dead-letter topic's {@code gameshard-error}
 * header, the same labels the data plane uses.
 */
public final class Malformed extends Exception {
  private static final long serialVersionUID = 1L;

  /** A malformed unit with the given reason label. */
  public Malformed(String reason) {
    // Malformed input is expected traffic, not a bug: no stack trace to fill in.
    super(reason, null, false, false);
  }

  /** The reason label. */
  public String reason() {
    return getMessage();
  }
}
