"""The real engine (sequencer, SQLite, paper venue) in the soft-launch stage refuses what the
stage's ceiling forbids, and the stage survives a restart."""

from __future__ import annotations

from decimal import Decimal

from engine.kernel import build, open_book
from engine.messages import ChangeStage, EntryReserved, ReserveEntry
from engine.money import to_units
from engine.settings import load_settings
from engine.stages import ORDER


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
    home = tmp_path / "home"
    engine = await build(load_settings(home=home, paper={"speed": 0, "seed": 1, "opportunity_rate_bps": 0}))
    await engine.close()
    await put_in_stage(home, "soft-launch")
    settings = load_settings(home=home, profile="soft-launch", mode="paper",
                             paper={"speed": 0, "seed": 1, "opportunity_rate_bps": 0})
    assert (settings.max_position_usd, settings.max_exposure_usd) == (Decimal(5), Decimal(100))
    engine = await build(settings)
    try:
        assert engine.book.meta.get("stage") == "soft-launch"
        solana = sorted(engine.book.policy.chains["solana"].tokens)
        base = sorted(engine.book.policy.chains["base"].tokens)
        six = await entry(engine, "solana", solana[0], "6")
        assert not six.accepted and "exceeds max position 5" in six.reason
        evm = await entry(engine, "base", base[0], "5")
        assert not evm.accepted and "stage soft-launch allows solana chains only" in evm.reason
        five = await entry(engine, "solana", solana[0], "5")
        assert five.accepted and five.first(EntryReserved).amount == 5_000_000
        assert await engine.settle()
        assert len(engine.book.open_positions()) == 1
    finally:
        await engine.close()
