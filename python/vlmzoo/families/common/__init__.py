"""Pieces several families share: key rules, activation names, the Llama / OPT / BERT layouts."""
