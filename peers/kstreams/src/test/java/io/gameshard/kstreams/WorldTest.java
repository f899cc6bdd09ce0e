package io.gameshard.kstreams;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class WorldTest {
  /** A world in maps, remembering which entities changed. */
  static final class Maps implements WorldState {
    final Map<String, Player> players = new HashMap<>();
    final Map<String, String> items = new HashMap<>();
    final Set<String> changed = new LinkedHashSet<>();

    @Override
    public Player player(String id) {
      return players.get(id);
    }

    @Override
    public void playerChanged(String id, Player p) {
      players.put(id, p);
      changed.add("player:" + id);
    }

    @Override
    public boolean claimed(String item) {
      return items.containsKey(item);
    }

    @Override
    public void claim(String item, String player) {
      items.put(item, player);
      changed.add("item:" + item);
    }

    String apply(Event e) {
      changed.clear();
      return World.apply(e, this);
    }
  }

  static Event spawn(String p, long seq, double x, double y, double z) {
    return new Event(Event.Type.SPAWN, p, seq, x, y, z, 0, 0, null, 0, null);
  }

  static Event move(String p, long seq, double x, double y, double z) {
    return new Event(Event.Type.MOVE, p, seq, x, y, z, 0, 0, null, 0, null);
  }

  static Event rotate(String p, long seq, double yaw, double pitch) {
    return new Event(Event.Type.ROTATE, p, seq, 0, 0, 0, yaw, pitch, null, 0, null);
  }

  static Event shoot(String p, long seq, String target, int damage) {
    return new Event(Event.Type.SHOOT, p, seq, 0, 0, 0, 0, 0, target, damage, null);
  }

  static Event loot(String p, long seq, String item) {
    return new Event(Event.Type.LOOT, p, seq, 0, 0, 0, 0, 0, null, 0, item);
  }

  @Test
  void spawnCreatesAFullHealthPlayerAtTheEventsPosition() {
    Maps w = new Maps();
    assertEquals("applied", w.apply(spawn("a", 5, 1, 2, 3)));
    Player a = w.players.get("a");
    assertEquals(100, a.hp);
    assertEquals(5, a.seq);
    assertEquals(3.0, a.z);
    assertEquals(Set.of("player:a"), w.changed);
  }

  @Test
  void respawnKeepsScoreLootAndOrientationAndRevives() {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    w.apply(spawn("b", 1, 0, 0, 0));
    w.apply(rotate("b", 2, 90, 10));
    w.apply(loot("b", 3, "i"));
    w.apply(shoot("a", 2, "b", 100));
    assertFalse(w.players.get("b").alive);
    assertEquals("applied", w.apply(spawn("b", 4, 7, 8, 9)));
    Player b = w.players.get("b");
    assertEquals(100, b.hp);
    assertEquals(90.0, b.yaw);
    assertEquals(1, b.loot);
    assertEquals(7.0, b.x);
  }

  @Test
  void aStaleSpawnIsRejectedAndChangesNothing() {
    Maps w = new Maps();
    w.apply(spawn("a", 5, 1, 1, 1));
    assertEquals("stale_seq", w.apply(spawn("a", 5, 2, 2, 2)));
    assertEquals(1.0, w.players.get("a").x);
    assertEquals(Set.of(), w.changed);
  }

  @Test
  void anEventFromAnUnknownPlayerLeavesNoTrace() {
    Maps w = new Maps();
    assertEquals("unknown_player", w.apply(move("a", 1, 1, 1, 1)));
    assertNull(w.players.get("a"));
    assertEquals(Set.of(), w.changed);
  }

  @Test
  void aStaleEventIsRejectedWithoutChangingTheSeq() {
    Maps w = new Maps();
    w.apply(spawn("a", 5, 0, 0, 0));
    assertEquals("stale_seq", w.apply(move("a", 5, 1, 1, 1)));
    assertEquals("stale_seq", w.apply(move("a", 4, 1, 1, 1)));
    assertEquals(0.0, w.players.get("a").x);
    assertEquals(5, w.players.get("a").seq);
  }

  @Test
  void aDeadPlayersEventIsRejectedButAdvancesItsSeq() {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    w.apply(spawn("b", 1, 0, 0, 0));
    w.apply(shoot("a", 2, "b", 100));
    assertEquals("dead", w.apply(move("b", 9, 1, 1, 1)));
    assertEquals(9, w.players.get("b").seq);
    assertEquals(0.0, w.players.get("b").x);
    assertEquals(Set.of("player:b"), w.changed);
    assertEquals("stale_seq", w.apply(move("b", 9, 1, 1, 1)));
  }

  @ParameterizedTest(name = "yaw {0} normalizes to {1}")
  @CsvSource({
    "0, 0", "-0.0, 0", "360, 0", "720.5, 0.5", "-90, 270", "-1e-20, 0", "359.5, 359.5",
    "-360, 0", "1e300, 0", "-725, 355"
  })
  void yawIsTheEuclideanRemainderInTheHalfOpenRange(double yaw, double want) {
    double got = World.normalizeYaw(yaw);
    assertEquals(Double.doubleToRawLongBits(want), Double.doubleToRawLongBits(got), yaw + " -> " + got);
  }

  @ParameterizedTest(name = "pitch {0} clamps to {1}")
  @CsvSource({"-100, -90", "-90, -90", "12.5, 12.5", "90, 90", "1e9, 90"})
  void pitchIsClampedToPlusMinusNinety(double pitch, double want) {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    assertEquals("applied", w.apply(rotate("a", 2, 10, pitch)));
    assertEquals(want, w.players.get("a").pitch);
  }

  @Test
  void shootingTakesHitPointsAndAKillScores() {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    w.apply(spawn("b", 1, 0, 0, 0));
    assertEquals("applied", w.apply(shoot("a", 2, "b", 60)));
    assertEquals(40, w.players.get("b").hp);
    assertEquals(0, w.players.get("a").score);
    assertEquals(Set.of("player:a", "player:b"), w.changed);
    assertEquals("applied", w.apply(shoot("a", 3, "b", 60)));
    assertEquals(0, w.players.get("b").hp);
    assertFalse(w.players.get("b").alive);
    assertEquals(1, w.players.get("a").score);
  }

  @ParameterizedTest(name = "shooting {0} is rejected {1}")
  @CsvSource({"nobody, unknown_target", "a, self_target", "dead, target_dead"})
  void aShotAtAnInvalidTargetIsRejectedAfterAdvancingTheSeq(String target, String reason) {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    w.apply(spawn("dead", 1, 0, 0, 0));
    w.apply(shoot("a", 2, "dead", 100));
    assertEquals(reason, w.apply(shoot("a", 3, target, 10)));
    assertEquals(3, w.players.get("a").seq);
    assertEquals(Set.of("player:a"), w.changed);
  }

  @Test
  void anItemCanBeClaimedOnce() {
    Maps w = new Maps();
    w.apply(spawn("a", 1, 0, 0, 0));
    w.apply(spawn("b", 1, 0, 0, 0));
    assertEquals("applied", w.apply(loot("a", 2, "chest")));
    assertEquals(Set.of("player:a", "item:chest"), w.changed);
    assertEquals("already_claimed", w.apply(loot("b", 2, "chest")));
    assertEquals("a", w.items.get("chest"));
    assertEquals(1, w.players.get("a").loot);
    assertEquals(0, w.players.get("b").loot);
    assertEquals(2, w.players.get("b").seq);
  }
}
