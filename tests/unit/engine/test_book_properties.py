"""A stateful property test of the whole core: random command sequences through the real
Sequencer on a real SQLite file, with the ledger's invariants checked after every step.

Rules pick their targets from the engine's current book (live orders, open positions), so
every sequence is a plausible life of the bot: deposits, entries (sized or not), signing,
broadcasting, fills and failures with random amounts, unknown outcomes, abandons, closes by
the engine and the operator, marks, pause/halt/resume, nonce floors, restarts, commands
aimed at orders that are not in flight, and the same report delivered twice at once (as an
executor and the reconciler may). After each step:

- engine.audit.check_invariants on the database's table images finds nothing;
- engine.audit.audit finds nothing (journal replay == tables == postings);
- the in-memory book equals a fresh load of the database;
- each rule's own postcondition on money held (exact cash deltas) and on nonces.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.core.book import NonceState
from engine.core.messages import (
    ApprovalRequested,
    CloseRequested,
    EntryReserved,
    OrderFailed,
    OrderFilled,
    PositionClosed,
    TradingState,
)

from builders import (
    ADDRESS,
    NOW,
    abandon,
    audit_db,
    broadcast,
    close,
    deposit,
    failure,
    fill,
    invariants_db,
    marks,
    policy,
    raise_floor,
    reserve,
    set_state,
    sign,
    start_engine,
    unknown,
    usd,
)

CHAINS = ("base", "solana")
TOKENS = ("A", "B", "C", "D")
SIGNALS = (None,) * 6 + ("s1", "s2", "s3")
POLICY = policy(max_position=120, default_position=50, min_position=1, max_open_positions=4,
                max_exposure=400, cooldown_ms=20_000, max_consecutive_losses=3)


def cash(book, chain, asset="quote", account="cash"):
    return book.balance(chain, asset, account)


class BookMachine(RuleBasedStateMachine):
    policy = POLICY

    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="botctl-props-"))
        self.h = self.run(start_engine(self.dir, self.policy))
        self.now = NOW
        self.tx = itertools.count(1)
        self.refs = itertools.count(1)
        self.signed_nonces: set[tuple[str, str, int]] = set()
        self.steps_since_restart = 0
        self.twice = False

    # ---- plumbing

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def submit(self, cmd):
        self.steps_since_restart += 1
        return self.run(self.h.submit(cmd))

    def report(self, cmd):
        """Submit an order's report; with `self.twice`, twice at once (one batch)."""
        if not self.twice:
            return self.submit(cmd)
        self.twice = False
        first, second = self.run(self.h.submit_all([cmd, cmd]))
        assert not second.accepted or second.events == (), second  # recognised: nothing applied twice
        return first

    def teardown(self):
        try:
            self.run(self.h.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def book(self):
        return self.h.book

    def at(self):
        self.now += 1
        return self.now

    def nonce_state(self, chain):
        return self.book.nonces.get((chain, ADDRESS[chain])) or NonceState()

    def check_approval(self, result, swap, chain, floor_before) -> int:
        """A swap that spends an ERC20 on an approving chain comes right after its approval: the
        nonce before its own, exactly its amount. Returns the native the approval reserved."""
        approval = result.first(ApprovalRequested)
        spends = "quote" if isinstance(swap, EntryReserved) else self.book.positions.get(swap.position_id).token
        if approval is None:
            chain_policy = self.policy.chains[chain]
            refused_exit_retry = isinstance(swap, CloseRequested) and result.first(OrderFailed) is not None and \
                result.first(OrderFailed).rejected
            assert not chain_policy.approves(spends) or refused_exit_retry, (chain, spends)
            return 0
        assert approval.nonce + 1 == swap.nonce and approval.for_order == swap.order_id
        assert approval.asset == spends
        self.check_nonce(approval, chain, floor_before)
        return approval.fee_reserve

    def check_nonce(self, event, chain, floor_before):
        """A nonce handed out is at or above the floor, and never one that had signed bytes."""
        if self.policy.chains[chain].uses_nonces:
            assert event.nonce is not None and event.nonce >= floor_before, (event.nonce, floor_before)
            assert (chain, ADDRESS[chain], event.nonce) not in self.signed_nonces, event.nonce
        else:
            assert event.nonce is None

    # ---- rules

    @initialize(base=st.integers(usd(20), usd(600)), sol=st.integers(0, usd(300)))
    def fund(self, base, sol):
        for chain, amount in (("base", base), ("solana", sol)):
            if amount:
                assert self.submit(deposit(chain, amount, ref=f"init-{chain}", at=self.at())).accepted
            assert self.submit(deposit(chain, 10**6, "native", ref=f"init-n-{chain}", at=self.at())).accepted

    # ---- the world around the book: one rule, so that hypothesis spends most steps on trades

    WORLD = ("tick", "tick", "marks", "state", "floor", "deposit", "stray", "stray", "stage")

    @rule(data=st.data())
    def world(self, data):
        """Time passes, prices move, the operator pauses/halts/resumes or tops up, the chain's
        pending nonce count moves."""
        action = data.draw(st.sampled_from(self.WORLD), label="world")
        getattr(self, f"world_{action}")(data)

    def world_deposit(self, data):
        chain = data.draw(st.sampled_from(CHAINS), label="chain")
        asset = data.draw(st.sampled_from(("quote", "native")), label="asset")
        amount = data.draw(st.integers(-1, usd(200)), label="amount")
        before = cash(self.book, chain, asset)
        result = self.submit(deposit(chain, amount, asset, ref=f"d{next(self.refs)}", at=self.at()))
        assert result.accepted == (amount > 0)
        assert cash(self.book, chain, asset) == before + (amount if amount > 0 else 0)

    def world_tick(self, data):
        self.now += data.draw(st.integers(0, 30_000), label="ms")

    def world_marks(self, data):
        chain = data.draw(st.sampled_from(CHAINS), label="chain")
        prices = data.draw(st.dictionaries(
            st.sampled_from(TOKENS), st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6),
                                                 allow_nan=False, allow_infinity=False, places=6), max_size=3),
            label="prices")
        assert self.submit(marks(chain, prices, at=self.at())).accepted
        for token, price in prices.items():
            assert self.book.marks.get((chain, token))[0] == price

    def world_state(self, data):
        state = data.draw(st.sampled_from(list(TradingState)), label="trading state")
        by = data.draw(st.sampled_from(("operator", "engine")), label="by")
        force = data.draw(st.booleans(), label="force")
        previous = self.book.trading_state
        tripped = self.book.meta.get("consecutive_losses") >= self.policy.limits.max_consecutive_losses
        result = self.submit(set_state(state, by=by, at=self.at(), force=force))
        allowed = state is previous or previous is not TradingState.HALTED or force  # asking for the current
        changed = allowed and (state is not previous or (state is TradingState.ACTIVE and tripped))  # state: no-op
        assert result.accepted == allowed, result.reason
        if allowed:
            assert bool(result.events) == changed, result.events  # resuming re-arms a tripped loss breaker
        assert self.book.trading_state is (state if allowed else previous)

    def world_stage(self, data):
        """Promotions (with or without evidence) and demotions, in any direction asked."""
        from engine.core.messages import ChangeStage
        from engine.core.stages import ORDER
        from engine.stages import stage

        current = self.book.meta.get("stage")
        target = data.draw(st.sampled_from(ORDER), label="stage")
        promote = data.draw(st.booleans(), label="promote")
        missing = data.draw(st.sampled_from(((), ("trades: 0 (needs >= 100)",))), label="missing")
        result = self.submit(ChangeStage(target, current, missing, "{}", "test", self.at(), promote=promote))
        if target == current:
            allowed = False
        elif promote:
            allowed = target == stage(current).next and not missing
        else:
            allowed = ORDER.index(target) < ORDER.index(current)
        assert result.accepted == allowed, result.reason
        assert self.book.meta.get("stage") == (target if allowed else current)

    def world_floor(self, data):
        state = self.nonce_state("base")
        floor = data.draw(st.integers(0, max(state.next, state.floor) + 4))
        self.submit(raise_floor(floor, at=self.at()))
        after = self.nonce_state("base")
        assert after.floor == max(state.floor, floor)  # raised, never lowered
        assert after.next >= state.next

    # ---- trading: one rule, weighted towards moving orders along their lives

    TRADE = ("reserve",) * 3 + ("advance",) * 6 + ("close",) * 2

    @rule(data=st.data())
    def trade(self, data):
        """A new entry, a step in an order's life, or a close; whichever can happen."""
        action = data.draw(st.sampled_from(self.TRADE), label="trade")
        if action == "close" and not self.book.open_positions():
            action = "advance"
        if action == "advance" and not self.book.live_orders():
            action = "reserve"
        {"reserve": self.reserve_entry, "advance": self.advance_order, "close": self.request_close}[action](data)

    def reserve_entry(self, data):
        chain = data.draw(st.sampled_from(CHAINS * 5 + ("ethereum",)), label="chain")
        token = data.draw(st.sampled_from(TOKENS), label="token")
        amount = data.draw(st.none() | st.integers(-1, usd(150)) | st.integers(usd(1), usd(60)), label="amount")
        fee = data.draw(st.integers(0, 3_000), label="fee")
        signal = data.draw(st.sampled_from(SIGNALS), label="signal")
        known = chain in self.policy.chains
        before = (cash(self.book, chain), cash(self.book, chain, "native")) if known else None
        floor = self.nonce_state(chain).floor if known else 0
        slot = self.book.slots.get((chain, token))
        result = self.submit(reserve(chain, token, amount, fee=fee, at=self.at(), signal=signal))
        event = result.first(EntryReserved)
        if event is None:
            assert result.reason
            if known:
                assert (cash(self.book, chain), cash(self.book, chain, "native")) == before
            return
        assert known and slot is None
        if amount is not None:
            assert event.amount == amount
        assert 0 < event.amount <= usd(120)
        approval = self.check_approval(result, event, chain, floor)
        assert (cash(self.book, chain), cash(self.book, chain, "native")) == (before[0] - event.amount,
                                                                                before[1] - fee - approval)
        self.check_nonce(event, chain, floor)

    # What may happen next to an order, by its state (repeats weight the draw): signing and
    # filling are likelier than failing, so that positions open and close.
    NEXT = {
        "new": ("sign",) * 4 + ("abandon", "fail"),
        "signed": ("broadcast", "broadcast", "fill", "fill", "fail", "unknown", "abandon"),
        "submitted": ("fill",) * 3 + ("fail", "unknown", "broadcast"),
        "unknown": ("fill", "fill", "fail", "broadcast", "unknown"),
    }

    def advance_order(self, data):
        """Sign, broadcast, fill, fail, lose track of or abandon an order in flight."""
        # exits first, then entries, then nonce fillers: draws lean to the front of the list
        rank = {"exit": 0, "entry": 1}
        orders = sorted(self.book.live_orders(), key=lambda o: (rank.get(o.intent, 2), o.id))
        order = data.draw(st.sampled_from(orders), label="order")
        action = data.draw(st.sampled_from(self.NEXT[order.state]), label="action")
        # An executor and the reconciler may report the same thing at the same moment: the
        # copy shares the first one's batch, and must change nothing.
        self.twice = data.draw(st.integers(0, 3), label="reported twice at once") == 0
        {"sign": self.sign_order, "broadcast": self.broadcast_order, "fill": self.fill_order,
         "fail": self.fail_order, "unknown": self.outcome_unknown, "abandon": self.abandon_order,
         }[action](data, order)

    def sign_order(self, data, order):
        tx = f"0x{next(self.tx):04x}"
        result = self.report(sign(order.id, tx=tx, raw=tx.encode(), at=self.at(),
                                  expiry=None if order.nonce is not None else 1_000))
        assert result.accepted
        assert self.book.orders.get(order.id).state == "signed"
        if order.nonce is not None:
            self.signed_nonces.add((order.chain, order.address, order.nonce))

    def broadcast_order(self, data, order):
        assert self.report(broadcast(order.id, at=self.at())).accepted
        assert self.book.orders.get(order.id).state == "submitted"

    def fill_order(self, data, order):
        reservation = self.book.reservations.get(order.reservation_id)
        if order.intent == "entry":  # quote in, tokens out
            amount_in = data.draw(st.integers(1, order.amount_in), label="amount_in")
            amount_out = data.draw(st.integers(1, 10**21), label="amount_out")
            fee = data.draw(st.integers(0, amount_in // 100), label="fee")
        elif order.intent == "exit":  # tokens in, quote out (the venue fee comes off it)
            amount_in = data.draw(st.integers(1, order.amount_in), label="amount_in")
            amount_out = data.draw(st.integers(0, usd(300)), label="amount_out")
            fee = data.draw(st.integers(0, amount_out // 50), label="fee")
        else:  # a transaction that only fills a nonce
            amount_in = amount_out = fee = 0
        network_fee = data.draw(st.integers(0, reservation.fee_amount), label="network_fee")
        before = (cash(self.book, order.chain), cash(self.book, order.chain, "native"))
        position = self.book.positions.get(order.position_id) if order.position_id else None
        losses = self.book.meta.get("consecutive_losses")

        result = self.report(fill(order.id, amount_in, amount_out, fee, network_fee, at=self.at()))

        assert result.accepted, result.reason
        assert result.first(OrderFilled).network_fee == network_fee
        assert self.book.orders.get(order.id) is None and self.book.reservations.get(reservation.id) is None
        after = (cash(self.book, order.chain), cash(self.book, order.chain, "native"))
        assert after[1] == before[1] + reservation.fee_amount - network_fee
        if order.intent not in ("entry", "exit"):
            assert after[0] == before[0]
        elif order.intent == "entry":
            assert after[0] == before[0] + reservation.amount - amount_in  # the unused remainder
            opened = self.book.positions.get(result.first(OrderFilled).position_id)
            assert (opened.cost, opened.size, opened.state) == (amount_in, amount_out, "open")
        else:
            closed = result.first(PositionClosed)
            assert after[0] == before[0] + amount_out - fee  # the proceeds
            assert closed.pnl == amount_out - fee - position.cost
            assert self.book.positions.get(position.id) is None
            assert self.book.meta.get("consecutive_losses") == (losses + 1 if closed.pnl < 0 else 0)
            assert self.book.cooldowns.get((order.chain, order.token)) == self.now + self.policy.limits.cooldown_ms

    def fail_order(self, data, order):
        reservation = self.book.reservations.get(order.reservation_id)
        network_fee = data.draw(st.integers(0, reservation.fee_amount), label="network_fee")
        before = (cash(self.book, order.chain), cash(self.book, order.chain, "native"))
        floor = self.nonce_state(order.chain).floor
        snapshot = self.book.snapshot()
        result = self.report(failure(order.id, "reverted", network_fee, at=self.at()))
        if order.state == "new" and not result.accepted:  # nothing was signed: abandon it instead
            assert {k: v for k, v in self.book.snapshot().items() if k != "meta"} == \
                {k: v for k, v in snapshot.items() if k != "meta"}
            return
        assert result.accepted, result.reason
        retry = result.first(CloseRequested)  # a requested close stays requested
        approval = self.check_approval(result, retry, order.chain, floor) if retry else 0
        after = (cash(self.book, order.chain), cash(self.book, order.chain, "native"))
        assert after == (before[0] + reservation.amount,
                         before[1] + reservation.fee_amount - network_fee - (retry.fee_reserve if retry else 0)
                         - approval)
        if order.intent == "entry":
            assert (order.chain, order.token) not in self.book.slots
        elif order.intent == "exit":
            position = self.book.positions.get(order.position_id)
            if retry:
                self.check_nonce(retry, order.chain, floor)
                assert (position.state, position.exit_order) == ("closing", retry.order_id)
            else:
                assert position.state == "open"

    def outcome_unknown(self, data, order):
        held = cash(self.book, order.chain, account="reserved")
        result = self.report(unknown(order.id, at=self.at()))
        assert result.accepted
        if order.state == "unknown":
            assert result.events == ()  # already known to be unknown
        assert self.book.orders.get(order.id).state == "unknown"
        assert self.book.reservations.get(order.reservation_id).state == "held"
        assert cash(self.book, order.chain, account="reserved") == held

    def abandon_order(self, data, order):
        reservation = self.book.reservations.get(order.reservation_id)
        before = cash(self.book, order.chain)
        result = self.report(abandon(order.id, at=self.at()))
        if order.state != "new":
            assert not result.accepted and "signed bytes exist" in result.reason
            assert self.book.reservations.get(reservation.id).state == "held"
            return
        assert result.accepted
        assert cash(self.book, order.chain) == before + reservation.amount

    def request_close(self, data):
        """The monitor (engine) or the operator asks to close a position."""
        positions = self.book.open_positions()
        pool = [p for p in positions if p.state == "open"]
        if not pool or data.draw(st.integers(0, 4), label="close a closing one") == 0:
            pool = positions
        position = data.draw(st.sampled_from(pool), label="position")
        by = data.draw(st.sampled_from(("engine", "operator")), label="by")
        fee = data.draw(st.integers(0, 3_000), label="fee reserve")
        floor = self.nonce_state(position.chain).floor
        result = self.submit(close(position.id, by=by, fee=fee, reason="test", at=self.at()))
        if position.state == "closing":
            assert not result.accepted and "already closing" in result.reason
        elif by == "engine" and self.book.trading_state is TradingState.HALTED:
            assert not result.accepted and "halted" in result.reason
        elif result.accepted:
            event = result.first(CloseRequested)
            self.check_approval(result, event, position.chain, floor)
            self.check_nonce(event, position.chain, floor)
            assert self.book.positions.get(position.id).state == "closing"
        else:
            assert "insufficient native" in result.reason

    def world_stray(self, data):
        """A report about an order or position that is not in flight changes nothing."""
        kind = data.draw(st.sampled_from(("fill", "failure", "abandon", "unknown", "broadcast", "close")),
                         label="stray")
        ident = data.draw(st.integers(0, 40), label="id")
        live = {o.id for o in self.book.live_orders()}
        positions = {p.id for p in self.book.open_positions()}
        if (kind == "close" and ident in positions) or (kind != "close" and ident in live):
            return
        cmd = {"fill": fill(ident, 1, 1), "failure": failure(ident), "abandon": abandon(ident),
               "unknown": unknown(ident), "broadcast": broadcast(ident),
               "close": close(ident, by="operator")}[kind]
        before = {k: v for k, v in self.book.snapshot().items() if k != "meta"}
        result = self.submit(cmd)
        assert not result.accepted
        assert {k: v for k, v in self.book.snapshot().items() if k != "meta"} == before

    @precondition(lambda self: self.steps_since_restart >= 8)
    @rule()
    def restart(self):
        """Stop cleanly and start again from the database: the same book, and it keeps working."""
        self.steps_since_restart = 0
        before = self.book.snapshot()
        self.run(self.h.close())
        self.h = self.run(start_engine(self.dir, self.policy))
        assert self.book.snapshot() == before

    # ---- invariants, after every step

    @invariant()
    def tables_satisfy_the_invariants(self):
        assert invariants_db(self.h.path) == []

    @invariant()
    def audit_is_clean(self):
        assert audit_db(self.h.path, self.policy) == []

    @invariant()
    def memory_equals_disk(self):
        assert self.book.snapshot() == self.h.load_sync().snapshot()

    @invariant()
    def open_slots_count_positions_and_entry_reservations(self):
        """The max-open-positions rule counts exactly what holds a token."""
        held = [r for r in self.book.held_reservations() if r.kind == "entry"]
        assert self.book.meta.get("open_slots") == len(self.book.open_positions()) + len(held)
        assert len(self.book.slots.snapshot()) == self.book.meta.get("open_slots")

    @invariant()
    def no_two_live_orders_share_a_nonce(self):
        seen = [(o.chain, o.address, o.nonce) for o in self.book.live_orders() if o.nonce is not None]
        assert len(seen) == len(set(seen)), seen


# Runs per machine in the suite: its share of a whole run under 3 minutes on 2 cores. A deeper
# search, before a release or after a change to the decider: BOOK_EXAMPLES=1000 python -m pytest -k Book
EXAMPLES = int(os.environ.get("BOOK_EXAMPLES", "25"))

BookMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBookProperties = BookMachine.TestCase


class ApprovingBookMachine(BookMachine):
    """The same lives on a live EVM router chain: every ERC20 spend comes with its approval."""

    policy = policy(approvals=True, max_position=120, default_position=50, min_position=1, max_open_positions=4,
                    max_exposure=400, cooldown_ms=20_000, max_consecutive_losses=3)


ApprovingBookMachine.TestCase.settings = settings(
    max_examples=max(1, EXAMPLES * 3 // 5), stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestApprovingBookProperties = ApprovingBookMachine.TestCase
