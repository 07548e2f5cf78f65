"""Transformer++ and Energy-Based Transformer built from shared blocks, with FLOP accounting."""
