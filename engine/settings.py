"""Settings: built-in defaults < profile < $BOTCTL_HOME/config.toml < .env < environment < flags.

pydantic-settings validates every source; `load_settings` turns a validation
error into `SettingsError` naming the setting the way the operator would set
it (`BOTCTL_MAX_SLIPPAGE_BPS`), so the CLI can print one `error:` line.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_HOME = "~/.botctl"
PROFILES = ("paper", "testnet", "soft-launch", "scale-up")


class SettingsError(Exception):
    """A configuration problem: exit 2 with this message."""


class ChainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["evm", "solana"]
    rpc_url: str | None = None
    chain_id: int | None = None
    router: str | None = None
    quote_token: str | None = None
    tokens: list[str] = Field(default_factory=list)
    keystore: str | None = None
    keypair: str | None = None
    jupiter_url: str = "https://api.jup.ag/swap/v1"
    quote_mint: str | None = None
    confirmations: int = Field(1, ge=0)

    @field_validator("rpc_url", "jupiter_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        """An endpoint must be a URL with a scheme and a host. The message never repeats the value:
        endpoints carry API keys."""
        if value is None:
            return value
        from urllib.parse import urlparse

        try:
            parts = urlparse(value)
            ok = parts.scheme in ("http", "https", "ws", "wss") and bool(parts.hostname) and \
                not any(c.isspace() or ord(c) < 32 for c in value)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("must be an http(s):// or ws(s):// URL with a host")
        return value


class PaperSettings(BaseModel):
    """The simulated market and venue. Rates are in basis points (1/10,000) per event."""

    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(None, description="seed of a new market; an existing venue keeps its own")
    speed: Decimal = Field(Decimal(1), ge=0, description="simulated seconds per wall second; 0 = unpaced")
    deposit_usd: Decimal = Field(Decimal(1000), gt=0)
    native_deposit: Decimal = Field(Decimal(5), gt=0)
    opportunity_rate_bps: int = Field(2000, ge=0, le=10_000)
    fail_rate_bps: int = Field(0, ge=0, le=10_000)
    unknown_rate_bps: int = Field(0, ge=0, le=10_000)
    latency_blocks: int = Field(2, ge=1, le=100)
    fee_bps: int = Field(30, ge=0, le=1_000)
    volatility_bps: int = Field(40, ge=0, le=2_000)
    slippage_noise_bps: int = Field(60, ge=0, le=2_000)
    expiry_blocks: int = Field(30, ge=2)


class RolloutSettings(BaseModel):
    """Promotion criteria an operator tightens (never loosens) beyond the profile's."""

    model_config = ConfigDict(extra="forbid")

    min_hours: Decimal | None = Field(None, ge=0)
    min_trades: int | None = Field(None, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BOTCTL_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Path(DEFAULT_HOME)
    profile: str = "paper"
    mode: Literal["paper", "live"] = "paper"
    dry_run: bool = True
    max_slippage_bps: int = Field(50, ge=0, le=10_000)
    max_gas_price_gwei: int = Field(50, gt=0)
    max_priority_fee_lamports: int = Field(100_000, ge=0)
    max_position_usd: Decimal = Field(Decimal(100), gt=0)
    default_position_usd: Decimal = Field(Decimal(25), gt=0)
    min_position_usd: Decimal = Field(Decimal(1), gt=0)
    max_open_positions: int = Field(10, ge=0)
    max_exposure_usd: Decimal = Field(Decimal(1000), ge=0)
    stop_loss_bps: int = Field(500, ge=0, le=10_000)
    take_profit_bps: int = Field(1000, ge=0)
    max_hold_s: int = Field(1800, ge=0)
    cooldown_s: int = Field(300, ge=0)
    max_consecutive_losses: int = Field(5, ge=0)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    chains: dict[str, ChainSettings] = Field(default_factory=dict)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(value).expanduser()

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r} (one of: {', '.join(PROFILES)})")
        return value

    def shown(self) -> dict[str, Any]:
        """For `config show`: every value, secrets masked."""
        data = self.model_dump(mode="json")
        return _mask(data)


SECRET_WORDS = ("password", "secret", "private", "api_key", "apikey", "token_key")


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if any(word in key.lower() for word in SECRET_WORDS) and value:
        return "********"
    if isinstance(value, str) and "://" in value and "@" in value.split("://", 1)[1]:
        scheme, rest = value.split("://", 1)
        return f"{scheme}://********@{rest.split('@', 1)[1]}"
    return value


def profile_path(name: str) -> Path:
    from engine.stages import profile_file

    if name not in PROFILES:
        raise SettingsError(f"unknown profile {name!r} (one of: {', '.join(PROFILES)})")
    return profile_file(name)


def _env_name(loc: tuple) -> str:
    return "BOTCTL_" + "__".join(str(part) for part in loc).upper()


def load_settings(check: bool = True, **flags: Any) -> Settings:
    """Settings from every source; flags are the highest (None values are ignored).

    The profile in force is the one asked for (flag, BOTCTL_PROFILE) or else the stage the
    book is in; either way the result must fit within that profile's ceilings and the profile
    must be no looser than the stored stage (engine/stages.py). `check=False` skips those
    checks for commands that start no engine (reads, commands for the owner): a config that a
    demotion left beyond the new ceiling must not lock the operator out of `halt` or `demote`;
    every engine start checks again, under the lock."""
    from engine.stages import StageError, check_settings, stored_stage

    flags = {k: v for k, v in flags.items() if v is not None}
    home = Path(flags.get("home") or os.environ.get("BOTCTL_HOME") or DEFAULT_HOME).expanduser()
    stored = stored_stage(home / "botctl.db")
    profile = flags.get("profile") or os.environ.get("BOTCTL_PROFILE") or stored or "paper"
    flags["profile"] = profile
    profile_file = profile_path(profile)
    config_file = home / "config.toml"

    class _Sourced(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ):
            return (
                init_settings,
                env_settings,
                dotenv_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_file),
                TomlConfigSettingsSource(settings_cls, toml_file=profile_file),
            )

    try:
        settings = _Sourced(**flags)
        if check:
            check_settings(settings, stored)
        return settings
    except StageError as exc:
        raise SettingsError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first.get("loc", ()))
        message = first.get("msg", "invalid value")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SettingsError(f"{_env_name(loc)}: {message}{more}") from None
    except (OSError, ValueError) as exc:  # a TOML file that does not parse
        raise SettingsError(f"cannot read settings: {exc}") from None
