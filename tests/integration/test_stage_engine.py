"""The real engine (sequencer, SQLite, paper venue) in the soft-launch stage refuses what the
stage's ceiling forbids, and the stage survives a restart."""

from __future__ import annotations

from decimal import Decimal

from engine.core.messages import ChangeStage, EntryReserved, ReserveEntry
from engine.core.money import to_units
from engine.core.stages import ORDER
from engine.kernel import build, open_book
from engine.settings import load_settings


async def put_in_stage(home, name: str) -> None:
    """Through the engine's own command; the promotion evidence is taken as given here (that path
    is tested end to end in tests/cli/test_rollout.py)."""
    owner = await open_book(load_settings(home=home, profile="paper"), "test")
    try:
        for previous, following in zip(ORDER, ORDER[1:ORDER.index(name) + 1]):
            assert (await owner.sequencer.submit(ChangeStage(following, previous, (), "{}", "t", owner.now()))).accepted
    finally:
        await owner.close()


async def entry(engine, chain: str, token: str, usd: str):
    spec = engine.book.policy.chains[chain]
    fee = await engine.executors[chain].fee_reserve()
    return await engine.sequencer.submit(ReserveEntry(chain, token, to_units(Decimal(usd), spec.quote_decimals), fee,
                                                      engine.now()))


async def test_the_engine_in_soft_launch_refuses_six_dollars_and_an_evm_entry(tmp_path):
    """Paper settings (up to $100 a position, both chains) in a book at soft launch: the stage's
    own ceiling refuses, not the settings."""
    home = tmp_path / "home"
    paper = {"speed": 0, "seed": 1, "opportunity_rate_bps": 0}
    engine = await build(load_settings(home=home, paper=paper))
    await engine.close()
    await put_in_stage(home, "soft-launch")
    settings = load_settings(home=home, profile="paper", paper=paper)
    assert settings.max_position_usd == Decimal(100)
    engine = await build(settings)
    try:
        assert engine.book.meta.get("stage") == "soft-launch"
        solana = sorted(engine.book.policy.chains["solana"].tokens)
        base = sorted(engine.book.policy.chains["base"].tokens)
        six = await entry(engine, "solana", solana[0], "6")
        assert not six.accepted and "exceeds the soft-launch stage ceiling of 5 USD per position" in six.reason
        evm = await entry(engine, "base", base[0], "5")
        assert not evm.accepted and "stage soft-launch allows solana chains only" in evm.reason
        five = await entry(engine, "solana", solana[0], "5")
        assert five.accepted and five.first(EntryReserved).amount == 5_000_000
        assert await engine.settle()
        assert len(engine.book.open_positions()) == 1
    finally:
        await engine.close()


async def test_the_owner_measures_promotion_evidence_itself_and_a_demotion_never_goes_forward(tmp_path):
    """Rows posted straight to the inbox (no CLI pre-check): the owner decides on what it measures."""
    from engine import inbox
    from engine.core.operator import STAGE_COMMANDS

    home = tmp_path / "home"
    engine = await build(load_settings(home=home, paper={"speed": 0, "seed": 1}))
    for _ in range(30):
        await engine.tick()
    await engine.close()
    db = home / "botctl.db"
    promote = inbox.post(db, "promote", {"from": "paper", "to": "testnet"})
    forward = inbox.post(db, "demote", {"from": "paper", "to": "testnet"})
    owner = await open_book(load_settings(home=home), "test")
    try:
        assert await inbox.InboxPoller(owner).drain(only=lambda command, _args: command in STAGE_COMMANDS) == 2
        assert owner.book.meta.get("stage") == "paper"
    finally:
        await owner.close()
    refused = inbox.read(db, promote)
    assert refused["state"] == "refused"
    assert "promotion to testnet refused, missing: round trips closed on paper" in refused["result"]["refused"][0]
    assert inbox.read(db, forward)["result"]["refused"] == ["a demotion goes back, not from paper to testnet"]
