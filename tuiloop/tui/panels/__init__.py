"""The monitor's text panels as pure functions of the model (Rich text, no Textual), by where they sit.

Each function is given the width it may use and never returns a longer line, so the screen
stays clean at 80x24 and after a resize. :mod:`.bars`: the title, progress and key bars;
:mod:`.training`: metrics, early stopping, learning rate, training health, the epoch table;
:mod:`.machine`: the system pane; :mod:`.log`: the log and the error pane; :mod:`.fit`: how
pieces of text share a width.
"""
