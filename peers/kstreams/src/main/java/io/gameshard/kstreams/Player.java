package io.gameshard.kstreams;

/**
 * A player's state, as the state store keeps it (as JSON, through {@link JsonSerde}).
 * Mutable: the rules change it in place and the processor writes it back.
 */
public final class Player {
  /** Position. */
  public double x;

  /** Position. */
  public double y;

  /** Position. */
  public double z;

  /** Heading in degrees, in [0, 360). */
  public double yaw;

  /** Pitch in degrees, in [-90, 90]. */
  public double pitch;

  /** Hit points, 0 to 100. */
  public int hp;

  /** Whether the player is alive. */
  public boolean alive;

  /** Kills. */
  public long score;

  /** Items claimed. */
  public long loot;

  /** Highest sequence number seen from the player. */
  public long seq;

  /** A freshly spawned player at the given position (rule 1). */
  static Player spawned(double x, double y, double z, long seq) {
    Player p = new Player();
    p.x = x;
    p.y = y;
    p.z = z;
    p.hp = World.FULL_HP;
    p.alive = true;
    p.seq = seq;
    return p;
  }
}
