"""The Docker domain's own packages (architecture-next.md): build/ so far."""
