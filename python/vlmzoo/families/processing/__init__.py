"""Processor pieces every family shares (image processor, tokenizer loading, batch features) and vlmzoo's own
word processor."""
