"""The composition root: parses flags, builds pkg services and both front ends, runs them."""
