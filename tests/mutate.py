"""Break each rule once, in a copy of the tree, and check that the test named for it fails.

    python tests/mutate.py            # every mutation (about 10 minutes on 2 free cores)
    python tests/mutate.py --list     # what would be tried
    python tests/mutate.py -k nonce   # only the mutations whose name contains "nonce"

A mutation is (name, file, exact old text, new text, test node ids). For each one the tree is
copied to a temporary directory (without .git and caches), the old text - which must occur
exactly once, so that drift in the code says "pattern not found" instead of passing quietly - is
replaced, and the named tests run there with `python -m pytest -x -q -p no:cacheprovider`.
PYTHONPATH puts the copy first, for pytest and for the `python -m console.cli` subprocesses the
CLI tests start from other directories (the editable install's finder comes after it).

Before any mutation, the named tests run once on an unmutated copy: a test that fails there
proves nothing. The mutation is CAUGHT when pytest exits 1 (a test failed); exit 0 is SURVIVED;
anything else (a collection error, a node id that does not exist) is an ERROR. The table is
printed as markdown (tests/mutations.md holds the last full run); the exit code is 1 if any
mutation was not caught. Not run in CI: it is the check that the tests can fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = "tests/unit/engine/test_concurrency.py"
DECIDER = "tests/unit/engine/test_decider.py"
CRASH = "tests/integration/test_crash_recovery.py::test_kill_at_crash_point_then_restart"


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


WAKE = ("tests/integration/test_evm_live.py::"
        "test_a_signal_line_and_an_operator_close_are_acted_on_as_they_land_not_at_the_next_poll")

_ANSWER_EARLY = (
    "engine/sequencer.py",
    """                write_batch(tx, overlay, journal)
                if self.before_commit is not None:
                    self.before_commit(journal)
""",
    """                write_batch(tx, overlay, journal)
                if self.before_commit is not None:
                    self.before_commit(journal)
                overlay.merge()
                self._answer(batch, journal, results)  # MUTATION: answered while the COMMIT is still to run
                batch, journal = [], []
""",
)

MUTATIONS = [
    Mutation(
        "write-ahead: broadcast while RecordSubmission is still committing",
        "engine/driver.py",
        """            result = await submit(RecordSubmission(order.id, signed.tx_id, signed.raw, signed.expiry,
                                                   quote.quoted_out, signed.min_out, self.clock(), signed.fees))
            if not result.accepted:""",
        """            import asyncio, dataclasses  # MUTATION: overlap the commit with the network round trip
            recording = asyncio.ensure_future(submit(RecordSubmission(order.id, signed.tx_id, signed.raw,
                                              signed.expiry, quote.quoted_out, signed.min_out, self.clock(),
                                              signed.fees)))
            early = await executor.broadcast(dataclasses.replace(order, state="signed", tx_id=signed.tx_id,
                                                                 raw=signed.raw, expiry=signed.expiry))
            result = await recording
            if result.accepted and isinstance(early, Accepted):
                await submit(MarkBroadcast(order.id, self.clock()))
                return "sent"
            if not result.accepted:""",
        ("tests/integration/test_write_ahead.py::test_every_broadcast_finds_its_bytes_already_committed",),
    ),
    Mutation(
        "the sequencer answers callers before COMMIT",
        *_ANSWER_EARLY,
        (f"{CONCURRENCY}::test_results_are_released_only_after_commit",),
    ),
    Mutation(
        "the sequencer publishes to subscribers before COMMIT",
        *_ANSWER_EARLY,
        (f"{CONCURRENCY}::test_subscribers_see_only_committed_events_in_order",),
    ),
    Mutation(
        "the COMMIT itself is left out",
        "storage/db.py",
        """                self.before_commit(conn)
            conn.execute("COMMIT")""",
        """                self.before_commit(conn)
            pass  # MUTATION: no COMMIT""",
        (f"{CONCURRENCY}::test_results_are_released_only_after_commit",),
    ),
    Mutation(
        "a failed commit is applied to memory anyway",
        "engine/sequencer.py",
        """            log.error("commit failed, nothing applied: %s", exc)""",
        """            overlay.merge()  # MUTATION
            log.error("commit failed, nothing applied: %s", exc)""",
        ("tests/integration/test_storage_faults.py::test_disk_io_error_mid_run_stops_cleanly_and_loses_nothing",),
    ),
    Mutation(
        "a posting sign: a realized loss is credited to cash",
        "engine/core/decider.py",
        """        postings.append(Posting(c, "quote", "pnl", "cash", -pnl))""",
        """        postings.append(Posting(c, "quote", "cash", "pnl", -pnl))  # MUTATION""",
        (f"{DECIDER}::test_exit_fill_closes_with_the_right_pnl",),
    ),
    Mutation(
        "the cash check of an entry",
        "engine/core/risk.py",
        """        if amount > cash:
            raise Denied(f"insufficient cash""",
        """        if False:  # MUTATION
            raise Denied(f"insufficient cash""",
        (f"{CONCURRENCY}::test_two_concurrent_60_dollar_entries_with_100_dollars_cash",),
    ),
    Mutation(
        "the 'already closing' rule of the one queue",
        "engine/core/decider.py",
        """    if position.state == "closing":
        return [CloseDenied(cmd.position_id, f"position {cmd.position_id} is already closing", cmd.at)]""",
        """    pass  # MUTATION: a closing position may be closed again""",
        ("tests/cli/test_operator.py::test_closing_a_closed_or_closing_position_is_refused",),
    ),
    Mutation(
        "the 'already closing' check of the sender (before anything is written)",
        "console/commands/operator.py",
        """    if position["state"] == "closing":
        raise Failed(f"position {ident} is already closing")""",
        """    pass  # MUTATION""",
        ("tests/cli/test_operator.py::test_closing_a_closed_or_closing_position_is_refused",),
    ),
    Mutation(
        "a timeout releases the reservation (unknown treated as failed)",
        "engine/driver.py",
        """        await submit(RecordUnknown(order.id, reason, self.clock()))""",
        """        await submit(RecordFailure(order.id, reason, 0, self.clock()))  # MUTATION""",
        ("tests/integration/test_write_ahead.py::test_every_broadcast_finds_its_bytes_already_committed",),
    ),
    Mutation(
        "a nonce is handed out twice",
        "engine/core/decider.py",
        """    return max(state.next, state.floor)""",
        """    return max(state.next - 1, state.floor)  # MUTATION""",
        (f"{CONCURRENCY}::test_ten_concurrent_entries_spend_exactly_all_the_cash",),
    ),
    Mutation(
        "re-signing an intent whose bytes are stored (the book)",
        "engine/core/decider.py",
        """    if order.state != "new":
        if order.tx_id == cmd.tx_id:""",
        """    if order.state not in ("new", "signed"):  # MUTATION
        if order.tx_id == cmd.tx_id:""",
        (f"{DECIDER}::test_submission_is_written_ahead_and_a_retry_is_recognised",),
    ),
    Mutation(
        "re-signing an intent whose bytes are stored (the driver, after a restart)",
        "engine/driver.py",
        """        if order.state == "new":
            if self.clock()""",
        """        if order.state in ("new", "signed"):  # MUTATION
            if self.clock()""",
        ("tests/integration/test_write_ahead.py::"
         "test_bytes_stored_before_a_restart_are_sent_again_never_signed_again",),
    ),
    Mutation(
        "a failure recorded for an order that was never signed",
        "engine/core/decider.py",
        """def _decide_failure(book: Book, cmd: RecordFailure) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT:""",
        """def _decide_failure(book: Book, cmd: RecordFailure) -> list:
    order = book.orders.get(cmd.order_id)
    if order is None or order.state not in SENT | {"new"}:  # MUTATION""",
        (f"{DECIDER}::test_an_order_that_fails_before_signing_leaves_no_nonce_gap",),
    ),
    Mutation(
        "after a restart, bytes signed but not marked broadcast are assumed never sent (entry)",
        "engine/kernel.py",
        """            if order.state in SENT:
                outcome = await self.driver.advance(order)""",
        """            if order.state == "signed":  # MUTATION: "it was never broadcast", a guess
                from engine.core.messages import RecordFailure
                await self.sequencer.submit(RecordFailure(order.id, "not sent", 0, self.now(), nonce_unused=True))
                outcome = "failed"
                resolved.append((order.id, order.intent, order.state, outcome))
            elif order.state in ("submitted", "unknown"):
                outcome = await self.driver.advance(order)""",
        (f"{CRASH}[after_broadcast-1]",),
    ),
    Mutation(
        "a paused book still takes new entries",
        "engine/core/risk.py",
        """    if state is not TradingState.ACTIVE:
        raise Denied(f"trading is {state.value}: no new entries")""",
        """    if state is TradingState.HALTED:  # MUTATION: reducing lets entries in
        raise Denied(f"trading is {state.value}: no new entries")""",
        ("tests/cli/test_operator_paths.py::test_resume_after_pause_takes_new_entries_again",),
    ),
    Mutation(
        "reconcile --accept moves the book away from the venue",
        "engine/core/decider.py",
        """                postings.append(Posting(chain, asset, "deposits", "cash", held - venue))""",
        """                postings.append(Posting(chain, asset, "cash", "deposits", held - venue))  # MUTATION""",
        ("tests/cli/test_operator_paths.py::test_reconcile_accept_takes_the_venues_balance_and_lets_entries_in_again",),
    ),
    Mutation(
        "close --all closes only the first position",
        "engine/core/operator.py",
        """    return [_request_close(p, p.id, reason, at, by, fees) for p in book.open_positions() if p.state == "open"]""",
        """    return [_request_close(p, p.id, reason, at, by, fees) for p in book.open_positions()
            if p.state == "open"][:1]  # MUTATION""",
        ("tests/cli/test_operator_paths.py::test_close_all_sells_every_open_position_exactly_once",),
    ),
    Mutation(
        "halt --close-all leaves open a position an entry already sent opens after it",
        "engine/core/exits.py",
        """    return [p.id for p in book.open_positions() if p.state == "open" and p.exit_attempts == 0]""",
        """    return []  # MUTATION""",
        ("tests/integration/test_halt_close_all.py::test_a_position_opened_after_a_halt_close_all_is_closed_by_the_halt",),
    ),
    Mutation(
        "a pause, a resume or a halt needs the node (the engine) to be decided",
        "engine/core/operator.py",
        """    return command in ("close", "close_all") or (command == "halt" and bool(args.get("close_all")))""",
        """    return True  # MUTATION""",
        ("tests/integration/test_evm_operator.py",),
    ),
    Mutation(
        "an entry the chain cannot price under the gas cap still takes a nonce",
        "engine/core/decider.py",
        """    if cmd.refused:  # decided once""",
        """    if False and cmd.refused:  # MUTATION""",
        ("tests/integration/test_evm_scenarios.py::test_a_base_fee_above_the_cap_refuses_the_entry_and_sends_nothing",),
    ),
    Mutation(
        "a replacement raises the fee cap but not the tip (anvil takes it, geth refuses it)",
        "engine/venues/evm/fees.py",
        """    least = Fees(max_fee=bumped(old.max_fee), tip=bumped(old.tip))""",
        """    least = Fees(max_fee=bumped(old.max_fee), tip=old.tip)  # MUTATION""",
        ("tests/unit/venues/test_evm_fees.py",),
    ),
    Mutation(
        "reconciliation compares a chain whose order is still in doubt (a mined, unrecorded swap is a difference)",
        "engine/kernel.py",
        """for chain, port in sorted(self.ports.items()) if chain not in in_doubt}""",
        """for chain, port in sorted(self.ports.items())}  # MUTATION""",
        ("tests/integration/test_evm_operator.py::"
         "test_a_one_off_close_the_chain_does_not_mine_answers_in_its_timeout_and_leaves_the_exit_held",),
    ),
    Mutation(
        "a send error nobody can classify is never followed by a reconciliation",
        "engine/kernel.py",
        """        if self.driver.reconcile_after:""",
        """        if False and self.driver.reconcile_after:  # MUTATION""",
        ("tests/integration/test_evm_operator.py::"
         "test_a_send_error_nobody_can_classify_holds_the_funds_and_reconciles_once_settled",),
    ),
    Mutation(
        "an automatic exit that used up its attempts starts again with a fresh budget (gas for ever)",
        "engine/core/exits.py",
        """    if position.state != "open" or position.exit_attempts >= MAX_EXIT_ATTEMPTS:""",
        """    if position.state != "open":  # MUTATION""",
        ("tests/unit/engine/test_exit_rules.py::test_an_automatic_exit_that_used_up_its_attempts_is_not_started_again",
         "tests/cli/test_operator_hardening.py::"
         "test_an_automatic_exit_the_node_keeps_refusing_stops_after_its_budget_and_waits_for_the_operator"),
    ),
    Mutation(
        "a nonce taken with no receipt of ours is another's at once (a lagging receipt releases funds)",
        "engine/venues/evm/executor.py",
        """                    if head - first < EXPIRE_AFTER_BLOCKS:""",
        """                    if False:  # MUTATION""",
        ("tests/integration/test_evm_executor.py::test_expired_needs_every_read_and_our_own_late_receipt_wins",),
    ),
    Mutation(
        "USD limits applied in quote units (a coin counted as a dollar)",
        "engine/core/risk.py",
        """    return to_units(usd / chain.quote_usd, chain.quote_decimals)""",
        """    return to_units(usd, chain.quote_decimals)  # MUTATION""",
        ("tests/integration/test_evm_native_quote.py",),
    ),
    Mutation(
        "a book that traded live demands a paper venue before a paper run",
        "engine/kernel.py",
        '            met = "genesis:" if settings.mode == "paper" else "opening:"',
        """            met = ""  # MUTATION: any deposit means the world was met""",
        ("tests/integration/test_evm_rollout.py::"
         "test_a_paper_run_after_live_trading_in_the_same_home_runs_and_counts_elsewhere",),
    ),
    Mutation(
        "the chain's pending count never raises the nonce floor (a foreign transaction goes unseen)",
        "engine/core/decider.py",
        """    if cmd.floor <= state.floor:
        return []""",
        """    if True:  # MUTATION
        return []""",
        ("tests/integration/test_evm_scenarios.py::"
         "test_nonces_shows_the_next_nonce_and_the_floor_a_transaction_from_elsewhere_raised",),
    ),
    Mutation(
        "a live engine reads a signal line only at its next poll (the line waits up to an interval)",
        "engine/kernel.py",
        """        watch(engine.waker())""",
        """        pass  # MUTATION""",
        (WAKE,),
    ),
    Mutation(
        "an operator's command waits for the engine's next poll (a close waits up to an interval)",
        "engine/inbox.py",
        """                    if wake is not None:
                        wake()""",
        """                    if wake is not None:
                        pass  # MUTATION""",
        (WAKE,),
    ),
    Mutation(
        "every woken step looks up every order in flight (a burst of signal lines, an RPC storm)",
        "engine/kernel.py",
        """        if not live or due(self._swept_at, now, SWEEP_MS):""",
        """        if True:  # MUTATION""",
        ("tests/integration/test_evm_live.py::"
         "test_a_burst_of_signal_lines_sends_each_entry_at_once_but_reads_the_orders_in_flight_once",),
    ),
    Mutation(
        "a live chain's open positions are priced at every step, not every marks_every_s",
        "engine/kernel.py",
        """                if not held or not due(self._marked_at.get(chain), now, every_ms):""",
        """                if not held:  # MUTATION""",
        ("tests/integration/test_evm_live.py::test_open_positions_are_priced_every_marks_every_s_not_every_step",),
    ),
    Mutation(
        "a wall clock stepped back stops the sweep until it catches up (orders unread, positions unpriced)",
        "engine/kernel.py",
        """    return last is None or now < last or now - last >= every_ms""",
        """    return last is None or now - last >= every_ms  # MUTATION""",
        ("tests/integration/test_evm_live.py::"
         "test_a_burst_of_signal_lines_sends_each_entry_at_once_but_reads_the_orders_in_flight_once",),
    ),
    Mutation(
        "a pooled transaction is read at every look-up, new block or not (three reads an order, five times a second)",
        "engine/venues/evm/executor.py",
        """        if last is not None and last[0] == head and time.monotonic() - last[1] < self.lookup_every_s:""",
        """        if False:  # MUTATION""",
        ("tests/integration/test_evm_executor.py::"
         "test_a_pending_transaction_is_read_again_on_a_new_block_not_at_every_look_up",),
    ),
    Mutation(
        "a pending transaction is read again only on a new block (a drop with no block goes unseen)",
        "engine/venues/evm/executor.py",
        """        if last is not None and last[0] == head and time.monotonic() - last[1] < self.lookup_every_s:""",
        """        if last is not None and last[0] == head:  # MUTATION""",
        ("tests/integration/test_evm_executor.py::"
         "test_a_pending_transaction_is_read_again_on_a_new_block_not_at_every_look_up",),
    ),
    Mutation(
        "a node that will not say its head stops every fill (the look-up needs the head first)",
        "engine/venues/evm/executor.py",
        """        except Exception:  # a node that will not say its head may still answer for the transaction
            return await self._look_up(order)""",
        """        except Exception:  # MUTATION
            raise""",
        ("tests/integration/test_evm_executor.py::"
         "test_a_pending_transaction_is_read_again_on_a_new_block_not_at_every_look_up",),
    ),
    Mutation(
        "a close confirmed in the console waits for the engine's next poll",
        "console/tui/app.py",
        """            self.engine.wake()  # a close is sent now, not at the end of the engine's poll interval""",
        """            pass  # MUTATION""",
        ("tests/integration/test_evm_live.py::test_a_close_confirmed_in_the_console_wakes_the_live_engine_at_once",),
    ),
]
# The same guess, caught at the exit's crash point.
_GUESS = next(m for m in MUTATIONS if m.name.endswith("assumed never sent (entry)"))
MUTATIONS.insert(MUTATIONS.index(_GUESS) + 1, Mutation(_GUESS.name.replace("(entry)", "(exit)"), _GUESS.file, _GUESS.old,
                                                       _GUESS.new, (f"{CRASH}[exit_after_broadcast-1]",)))

IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".venv",
                                ".hypothesis", ".import_linter_cache", "*.pyc")


def copy_tree(into: Path) -> Path:
    target = into / "repo"
    shutil.copytree(ROOT, target, ignore=IGNORE)
    return target


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from(copy: Path, env: dict[str, str]) -> None:
    """The copy, not the working tree, must be what a subprocess imports."""
    probe = subprocess.run([sys.executable, "-c", "import engine, console; print(engine.__file__, console.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=True)
    for path in probe.stdout.split():
        if not Path(path).resolve().is_relative_to(copy.resolve()):
            raise SystemExit(f"a subprocess imports {path}, not the copy {copy}: fix PYTHONPATH")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float, str]:
    env = environment(copy)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              check=False, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out = -1, f"timed out after {timeout:g} s: {exc}"
    return code, time.monotonic() - started, out


def applies(tree: Path, mutation: Mutation) -> str | None:
    """Why the mutation cannot be applied to `tree`, if it cannot (its text must occur once)."""
    path = tree / mutation.file
    if not path.exists():
        return f"no file {mutation.file}"
    count = path.read_text().count(mutation.old)
    if count != 1:
        return "pattern not found" if count == 0 else f"pattern found {count} times"
    return None


def apply(copy: Path, mutation: Mutation) -> str | None:
    """Apply the mutation; the reason it cannot be applied, if so."""
    problem = applies(copy, mutation)
    if problem is None:
        path = copy / mutation.file
        path.write_text(path.read_text().replace(mutation.old, mutation.new))
    return problem


def last_lines(out: str, n: int = 15) -> str:
    """What pytest said failed (its `E` lines and summary), else its last lines."""
    lines = out.strip().splitlines()
    said = [line for line in lines if line.startswith(("E ", "FAILED", "ERROR"))]
    return "\n".join((said[:n] + lines[-1:]) if said else lines[-n:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--check", action="store_true", help="only check that every pattern applies once")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    parser.add_argument("-v", action="store_true", help="show pytest's last lines for every run")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    if args.check:
        problems = [f"{m.name}: {problem}" for m in chosen if (problem := applies(ROOT, m))]
        print("\n".join(problems) or f"all {len(chosen)} patterns apply once")
        return 1 if problems else 0
    if args.list:
        for m in chosen:
            print(f"{m.name}\n    {m.file}\n    " + "\n    ".join(m.tests))
        return 0
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="botctl-mutate-") as tmp:
        pristine = copy_tree(Path(tmp))
        check_imports_from(pristine, environment(pristine))
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            code, took, out = run_tests(pristine, tests, args.timeout)
            print(f"baseline: {len(tests)} test(s) on the unmutated copy: exit {code} in {took:.0f} s", flush=True)
            if code != 0:
                print(last_lines(out, 40))
                print("the named tests must pass before a mutation can prove anything")
                return 1
        for number, mutation in enumerate(chosen, 1):
            work = Path(tmp) / f"m{number}"
            shutil.copytree(pristine, work)
            problem = apply(work, mutation)
            if problem is not None:
                verdict, took, out = problem.upper(), 0.0, ""
            else:
                code, took, out = run_tests(work, mutation.tests, args.timeout)
                verdict = {0: "SURVIVED", 1: "caught"}.get(code, f"ERROR (pytest exit {code})")
            shutil.rmtree(work, ignore_errors=True)
            failures += verdict != "caught"
            rows.append((number, mutation, verdict, took))
            print(f"{number:2}. {verdict:<9} {took:5.0f} s  {mutation.name}", flush=True)
            if args.v or verdict != "caught":
                print("    " + last_lines(out).replace("\n", "\n    "))
    print()
    print("| # | mutation | where | caught by | result |")
    print("|---|---|---|---|---|")
    for number, m, verdict, took in rows:
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in m.tests)
        print(f"| {number} | {m.name} | `{m.file}` | {tests} | {verdict} ({took:.0f} s) |")
    print(f"\n{len(rows) - failures} of {len(rows)} caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
