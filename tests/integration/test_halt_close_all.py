"""`halt --close-all` with an entry already sent: the real engine (paper venue, real SQLite) is
halted through its inbox while an entry is on the wire; the entry fills after the halt, and the
position it opens is closed by the halt (not left open behind the operator's back), with the
audit clean. The CLI's side (the answer waits for it) is in tests/cli/test_operator.py."""

from __future__ import annotations

import json
import sqlite3

import pytest

from engine import inbox
from engine.core.exits import HALT_CLOSE

from paperkit import audited, settle, start


@pytest.mark.asyncio
async def test_a_position_opened_after_a_halt_close_all_is_closed_by_the_halt(tmp_path):
    settings, engine = await start(tmp_path)
    try:
        for _ in range(300):  # until an entry is on the wire (paper: submitted, fills next block)
            await engine.tick()
            flying = [o for o in engine.book.orders.base.values() if o.intent == "entry" and o.state == "submitted"]
            if flying:
                break
        assert flying, "the simulated feed sent no entry"
        entry = flying[0].id
        db = settings.home / "botctl.db"
        row = inbox.post(db, "halt", {"close_all": True})
        await inbox.InboxPoller(engine).drain()
        answer = await inbox.wait(db, row, 5)
        assert answer["state"] == "done", answer
        await settle(engine)
        assert not engine.book.open_positions(), [(p.id, p.state) for p in engine.book.open_positions()]
    finally:
        await engine.close()
    conn = sqlite3.connect(db)
    (position,) = conn.execute("SELECT id, state, close_reason FROM positions WHERE entry_order = ?",
                               (entry,)).fetchall()
    requests = [json.loads(d) for (d,) in conn.execute("SELECT data FROM journal WHERE kind = 'CloseRequested'")]
    conn.close()
    assert position[1] == "closed" and position[2] == HALT_CLOSE, position
    assert [r["by"] for r in requests if r["position_id"] == position[0]] == ["halt"]
    assert audited(settings) == []
