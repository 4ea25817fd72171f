"""Go's encoding/json matches object keys to struct fields case-insensitively; moby's Swarm bodies rely on it.

docker-py, for one, sends ``{"Mode": {"replicated": {"Replicas": 5}}}`` and ``{"Templating": {"name": ...}}``.
``canonical`` renames such keys to the field names the core reads, leaving the keys of user maps
(labels, options, sysctls) as given.
"""
from __future__ import annotations

from typing import Any

# Keys whose values are user maps: their keys are data, not field names.
_USER_MAPS = {"Labels", "Options", "DriverOpts", "Sysctls", "Annotations.Labels"}

# Field names that are not just the lower-case key with its first letter capitalised.
_IRREGULAR = {k.lower(): k for k in (
    "DNSConfig", "TTY", "NanoCPUs", "MemoryBytes", "ReplicatedJob", "GlobalJob", "MaxConcurrent",
    "TotalCompletions", "ForceUpdate", "TaskTemplate", "ContainerSpec", "RestartPolicy", "MaxAttempts",
    "UpdateConfig", "RollbackConfig", "FailureAction", "MaxFailureRatio", "EndpointSpec", "LogDriver",
    "StopGracePeriod", "StopSignal", "OpenStdin", "ReadOnly", "SecretID", "SecretName", "ConfigID", "ConfigName",
    "UID", "GID", "CapabilityAdd", "CapabilityDrop", "PublishedPort", "TargetPort", "PublishMode",
    "TaskHistoryRetentionLimit", "SnapshotInterval", "KeepOldSnapshots", "LogEntriesForSlowFollowers",
    "ElectionTick", "HeartbeatTick", "HeartbeatPeriod", "NodeCertExpiry", "ExternalCAs", "SigningCACert",
    "SigningCAKey", "ForceRotate", "TaskDefaults", "EncryptionConfig", "AutoLockManagers", "VolumeOptions",
    "BindOptions", "TmpfsOptions", "SizeBytes", "NoCopy", "DriverConfig", "GenericResources", "NetworkAttachmentSpec",
    "PluginSpec", "Preferences", "MaxReplicas", "StartPeriod", "StartInterval", "OomScoreAdj", "ListenAddr",
    "AdvertiseAddr", "DataPathAddr", "DataPathPort", "DefaultAddrPool", "SubnetSize", "ForceNewCluster",
)}


def _field(key: str) -> str:
    if not key or key[0].isupper():
        return key
    return _IRREGULAR.get(key.lower(), key[0].upper() + key[1:])


def canonical(value: Any) -> Any:
    """``value`` with every struct key spelled as the Go field (recursively; user maps untouched)."""
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _field(str(key))
        out[name] = item if name in _USER_MAPS else canonical(item)
    return out
