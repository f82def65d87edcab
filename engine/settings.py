"""Settings: built-in defaults < profile < $BOTCTL_HOME/config.toml < .env < environment < flags.

pydantic-settings validates every source; `load_settings` turns a validation
error into `SettingsError` naming the setting the way the operator would set
it (`BOTCTL_MAX_SLIPPAGE_BPS`), so the CLI can print one `error:` line.

What pydantic-settings would let pass silently is refused here: a home named
only in .env (the home is resolved first, from every source, because its
config.toml and stored stage depend on it), a key or BOTCTL_ variable that is
no setting (a typo would leave the default in force), a .env line that does
not parse (python-dotenv only warns and skips it), and a home or config.toml
that others can write (whoever writes them commands the bot).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_HOME = "~/.botctl"
PROFILES = ("paper", "testnet", "soft-launch", "scale-up")
PREFIX = "BOTCTL_"
DOTENV = ".env"
CONFIG_NAME = "config.toml"
# Files of a home that command the bot when written (engine/kernel.py's DB_NAME,
# engine/venues/paper/world.py's VENUE_NAME).
HOME_FILES = (CONFIG_NAME, "botctl.db", "paper-venue.db", "botctl.lock", "logs")
# Every BOTCTL_ variable botctl reads that is no setting, and where it may be given. Any other
# BOTCTL_ name in the environment or .env must be a setting, or botctl refuses to start: a typo
# (SLIPAGE for SLIPPAGE) would otherwise leave the default in force without a word.
NOT_SETTINGS = {
    "BOTCTL_EVM_PASSWORD": "secret",  # the live executors: environment or .env, never shown
    "BOTCTL_JUPITER_API_KEY": "secret",
    "BOTCTL_DEBUG": "environment",  # console/errors.py: tracebacks; in .env it would do nothing
    "BOTCTL_CRASH_AT": "environment",  # engine/kernel.py: crash drills and tests
    "BOTCTL_CRASH_SKIP": "environment",
    "BOTCTL_LOG_LEVEL": "environment",  # engine/logs.py
    "BOTCTL_LOCK_WAIT_S": "environment",  # engine/inbox.py: how long a command waits for the book's write lock
}
SECRET_VARIABLES = tuple(name for name, where in NOT_SETTINGS.items() if where == "secret")
ENVIRONMENT_ONLY = tuple(name for name, where in NOT_SETTINGS.items() if where == "environment")


class SettingsError(Exception):
    """A configuration problem: exit 2 with this message."""

    code = 2


class Unreachable(SettingsError):
    """A live start that could not reach a chain's node: a failure (exit 1), which the same command
    may get past later, not a setting to fix (2). A close refused for it is refused like any other:
    a script that retries on 1 retries it."""

    code = 1


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
    confirmations: int = Field(1, ge=0, le=1_000)
    replace_after_s: int = Field(60, ge=1, le=86_400, description="an EVM tx not mined this long is replaced")
    marks_every_s: Decimal = Field(Decimal(1), ge=Decimal("0.2"), le=3_600, description="how often open positions "
                                   "are priced on a live chain (one router quote per held token)")
    cancel_gas_price_gwei: int | None = Field(None, ge=1, description="cap of a cancellation (default: 2x the cap)")
    gas_reserve: Decimal = Field(Decimal("0.05"), ge=0, description="coin set aside for fees when the quote is the "
                                 "coin itself (quote_token = \"native\"), at the book's first start")
    quote_usd: Decimal | None = Field(None, gt=0, le=10**9, description="USD you count one whole quote unit "
                                      "as: the USD limits and stage ceilings are converted with it (required when "
                                      "quote_token = \"native\"; 1 for a USD stablecoin, the default)")

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
    deposit_usd: Decimal = Field(Decimal(1000), gt=0, description="quote funded per chain at genesis")
    native_deposit: Decimal = Field(Decimal(5), gt=0, description="native coin funded per chain (fees)")
    opportunity_rate_bps: int = Field(2000, ge=0, le=10_000)
    fail_rate_bps: int = Field(0, ge=0, le=10_000)
    unknown_rate_bps: int = Field(0, ge=0, le=10_000)
    latency_blocks: int = Field(2, ge=1, le=100)
    fee_bps: int = Field(30, ge=0, le=1_000)
    volatility_bps: int = Field(40, ge=0, le=2_000)
    slippage_noise_bps: int = Field(60, ge=0, le=2_000)
    expiry_blocks: int = Field(30, ge=2)
    block_ms: int | None = Field(None, ge=1, le=60_000, description=(
        "simulated milliseconds per block of a new venue (default 1000); an existing one keeps its own. On paper "
        "--duration and speed count blocks, so tests lengthen it to run a simulated day in fewer of them. At most "
        "a minute: the engine beats once a minute, and exits and cooldowns are measured in seconds"))

    @field_validator("deposit_usd", "native_deposit")
    @classmethod
    def _whole_base_units(cls, value: Decimal, info) -> Decimal:
        """A deposit below one base unit would fund the venue with 0 (amounts round down): every
        entry would then be denied while the run reports nothing wrong."""
        from engine.core.money import to_units
        from engine.venues.paper.market import CHAINS

        for chain in CHAINS.values():
            decimals = chain.quote_decimals if info.field_name == "deposit_usd" else chain.native_decimals
            if to_units(value, decimals) == 0:
                raise PydanticCustomError("below_one_unit", f"{value:f} is less than one base unit on {chain.name} "
                                          f"({decimals} decimals): the deposit would be 0")
        return value


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

    @model_validator(mode="after")
    def _sizes_fit(self) -> "Settings":
        if self.min_position_usd > self.max_position_usd:
            raise PydanticCustomError("sizes", f"BOTCTL_MIN_POSITION_USD={self.min_position_usd} is above "
                                      f"BOTCTL_MAX_POSITION_USD={self.max_position_usd}: no entry could ever be sized")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if value not in PROFILES:
            raise ValueError(f"unknown profile {value!r} (one of: {', '.join(PROFILES)})")
        return value

    def shown(self, reveal: bool = False) -> dict[str, Any]:
        """For `config show`: every value, endpoints and secrets masked unless `reveal` (which the
        console grants only on a terminal)."""
        data = self.model_dump(mode="json")
        return data if reveal else _mask(data)


SECRET_WORDS = ("password", "secret", "private", "api_key", "apikey", "token_key")


def safe_url(url: str | None) -> str:
    """The one way an endpoint is shown: scheme, host and port. API keys live in URLs (userinfo,
    path, query), so nothing else is kept; `/…` says something was left out."""
    if not url:
        return "(none)"
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    rest = parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password
    return f"{parts.scheme}://{host}{port}" + ("/…" if rest else "")


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if any(word in key.lower() for word in SECRET_WORDS) and value:
        return "********"
    if isinstance(value, str) and "://" in value:
        return safe_url(value)
    return value


def profile_path(name: str) -> Path:
    from engine.stages import profile_file

    if name not in PROFILES:
        raise SettingsError(f"unknown profile {name!r} (one of: {', '.join(PROFILES)})")
    return profile_file(name)


def _env_name(loc: tuple) -> str:
    return PREFIX + "__".join(str(part) for part in loc).upper()


# --------------------------------------------------------------------------- names that are no setting


def _nested(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """("model", M) for a field holding a model, ("map", M) for dict[str, M], None for a value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", annotation
    if get_origin(annotation) is dict:
        inner = get_args(annotation)[-1]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return "map", inner
    return None


def _unknown(data: dict, model: type[BaseModel] | None = None, path: tuple = ()) -> Iterator[tuple[tuple, list[str]]]:
    """Every key of `data` that is no field of `model`: (its path, the names known there)."""
    model = model or Settings
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            yield path + (key,), list(fields)
            continue
        nested = _nested(fields[key].annotation)
        if nested is None or not isinstance(value, dict):
            continue
        how, inner = nested
        if how == "model":
            yield from _unknown(value, inner, path + (key,))
        else:
            for name, table in value.items():
                if isinstance(table, dict):
                    yield from _unknown(table, inner, path + (key, name))


def _nearest(word: str, known: list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word.lower(), known, n=1, cutoff=0.7)
    return found[0] if found else None


def _not_a_setting(where: str, name: str, nearest: str | None) -> SettingsError:
    hint = f" (did you mean {nearest}?)" if nearest else ""
    return SettingsError(f"{where}: {name} is not a setting{hint}")


def _variable_problem(name: str) -> str | None:
    """None if the BOTCTL_ variable `name` (upper case) sets a setting or is on NOT_SETTINGS; else
    the nearest variable that does, or "" for none. Walks the names the way pydantic-settings
    reads them (`__` nests), so a name it would skip without a word is caught: an unknown field, a
    part beyond a plain value (`__X` after COOLDOWN_S), an empty part."""
    if name in NOT_SETTINGS:
        return None
    model: type[BaseModel] = Settings
    path: tuple[str, ...] = ()
    parts = name[len(PREFIX):].lower().split("__")
    while parts:
        part = parts.pop(0)
        fields = model.model_fields
        if part not in fields:
            near = _nearest(part, list(fields)) if part else None
            return _env_name(path + (near,)) if near else ""
        path += (part,)
        nested = _nested(fields[part].annotation)
        if nested is None:
            return _env_name(path) if parts else None
        how, model = nested
        if how == "map" and parts:
            table = parts.pop(0)
            if not table:
                return ""
            path += (table,)
    return None


def _check_variable(where: str, name: str) -> None:
    """The one rule for a BOTCTL_ name in .env and in the environment."""
    near = _variable_problem(name)
    if near is not None:
        raise _not_a_setting(where, name, near or None)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a BOTCTL_ variable of the environment that is no setting. pydantic-settings skips
    it (nested models forbid unknown keys, the top level cannot: the environment is shared), and
    reads names in any case, so the check does too."""
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(PREFIX):
            _check_variable("environment", upper)


def read_dotenv(path: Path) -> dict[str, str]:
    """The BOTCTL_ variables of a .env file, by upper-case name. Refuses a line that does not parse
    and a BOTCTL_ name that botctl does not read from there: both would otherwise be skipped."""
    path = Path(path)
    if not path.is_file():
        return {}
    from storage import check_private

    check_private(path)  # whoever can write it could point botctl at another home or loosen any setting
    import io

    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    out: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:  # the line is never echoed: it may hold a secret
            raise SettingsError(f"{path} line {line}: not a NAME=value line")
        if binding.key is None or not binding.key.upper().startswith(PREFIX):
            continue  # a comment, a blank line, another program's variable
        name = binding.key.upper()
        if binding.value is None:
            raise SettingsError(f"{path} line {line}: {name} has no value (NAME=value)")
        if name in ENVIRONMENT_ONLY:
            raise SettingsError(f"{path} line {line}: {name} is read from the environment only, not from .env")
        _check_variable(f"{path} line {line}", name)
        out[name] = binding.value
    return out


def _read_config(path: Path) -> dict:
    """config.toml, refusing a key that is no setting, and `home` and `profile`, which it cannot set:
    the home holds this file, and the profile follows the stored stage unless a flag or BOTCTL_PROFILE
    asks otherwise."""
    import tomllib

    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    if "home" in data:
        raise SettingsError(f"{path}: home cannot be set here (this file lives in the home): "
                            "set BOTCTL_HOME in the environment or .env")
    if "profile" in data:
        raise SettingsError(f"{path}: profile cannot be set here (the profile is the stage stored in the book): "
                            "use --profile or BOTCTL_PROFILE")
    for where, known in _unknown(data):
        known = [k for k in known if k not in ("home", "profile")]
        near = _nearest(where[-1], known)
        raise _not_a_setting(str(path), ".".join(where), ".".join(where[:-1] + (near,)) if near else None)
    return data


def _first(name: str, flags: dict, dotenv: dict) -> str | None:
    """A setting the others depend on (home, profile): flag > environment > .env."""
    variable = PREFIX + name.upper()
    for source, value in (("--" + name, flags.get(name)), (variable, os.environ.get(variable)),
                          (f"{variable} in {DOTENV}", dotenv.get(variable))):
        if value is not None:
            if not str(value).strip():
                raise SettingsError(f"{source} is empty")
            return str(value)
    return None


def _named(loc: tuple, env: set[str], config: dict, config_file: Path | None) -> str:
    """Where the operator set the value at `loc`: its variable in the environment or .env (which win),
    else its key in config.toml, named as written there; else (a profile's value) the variable."""
    name = _env_name(loc)
    for held in range(1, len(loc) + 1):  # the value itself, or a table given whole (BOTCTL_CHAINS='{...}')
        if _env_name(loc[:held]) in env:
            return name if held == len(loc) else f"{_env_name(loc[:held])} (at {'.'.join(map(str, loc[held:]))})"
    if config_file is None:
        return name
    node: Any = config
    key = ""
    for part in loc:
        if isinstance(node, dict) and str(part) in node:
            node, key = node[str(part)], f"{key}.{part}" if key else str(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node, key = node[part], f"{key}[{part}]"
        else:
            return name
    return f"{config_file}: {key}"


def _given(dotenv: dict[str, str]) -> set[str]:
    """The variables the operator set, in the environment or .env (upper case)."""
    return {key.upper() for key in (*os.environ, *dotenv)}


_ASSIGNED = re.compile(r"\bBOTCTL_([A-Z0-9_]+)=")


def _sourced(text: str, env: set[str], config: dict, config_file: Path) -> str:
    """A message that names settings as variables (`BOTCTL_MAX_POSITION_USD=150 exceeds ...`: a stage's
    ceiling, a rule across two settings): each one set in config.toml, not in the environment, named
    as written there (`.../config.toml: max_position_usd = 150 exceeds ...`)."""
    def named(match: re.Match) -> str:
        where = _named(tuple(match.group(1).lower().split("__")), env, config, config_file)
        return match.group(0) if where.startswith(PREFIX) else f"{where} = "

    return _ASSIGNED.sub(named, text)


def _validation_message(exc: ValidationError, env: set[str] = frozenset(), config: dict | None = None,
                        config_file: Path | None = None) -> str:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if not loc:  # a rule across settings: its message names them
        return f"{first.get('msg', 'invalid settings')}{more}"
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        model: type[BaseModel] = Settings
        for part in loc[:-1]:
            nested = _nested(model.model_fields[part].annotation) if part in model.model_fields else None
            if nested is None:
                break
            model = nested[1]
        else:
            near = _nearest(str(loc[-1]), list(model.model_fields))
            if near:
                message = f"not a setting (did you mean {_env_name(loc[:-1] + (near,))}?)"
    return f"{_named(loc, env, config or {}, config_file)}: {message}{more}"


def load_settings(check: bool = True, **flags: Any) -> Settings:
    """Settings from every source; flags are the highest (None values are ignored).

    The home is resolved first (flag, environment, .env), then that home's config.toml and stored
    stage are read. The profile in force is the one asked for (flag, BOTCTL_PROFILE in the
    environment or .env) or else the stage the book is in; either way the result must fit within
    that profile's ceilings and the profile must be no looser than the stored stage
    (engine/stages.py). `check=False` skips those checks for commands that start no engine (reads,
    commands for the owner): a config that a demotion left beyond the new ceiling must not lock the
    operator out of `halt` or `demote`; every engine start checks again, under the lock.
    A home that others can write is refused by every command (storage.InsecureHome)."""
    from engine.core.stages import StageError, check_settings
    from engine.stages import stages, stored_stage
    from storage import check_home

    flags = {k: v for k, v in flags.items() if v is not None}
    check_environment(os.environ)
    dotenv = read_dotenv(Path(DOTENV))
    raw_home = str(_first("home", flags, dotenv) or DEFAULT_HOME)
    try:
        home = Path(raw_home).expanduser()
    except RuntimeError:  # ~someone for a user this machine does not have
        raise SettingsError(f"BOTCTL_HOME={raw_home}: no user {raw_home.split('/')[0][1:]!r} on this machine: "
                            "give a full path") from None
    check_home(home, HOME_FILES)
    stored = stored_stage(home / "botctl.db")
    profile = _first("profile", flags, dotenv) or stored or "paper"
    flags["home"], flags["profile"] = home, profile
    profile_file = profile_path(profile)
    config_file = home / CONFIG_NAME
    config = _read_config(config_file)

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
            check_settings(settings, stored, stages())
        return settings
    except StageError as exc:
        raise SettingsError(_sourced(str(exc), _given(dotenv), config, config_file)) from None
    except ValidationError as exc:
        given = _given(dotenv)
        raise SettingsError(_sourced(_validation_message(exc, given, config, config_file), given, config,
                                     config_file)) from None
    except (OSError, ValueError) as exc:  # a TOML file that does not parse
        raise SettingsError(f"cannot read settings: {exc}") from None
