"""Server configuration: one validated model, filled from flags, then TAILOR_* environment variables, then defaults."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Request limits; exceeding one is INVALID_ARGUMENT naming the field."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="forbid", frozen=True)

    max_id_bytes: int = Field(256, ge=1, description="session, event, action, reward ids; feature names")
    max_text_bytes: int = Field(1024, ge=1, description="one text feature value")
    max_actions: int = Field(256, ge=1, description="candidates in one decision")
    max_action_features: int = Field(64, ge=1, description="features of one request-supplied action")
    max_context_features: int = Field(256, ge=1, description="context features in one Decide")
    max_feature_magnitude: float = Field(
        1e6, gt=0, description="largest |number| of a feature: VW learns in float32, and products of features overflow"
    )
    max_batch: int = Field(1000, ge=1, description="events or rewards in one stream message")
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="one gRPC message")


def _check_redis_url(url: str | None) -> str | None:
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("use a redis://, rediss:// or unix:// URL")
    return url


def _check_cluster(url: str | None, cluster: bool) -> None:
    if cluster and url is None:
        raise ValueError("redis_cluster needs redis_url (any node of the cluster)")
    if cluster and url is not None and url.startswith("unix://"):
        raise ValueError("a Redis Cluster is reached over TCP: use a redis:// or rediss:// URL of any of its nodes")


def _check_hex_key(key: str | None) -> str | None:
    if key is not None:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raise ValueError("give the key as hex digits (e.g. `openssl rand -hex 32`)") from None
        if len(raw) < 16:
            raise ValueError("use a key of at least 16 bytes (32 hex digits)")
    return key


class ServeConfig(BaseSettings):
    """`tailor serve` settings. Every field is also read from TAILOR_<FIELD_NAME>."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="forbid", frozen=True)

    catalogs: Path = Field(Path("catalogs"), description="directory of catalog YAML files")
    host: str = Field("[::]", description="address the gRPC server binds")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Prometheus /metrics port; unset disables")
    metrics_host: str = Field("0.0.0.0", description="address /metrics binds (plain HTTP, no auth, by design)")
    health_port: int | None = Field(
        None, ge=0, le=65535, description="plaintext port serving only gRPC health (probes when TLS is on); unset = off"
    )
    api_keys: Path | None = Field(None, description="API key file (digests and roles); unset = protected mode")
    insecure: bool = Field(False, description="without api_keys, serve every caller, not only local ones")
    local_networks: tuple[str, ...] = Field(
        ("127.0.0.0/8", "::1/128"), description="protected mode: networks whose callers need no key"
    )
    tls_cert: Path | None = Field(None, description="PEM server certificate (chain); with tls_key, serve TLS only")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA bundle; client certificates required (mTLS)")
    max_in_flight: int = Field(1000, ge=1, description="calls running at once; past it RESOURCE_EXHAUSTED")
    credentials_poll_seconds: float = Field(2.0, gt=0, description="how often the key file is checked for changes")
    data_dir: Path = Field(Path("data"), description="model snapshots and persisted pending decisions")
    redis_url: str | None = Field(None, description="redis://, rediss:// or unix:// URL; unset = embedded state")
    redis_prefix: str = Field("tailor", description="key prefix in Redis")
    redis_shards: int = Field(16, ge=1, le=1024, description="decision-log shards (hash tags); same on every process")
    redis_cluster: bool = Field(False, description="redis_url names a node of a Redis Cluster (hash-tagged keys)")
    model_poll_seconds: float = Field(0.5, gt=0, description="Redis mode: how often replicas look for new models")
    catalog_poll_seconds: float = Field(
        0.5, gt=0, description="how often the catalog directory (and in Redis mode the catalog store) is checked"
    )
    console_port: int = Field(8080, ge=0, le=65535, description="the marketers' web console; 0 turns it off")
    console_host: str = Field("127.0.0.1", description="address the console binds (0.0.0.0 or :: to serve others)")
    console_secret: str | None = Field(
        None,
        description="hex key that signs console session cookies; give every replica the same one (unset: made per "
        "process, so a restart signs everyone out)",
    )
    console_hosts: list[str] = Field(
        ["localhost", "127.0.0.1"],
        description="Host headers the console answers (a JSON list, against DNS rebinding): add the name it serves as",
    )
    decision_log: bool = Field(
        True, description="write every learned decision as VW DSJSON (DATA_DIR/decisions; Redis mode: tailor learn)"
    )
    decision_log_retention_hours: float = Field(168.0, gt=0, description="decision log lines are kept this long")
    decision_log_max_mb: int = Field(1024, ge=1, description="embedded: the decision log's files use at most this")
    decision_log_key: str | None = Field(
        None, description="hex key of the HMAC that pseudonymises ids in the decision log; unset = made per install"
    )
    decision_log_pseudonymize: bool = Field(
        True, description="write session and event ids as a keyed HMAC (false: as they are)"
    )
    model_command_timeout_seconds: float = Field(
        10.0, gt=0, description="Redis mode: how long a model import or reset waits for the learner to apply it"
    )
    redis_timeout_seconds: float = Field(0.5, gt=0, description="a Redis call slower than this counts as a failure")
    snapshot_interval_seconds: float = Field(30.0, gt=0, description="how often changed models are snapshotted")
    snapshot_idle_seconds: float = Field(
        5.0, gt=0, description="a changed model that then learns nothing for this long is snapshotted at once"
    )
    snapshots_kept: int = Field(3, ge=1, description="snapshots kept per model")
    session_ttl_seconds: float = Field(1800.0, gt=0, description="a session idle this long is forgotten")
    max_sessions: int = Field(
        200_000, ge=1, description="sessions kept; beyond it the least recently active is evicted"
    )
    max_clock_skew_seconds: float = Field(300.0, ge=0, description="events stamped further in the future are rejected")
    max_event_age_seconds: float = Field(86400.0, gt=0, description="events stamped further in the past are rejected")
    decision_grace_seconds: float = Field(
        600.0, ge=0, description="decisions stay retained this long after their window"
    )
    max_pending_decisions: int = Field(
        500_000, ge=1, description="retained decisions; when full, learned ones are forgotten first"
    )
    learn_slice_seconds: float = Field(0.001, gt=0, description="longest the learner holds the event loop at once")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="in-flight RPCs get this long at shutdown")
    limits: Limits = Field(default_factory=Limits)

    _redis_url = field_validator("redis_url")(_check_redis_url)
    _decision_log_key = field_validator("decision_log_key")(_check_hex_key)
    _console_secret = field_validator("console_secret")(_check_hex_key)

    @field_validator("local_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServeConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give tls_cert and tls_key together (--tls-cert FILE --tls-key FILE)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        _check_cluster(self.redis_url, self.redis_cluster)
        return self


class LearnConfig(BaseSettings):
    """`tailor learn` settings (the shared learner of Redis mode). Every field is also read from TAILOR_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="forbid", frozen=True)

    catalogs: Path = Field(Path("catalogs"), description="directory of catalog YAML files")
    redis_url: str = Field(description="redis://, rediss:// or unix:// URL")
    redis_prefix: str = Field("tailor", description="key prefix in Redis")
    redis_shards: int = Field(16, ge=1, le=1024, description="decision-log shards; the same as the replicas'")
    redis_cluster: bool = Field(False, description="redis_url names a node of a Redis Cluster (hash-tagged keys)")
    redis_timeout_seconds: float = Field(2.0, gt=0, description="a Redis call slower than this counts as a failure")
    metrics_port: int | None = Field(9465, ge=0, le=65535, description="Prometheus /metrics port; unset disables")
    publish_interval_seconds: float = Field(1.0, gt=0, description="how often changed models are published")
    lease_seconds: float = Field(5.0, gt=0, description="leadership lease; a standby takes over after it lapses")
    batch: int = Field(500, ge=1, description="learn-stream entries read per round trip")
    catalog_poll_seconds: float = Field(
        0.5, gt=0, description="how often the catalog store and the catalog directory are checked for changes"
    )
    decision_log: bool = Field(True, description="write every learned decision as VW DSJSON, in Redis")
    decision_log_retention_hours: float = Field(168.0, gt=0, description="decision log lines are kept this long")
    decision_log_max_entries: int = Field(
        2_000_000, ge=1, description="the decision log stream keeps at most this (~1-1.5 KB of Redis memory each)"
    )
    decision_log_key: str | None = Field(
        None, description="hex key of the HMAC that pseudonymises ids in the decision log; unset = made per install"
    )
    decision_log_pseudonymize: bool = Field(
        True, description="write session and event ids as a keyed HMAC (false: as they are)"
    )

    _redis_url = field_validator("redis_url")(_check_redis_url)
    _decision_log_key = field_validator("decision_log_key")(_check_hex_key)

    @model_validator(mode="after")
    def _cluster(self) -> LearnConfig:
        _check_cluster(self.redis_url, self.redis_cluster)
        return self
