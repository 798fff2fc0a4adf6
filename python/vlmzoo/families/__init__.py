"""One folder per model family: checkpoint layouts and processors."""
