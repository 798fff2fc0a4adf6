"""Configuration as data: presets, family data, named parts ({"from": ...}); resolving a config is pure
(no training, no network, no model built)."""
