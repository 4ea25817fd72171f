"""Narwhal's core: everything both front ends (CRI and the Docker facade) share."""
