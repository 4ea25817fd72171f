"""Typed models of the core: sandboxes, containers and their one state machine."""
