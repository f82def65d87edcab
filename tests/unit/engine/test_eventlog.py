"""The operator's log: committed events become JSON lines with their ids; the file never disturbs
the terminal; no secret is ever written.

The event log is fed exactly as the sequencer feeds it: a batch is decided on an overlay, merged
(so what the batch settled is already forgotten by the book), then published.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from engine import logs
from engine.core.decider import apply, decide
from engine.core.messages import Beat, FromInbox, SetTradingState, StartRun, TradingState
from engine.eventlog import EventLog
from engine.settings import SettingsError

from builders import NOW, broadcast, close, failure, fill, funded, given, marks, policy, reserve, sign, unknown, usd


class Lines(logging.Handler):
    """The records the event log writes, as the JSON lines the file would hold."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonLines())
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))

    def events(self, **ids) -> list[str]:
        return [line["event"] for line in self.lines if all(line.get(k) == v for k, v in ids.items())]


@pytest.fixture
def logger(request):
    log = logging.getLogger(f"test.eventlog.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = Lines()
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)


def commit(book, eventlog, *commands) -> list:
    """One batch, as the sequencer commits it: decide all on one overlay, merge, then publish."""
    overlay = book.overlay()
    events = []
    for cmd in commands:
        decided = decide(overlay, cmd)
        apply(overlay, decided)
        events += decided
    overlay.merge()
    eventlog(events)
    return events


def pol(**limits):
    return policy({"base": {"T1": 18}, "solana": {"WIF": 6}}, **limits)


def test_an_orders_whole_life_is_logged_in_order_each_line_naming_its_chain_token_position_and_tx(logger):
    log, out = logger
    book = given(*funded("base"), pol=pol())
    eventlog = EventLog(book, log)
    commit(book, eventlog, reserve("base", "T1", usd(50), signal="sig-1"))
    commit(book, eventlog, sign(1, tx="0xentry"))
    commit(book, eventlog, broadcast(1))
    commit(book, eventlog, fill(1, usd(50), 10**18, fee=usd("0.15"), network_fee=7))
    commit(book, eventlog, close(1, by="alice@host pid 7", reason="operator close"))
    # the exit settles in one batch: the book forgets order 2 and position 1 before the log sees them
    commit(book, eventlog, sign(2, tx="0xexit"), broadcast(2), fill(2, 10**18, usd(49), fee=usd("0.15")))

    assert out.events(order=1) == ["EntryReserved", "OrderSigned", "OrderSubmitted", "OrderFilled", "PositionOpened"]
    assert out.events(order=2) == ["CloseRequested", "OrderSigned", "OrderSubmitted", "OrderFilled", "PositionClosed"]
    assert out.events(position=1) == ["OrderFilled", "PositionOpened", "CloseRequested", "OrderSigned",
                                       "OrderSubmitted", "OrderFilled", "PositionClosed"]
    for line in out.lines:
        if "order" in line:
            assert (line["chain"], line["token"]) == ("base", "T1"), line
    reserved = out.lines[out.events().index("EntryReserved")]
    assert reserved["signal"] == "sig-1" and "50.00 for T1 on base" in reserved["msg"]
    assert [line.get("tx") for line in out.lines if line.get("order") == 2][1:4] == ["0xexit"] * 3
    closed = out.lines[-1]
    assert closed["event"] == "PositionClosed" and closed["level"] == "info"
    assert "pnl -1.15" in closed["msg"] and "(operator close)" in closed["msg"], closed["msg"]
    requested = out.lines[out.events().index("CloseRequested")]
    assert requested["by"] == "alice@host pid 7"


def test_a_failure_and_an_unknown_outcome_are_warnings_with_their_reason(logger):
    log, out = logger
    book = given(*funded("solana"), pol=pol())
    eventlog = EventLog(book, log)
    commit(book, eventlog, reserve("solana", "WIF", usd(20)), sign(1, tx="sig1"), broadcast(1))
    commit(book, eventlog, failure(1, "slippage tolerance exceeded: 13450824 < 13500316", network_fee=5000))
    commit(book, eventlog, reserve("solana", "WIF", usd(20)), sign(2, tx="sig2"), broadcast(2))
    commit(book, eventlog, unknown(2, "rpc timeout after broadcast"))

    failed = [line for line in out.lines if line["event"] == "OrderFailed"]
    assert len(failed) == 1 and failed[0]["level"] == "warning"
    assert failed[0]["reason"].startswith("slippage tolerance exceeded")
    assert (failed[0]["order"], failed[0]["tx"], failed[0]["chain"], failed[0]["token"]) == (1, "sig1", "solana", "WIF")
    assert "network fee 0.000005 native" in failed[0]["msg"]
    lost = [line for line in out.lines if line["event"] == "OrderOutcomeUnknown"]
    assert lost[0]["level"] == "warning" and lost[0]["reason"] == "rpc timeout after broadcast"
    assert lost[0]["tx"] == "sig2" and "stay held" in lost[0]["msg"]


def test_an_order_in_flight_when_the_log_starts_is_still_named_by_chain_and_token(logger):
    log, out = logger
    book = given(*funded("base"), reserve("base", "T1", usd(50)), sign(1, tx="0xold"), broadcast(1), pol=pol())
    eventlog = EventLog(book, log)  # a restart: the order was loaded from the database
    commit(book, eventlog, fill(1, usd(50), 10**18))
    line = out.lines[0]
    assert (line["event"], line["order"], line["chain"], line["token"], line["tx"]) == \
        ("OrderFilled", 1, "base", "T1", "0xold")


def test_price_marks_and_heartbeats_are_written_at_debug_only(logger):
    log, out = logger
    book = given(*funded("base"), pol=pol())
    eventlog = EventLog(book, log)
    commit(book, eventlog, StartRun("r1", "paper", "paper", "botctl run", NOW))
    commit(book, eventlog, marks("base", {"T1": "1.5"}), Beat("r1", NOW + 60_000))
    assert out.events() == ["RunStarted"]
    log.setLevel(logging.DEBUG)
    commit(book, eventlog, marks("base", {"T1": "1.6"}), Beat("r1", NOW + 120_000))
    assert out.events() == ["RunStarted", "PricesMarked", "Heartbeat"]
    log.setLevel(logging.WARNING)
    commit(book, eventlog, reserve("base", "T1", usd(50)))  # INFO: not written, still learnt
    commit(book, eventlog, sign(1, tx="0xw"), broadcast(1), failure(1, "reverted"))
    assert out.events()[3:] == ["OrderFailed"] and out.lines[-1]["token"] == "T1"


def test_an_operator_command_is_logged_with_who_sent_it_and_its_answer(logger):
    log, out = logger
    book = given(*funded("base"), pol=pol())
    eventlog = EventLog(book, log)
    sender = "alice@desk pid 4242"
    commit(book, eventlog, FromInbox(17, SetTradingState(TradingState.REDUCING, "going to lunch", NOW, sender),
                                     "", True, NOW))
    commit(book, eventlog, FromInbox(18, SetTradingState(TradingState.ACTIVE, "back", NOW, sender, force=False),
                                     "", True, NOW))
    changed = [line for line in out.lines if line["event"] == "TradingStateChanged"]
    assert changed[0]["by"] == sender and "trading active -> paused by alice@desk pid 4242: going to lunch" in \
        changed[0]["msg"]
    answers = [line for line in out.lines if line["event"] == "InboxAnswered"]
    assert [(a["command"], a["by"]) for a in answers] == [(17, sender), (18, sender)]
    assert answers[0]["msg"] == f"command 17 from {sender}: done: trading active -> reducing"


def test_the_loss_breaker_is_logged_once_when_it_trips(logger):
    log, out = logger
    book = given(*funded("base", quote=usd(10_000)), pol=pol(max_consecutive_losses=2, cooldown_ms=0))
    eventlog = EventLog(book, log)
    for n in range(2):
        entry, exit_ = 2 * n + 1, 2 * n + 2
        commit(book, eventlog, reserve("base", "T1", usd(50)), sign(entry), broadcast(entry),
               fill(entry, usd(50), 10**18))
        commit(book, eventlog, close(n + 1), sign(exit_), broadcast(exit_), fill(exit_, 10**18, usd(40)))
    assert out.events(event="LossBreaker") == ["LossBreaker"]
    assert "after 2 consecutive losing trades" in out.lines[-1]["msg"]
    assert out.lines[-1]["level"] == "warning"


# --------------------------------------------------------------------------- the file and its secrets


@pytest.fixture
def masks():
    """The secrets the formatter was told of are process-wide: restore them."""
    saved = (set(logs._secrets), logs._masks)
    yield
    logs._secrets.clear()
    logs._secrets.update(saved[0])
    logs._masks = saved[1]


def record(msg: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("botctl.test", logging.ERROR, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_no_secret_the_formatter_was_told_of_reaches_a_line(masks):
    url = "https://mainnet.example.com/v3/0123456789abcdef0123?apikey=s3cr3t-q"
    password = 'pa"ss\\wörd-42'  # characters JSON escapes
    logs.protect(logs.secret_values({"BOTCTL_EVM_PASSWORD": password, "BOTCTL_CHAINS__BASE__RPC_URL": url,
                                     "BOTCTL_PAPER__SEED": "7", "HOME": "/root"}))
    fmt = logs.JsonLines()
    for text in (f"connect to {url} failed", "path part 0123456789abcdef0123 leaked", "key s3cr3t-q",
                 f"password {password}"):
        line = fmt.format(record(text, reason=text))
        assert "0123456789abcdef0123" not in line and "s3cr3t-q" not in line, line
        assert "ss\\\\w" not in line and "w\\u00f6rd" not in line, line
        assert logs.MASK in line
        json.loads(line)
    assert "connect to ******** failed" in fmt.format(record(f"connect to {url} failed"))
    assert "seed 7 on /root" in fmt.format(record("seed 7 on /root"))  # not secrets: left alone


def test_an_endpoint_with_nothing_to_hide_is_left_readable(masks):
    logs.protect(logs.secret_values({"BOTCTL_CHAINS__BASE__RPC_URL": "http://127.0.0.1:8545"}))
    assert "http://127.0.0.1:8545" in logs.JsonLines().format(record("endpoint http://127.0.0.1:8545"))


@pytest.fixture
def file_logger(request):
    log = logging.getLogger(f"test.logfile.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handlers = []

    def attach(path: Path, **kw) -> logs.LogFile:
        handler = logs.LogFile(path, **kw)
        handler.setFormatter(logs.JsonLines())
        log.addHandler(handler)
        handlers.append(handler)
        return handler

    yield log, attach
    for handler in handlers:
        log.removeHandler(handler)
        handler.close()


@pytest.mark.parametrize("how", ["disk full", "a directory"])
def test_a_log_that_cannot_be_written_drops_and_counts_lines_and_says_so_in_one_line(tmp_path, capfd, file_logger,
                                                                                   how):
    log, attach = file_logger
    path = tmp_path / "botctl.log"
    if how == "disk full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        path.symlink_to("/dev/full")
    else:
        path.mkdir()
    handler = attach(path)
    for n in range(20):
        log.info("order %d filled", n, extra={"order": n})
    log.error("with a traceback too", exc_info=ValueError("boom"))
    handler.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert err.count("\n") == 1 and err.startswith(f"botctl: cannot write the log {path}: "), err
    assert handler.dropped == 21


def test_the_log_resumes_when_it_can_be_written_again(tmp_path, capfd, file_logger):
    log, attach = file_logger
    path = tmp_path / "botctl.log"
    path.mkdir()
    handler = attach(path)
    log.info("lost")
    path.rmdir()
    log.info("kept", extra={"order": 3})
    handler.close()
    assert [json.loads(line)["msg"] for line in path.read_text().splitlines()] == ["kept"]
    assert handler.dropped == 1 and capfd.readouterr().err.count("\n") == 1
    assert (path.stat().st_mode & 0o777) == 0o600


def test_the_log_rotates_by_size_and_keeps_its_backups(tmp_path, file_logger):
    log, attach = file_logger
    path = tmp_path / "botctl.log"
    handler = attach(path, max_bytes=2_000, backups=2)
    for n in range(100):
        log.info("line %03d", n)
    handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["botctl.log", "botctl.log.1", "botctl.log.2"]
    kept = [json.loads(line)["msg"] for name in ("botctl.log.2", "botctl.log.1", "botctl.log")
            for line in (tmp_path / name).read_text().splitlines()]
    assert kept == [f"line {n:03d}" for n in range(100 - len(kept), 100)]  # in order, nothing torn
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())


def test_the_level_comes_from_botctl_log_level():
    assert logs.level_from({}) == logging.INFO
    assert logs.level_from({"BOTCTL_LOG_LEVEL": "DEBUG"}) == logging.DEBUG
    assert logs.level_from({"BOTCTL_LOG_LEVEL": " warning "}) == logging.WARNING
    with pytest.raises(SettingsError, match="BOTCTL_LOG_LEVEL: 'loud' is not a level"):
        logs.level_from({"BOTCTL_LOG_LEVEL": "loud"})


def test_amounts_in_lines_are_exact(logger):
    log, out = logger
    book = given(*funded("base"), pol=pol())
    eventlog = EventLog(book, log)
    commit(book, eventlog, reserve("base", "T1", usd("12.345678")), sign(1), broadcast(1),
           fill(1, usd("12.345678"), 1_234_567_890_123_456_789_012))
    filled = out.lines[out.events().index("OrderFilled")]["msg"]
    assert "bought 1234.567890123456789012 T1 for 12.345678" in filled, filled
