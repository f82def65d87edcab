"""The rollout stages as rules: each stage's ceilings and promotion criteria, and what breaches them.

A stage's ceiling bounds what any settings source may set: a config that
tightens is fine, one that loosens is refused (exit 2) naming the setting and
the ceiling. Nothing is clipped silently. The engine enforces the ceilings of
the stage stored in the book as risk rules too (engine/core/risk.py), so a
stage demoted while an engine runs with a looser profile takes effect at once.
The shipped stages are read from profiles/*.toml by engine/stages.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ORDER = ("paper", "testnet", "soft-launch", "scale-up")
DRILLS = ("failure", "crash", "halt")
NETWORKS = ("paper", "testnet", "mainnet")


class StageError(Exception):
    """A settings/stage mismatch: exit 2 with this message."""


@dataclass(frozen=True)
class Ceiling:
    """None: no ceiling on that setting."""

    dry_run: bool | None = None  # True: dry run must stay on
    max_slippage_bps: int | None = None
    max_gas_price_gwei: int | None = None
    max_position_usd: Decimal | None = None
    capital_usd: Decimal | None = None
    max_open_positions: int | None = None
    chain_kinds: tuple[str, ...] = ("evm", "solana")


@dataclass(frozen=True)
class Promotion:
    network: str = "paper"
    min_hours: Decimal = Decimal(0)
    min_trades: int = 0
    max_balance_inconsistencies: int = 0
    drills: tuple[str, ...] = ()
    attestations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    title: str
    next: str | None
    networks: tuple[str, ...]
    ceiling: Ceiling = field(default_factory=Ceiling)
    promotion: Promotion = field(default_factory=Promotion)

    @property
    def live_funds(self) -> bool:
        """Real money moves only on a mainnet, and only a stage that trades there allows it."""
        return "mainnet" in self.networks

    @property
    def previous(self) -> str | None:
        return ORDER[self.order - 2] if self.order > 1 else None

    def attestation(self, key: str) -> str | None:
        """The full text of an attestation by its key (the word before the colon)."""
        for text in self.promotion.attestations:
            if text.split(":", 1)[0] == key:
                return text
        return None


def from_profile(name: str, data: dict) -> Stage:
    """A stage from its profile's parsed TOML (the loader reads the file, in engine/stages.py)."""
    meta = data.get("stage", {})
    c = meta.get("ceiling", {})
    p = meta.get("promotion", {})
    dec = lambda v: None if v is None else Decimal(str(v))
    return Stage(
        name=name,
        order=int(meta.get("order", ORDER.index(name) + 1)),
        title=meta.get("title", name),
        next=meta.get("next"),
        networks=tuple(meta.get("networks", ("paper",))),
        ceiling=Ceiling(
            dry_run=c.get("dry_run"),
            max_slippage_bps=c.get("max_slippage_bps"),
            max_gas_price_gwei=c.get("max_gas_price_gwei"),
            max_position_usd=dec(c.get("max_position_usd")),
            capital_usd=dec(c.get("capital_usd")),
            max_open_positions=c.get("max_open_positions"),
            chain_kinds=tuple(c.get("chain_kinds", ("evm", "solana"))),
        ),
        promotion=Promotion(
            network=p.get("network", meta.get("networks", ("paper",))[-1]),
            min_hours=Decimal(str(p.get("min_hours", 0))),
            min_trades=int(p.get("min_trades", 0)),
            max_balance_inconsistencies=int(p.get("max_balance_inconsistencies", 0)),
            drills=tuple(p.get("drills", ())),
            attestations=tuple(p.get("attestations", ())),
        ),
    )



def looser(a: str, b: str) -> bool:
    """Is stage `a` further along (looser) than stage `b`?"""
    return ORDER.index(a) > ORDER.index(b)


# --------------------------------------------------------------------------- settings vs ceiling


def breaches(settings, current: Stage) -> list[str]:
    """Every setting that goes beyond the stage's ceiling, as the operator would fix it."""
    ceiling, stage_name = current.ceiling, current.name
    out = []

    def over(setting: str, value, limit) -> None:
        if limit is not None and value > limit:
            out.append(f"BOTCTL_{setting.upper()}={value} exceeds the {stage_name} ceiling {limit}")

    if ceiling.dry_run and not settings.dry_run:
        out.append(f"BOTCTL_DRY_RUN=false: the {stage_name} stage keeps dry run on")
    over("max_slippage_bps", settings.max_slippage_bps, ceiling.max_slippage_bps)
    over("max_gas_price_gwei", settings.max_gas_price_gwei, ceiling.max_gas_price_gwei)
    over("max_position_usd", settings.max_position_usd, ceiling.max_position_usd)
    over("max_exposure_usd", settings.max_exposure_usd, ceiling.capital_usd)
    over("max_open_positions", settings.max_open_positions, ceiling.max_open_positions)
    for name, chain in sorted(settings.chains.items()):
        if chain.kind not in ceiling.chain_kinds:
            out.append(f"chains.{name}: kind {chain.kind} is beyond the {stage_name} ceiling "
                       f"(chains allowed: {', '.join(ceiling.chain_kinds)})")
    rollout = getattr(settings, "rollout", None)
    if rollout is not None:
        criteria = current.promotion
        if rollout.min_hours is not None and rollout.min_hours < criteria.min_hours:
            out.append(f"BOTCTL_ROLLOUT__MIN_HOURS={rollout.min_hours} is below the {stage_name} "
                       f"criterion {criteria.min_hours} (criteria may be tightened, never loosened)")
        if rollout.min_trades is not None and rollout.min_trades < criteria.min_trades:
            out.append(f"BOTCTL_ROLLOUT__MIN_TRADES={rollout.min_trades} is below the {stage_name} "
                       f"criterion {criteria.min_trades} (criteria may be tightened, never loosened)")
    return out


def first_of(problems: list[str]) -> str:
    """Several problems in one line, as every refusal is: the first, and how many more there are."""
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def check_settings(settings, stored: str | None, table: dict[str, Stage]) -> None:
    """Refuse settings beyond the profile's ceiling, or a profile looser than the stored stage.
    `table` is the stages in force (the shipped ones, engine/stages.py, unless a benchmark says otherwise)."""
    profile = settings.profile
    stored = stored or ORDER[0]  # no book yet: it will begin at the first stage
    if looser(profile, stored):
        raise StageError(f"stage is {stored}: promote first (botctl rollout) - profile {profile} is looser "
                         f"than the stage the book is in")
    current = table[profile]
    if settings.mode == "paper" and "paper" not in current.networks:
        raise StageError(f"profile {profile} does not run paper mode")
    problems = breaches(settings, current)
    if problems:
        raise StageError(first_of(problems))
