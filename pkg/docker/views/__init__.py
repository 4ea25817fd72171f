"""What the Docker API shows of a container besides its record: exec instances, attach, logs, stats and
top samples, and its files (docker cp/export/diff through a chrooted tar helper)."""
