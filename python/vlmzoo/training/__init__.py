"""Training: `train`, recipes, pretraining of in-house towers, evaluation."""
