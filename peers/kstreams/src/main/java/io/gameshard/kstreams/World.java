package io.gameshard.kstreams;

/** The specification's rules (section 3), checked in order for each event. */
public final class World {
  /** Hit points of a freshly spawned player. */
  public static final int FULL_HP = 100;

  /** The label of an applied event. */
  public static final String APPLIED = "applied";

  private World() {}

  /**
   * Applies {@code e} to {@code state}; returns {@link #APPLIED} or the rejection reason
   * label of section 3.
   */
  public static String apply(Event e, WorldState state) {
    Player p = state.player(e.player());
    if (e.type() == Event.Type.SPAWN) {
      // Rule 1.
      if (p == null) {
        state.playerChanged(e.player(), Player.spawned(e.x(), e.y(), e.z(), e.seq()));
        return APPLIED;
      }
      if (e.seq() <= p.seq) {
        return "stale_seq";
      }
      p.seq = e.seq();
      p.hp = FULL_HP;
      p.alive = true;
      p.x = e.x();
      p.y = e.y();
      p.z = e.z();
      state.playerChanged(e.player(), p);
      return APPLIED;
    }
    // Rule 2: the seq advances even when a later rule rejects the event.
    if (p == null) {
      return "unknown_player";
    }
    if (e.seq() <= p.seq) {
      return "stale_seq";
    }
    p.seq = e.seq();
    state.playerChanged(e.player(), p);
    // Rule 3.
    if (!p.alive) {
      return "dead";
    }
    return switch (e.type()) {
      case MOVE -> {
        p.x = e.x();
        p.y = e.y();
        p.z = e.z();
        yield APPLIED;
      }
      case ROTATE -> {
        p.yaw = normalizeYaw(e.yaw());
        p.pitch = Math.max(-90.0, Math.min(90.0, e.pitch()));
        yield APPLIED;
      }
      case SHOOT -> shoot(e, p, state);
      case LOOT -> loot(e, p, state);
      case SPAWN -> throw new IllegalStateException("spawn is handled by rule 1");
    };
  }

  /** Rule 6 for living player {@code p}. */
  private static String shoot(Event e, Player p, WorldState state) {
    Player t = state.player(e.target());
    if (t == null) {
      return "unknown_target";
    }
    if (e.target().equals(e.player())) {
      return "self_target";
    }
    if (!t.alive) {
      return "target_dead";
    }
    t.hp = Math.max(0, t.hp - e.damage());
    if (t.hp == 0) {
      t.alive = false;
      p.score += 1;
    }
    state.playerChanged(e.target(), t);
    return APPLIED;
  }

  /** Rule 7 for living player {@code p}. */
  private static String loot(Event e, Player p, WorldState state) {
    if (state.claimed(e.item())) {
      return "already_claimed";
    }
    state.claim(e.item(), e.player());
    p.loot += 1;
    return APPLIED;
  }

  /** {@code yaw mod 360} into [0, 360), as the Euclidean remainder. */
  static double normalizeYaw(double yaw) {
    double r = yaw % 360.0;
    if (r < 0) {
      r += 360.0;
    }
    // A tiny negative yaw rounds up to exactly 360, outside the range; and -0 is 0.
    return r >= 360.0 || r == 0.0 ? 0.0 : r;
  }
}
