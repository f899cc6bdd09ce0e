package io.gameshard.kstreams;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.annotation.JsonPropertyOrder;

/**
 * An entity's full state after a change, as the output topic carries it (specification
 * section 4), with the input record that last changed it.
 */
public sealed interface Update permits Update.OfPlayer, Update.OfItem {
  /** The input partition, which is also the output partition. */
  int srcPartition();

  /** A player's update. */
  @JsonPropertyOrder({
    "kind", "id", "x", "y", "z", "yaw", "pitch", "hp", "alive", "score", "loot", "seq",
    "src_partition", "src_offset", "src_ts"
  })
  record OfPlayer(
      String kind,
      String id,
      double x,
      double y,
      double z,
      double yaw,
      double pitch,
      int hp,
      boolean alive,
      long score,
      long loot,
      long seq,
      @JsonProperty("src_partition") int srcPartition,
      @JsonProperty("src_offset") long srcOffset,
      @JsonProperty("src_ts") long srcTs)
      implements Update {
    /** Player {@code id} in state {@code p}, changed by the given input record. */
    static OfPlayer of(String id, Player p, int partition, long offset, long timestamp) {
      return new OfPlayer(
          "player", id, p.x, p.y, p.z, p.yaw, p.pitch, p.hp, p.alive, p.score, p.loot, p.seq,
          partition, offset, timestamp);
    }
  }

  /** An item's update. */
  @JsonPropertyOrder({"kind", "id", "claimed_by", "src_partition", "src_offset", "src_ts"})
  record OfItem(
      String kind,
      String id,
      @JsonProperty("claimed_by") String claimedBy,
      @JsonProperty("src_partition") int srcPartition,
      @JsonProperty("src_offset") long srcOffset,
      @JsonProperty("src_ts") long srcTs)
      implements Update {
    /** Item {@code id} claimed by {@code claimedBy}, changed by the given input record. */
    static OfItem of(String id, String claimedBy, int partition, long offset, long timestamp) {
      return new OfItem("item", id, claimedBy, partition, offset, timestamp);
    }
  }
}
