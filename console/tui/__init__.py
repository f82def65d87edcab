"""`botctl tui`: the live operator console (Textual), with the engine embedded in-process.

Only this package imports textual; `console.commands.tui` imports it lazily, so
`botctl --help` and the read commands never pay for it.

    app.py        BotctlApp: owns the engine, turns its published events into panel updates
    model.py      what the panels show, computed from the committed book (no textual here)
    table.py      LiveTable: a virtual table that renders only the rows on screen
    header.py     mode badge, stage, engine state, money per chain
    panels.py     Positions, Reservations, Orders in flight, Nonces, Events
    dialogs.py    close / type-to-confirm / quit / audit / help
    messages.py   the typed messages between them
    botctl.tcss   the app stylesheet
"""
