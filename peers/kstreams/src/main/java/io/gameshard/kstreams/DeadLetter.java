package io.gameshard.kstreams;

/**
 * A malformed unit on its way to the dead-letter topic: its bytes, and the input
 * partition whose number it goes to.
 */
public record DeadLetter(int srcPartition, byte[] bytes) {}
