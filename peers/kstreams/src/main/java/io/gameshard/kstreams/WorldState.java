package io.gameshard.kstreams;

/**
 * The entities the rules read and change. The processor backs it with the task's state
 * stores; the unit tests with maps.
 */
public interface WorldState {
  /** Player {@code id}, or {@code null} when it does not exist. */
  Player player(String id);

  /** Records that player {@code id} is now {@code p} (new, or changed in place). */
  void playerChanged(String id, Player p);

  /** Whether item {@code item} is claimed. */
  boolean claimed(String item);

  /** Records that {@code player} claimed {@code item}. */
  void claim(String item, String player);
}
