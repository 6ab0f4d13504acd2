"""Settings of the Sentry webhook bridge: one frozen dataclass, one environment loader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ENV_CLIENT_SECRET", "ENV_LEGACY_TOKEN", "BridgeConfig"]

ENV_CLIENT_SECRET = "SENTRY_CLIENT_SECRET"
ENV_LEGACY_TOKEN = "SENTRY_LEGACY_TOKEN"


@dataclass(frozen=True, kw_only=True)
class BridgeConfig:
    """How the bridge verifies, bounds and deduplicates deliveries.

    `client_secret` is the internal integration's Client Secret (it keys the HMAC). The legacy
    plugin endpoint has no signature at all, so it exists only when `legacy_enabled` is true; when
    `legacy_token` is set the callback URL must carry it as `?token=`.
    """

    client_secret: str = field(repr=False)
    timestamp_tolerance_s: float = 300.0
    max_body_bytes: int = 1024 * 1024
    # Sentry retries a failed delivery 3 times, 5 minutes apart: one hour covers every retry.
    dedupe_ttl_s: float = 3600.0
    dedupe_max_entries: int = 10_000
    legacy_enabled: bool = False
    legacy_token: str | None = field(default=None, repr=False)
    path_prefix: str = "/sentry"

    def __post_init__(self) -> None:
        if not self.client_secret:
            raise ValueError(f"the Sentry client secret is empty; set {ENV_CLIENT_SECRET}")
        if not self.timestamp_tolerance_s > 0:
            raise ValueError(f"timestamp_tolerance_s must be > 0, got {self.timestamp_tolerance_s!r}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes!r}")
        if not self.dedupe_ttl_s > 0 or self.dedupe_max_entries < 1:
            raise ValueError("dedupe_ttl_s must be > 0 and dedupe_max_entries >= 1")
        if self.path_prefix and (not self.path_prefix.startswith("/") or self.path_prefix.endswith("/")):
            raise ValueError(f"path_prefix must start with '/' and not end with it, got {self.path_prefix!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> BridgeConfig:
        """Secret and legacy token come from the environment only: never from argv, where `ps` shows them."""
        env = os.environ if environ is None else environ
        secret = env.get(ENV_CLIENT_SECRET, "").strip()
        if not secret:
            raise ValueError(f"{ENV_CLIENT_SECRET} is not set; copy the Client Secret of the Sentry internal integration into it")
        token = env.get(ENV_LEGACY_TOKEN, "").strip() or None
        return cls(client_secret=secret, legacy_token=token, **overrides)  # type: ignore[arg-type]
