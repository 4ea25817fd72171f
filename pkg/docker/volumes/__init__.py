"""Docker volumes: the local driver, mount requests, reference counting (see service.py)."""
