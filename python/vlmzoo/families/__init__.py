"""One folder per family: its checkpoint layouts (both directions, from one key table) and its processor."""
