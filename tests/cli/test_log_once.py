"""A note the plan logs is news once: mixed precision rebuilds the plan at every trial."""

from __future__ import annotations

import logging

from qtool.cli.options import common


def test_a_note_a_rebuilt_plan_repeats_is_logged_once(capsys) -> None:
    @common
    def job(as_json: bool) -> None:
        log = logging.getLogger("qtool.quant.overrides")
        for _ in range(3):
            log.info("overrides: Conv 'c' runs in float32")
            log.warning("a warning, three times")
        log.info("another note")
        log.debug("debug lines are not filtered")
        log.debug("debug lines are not filtered")

    job(verbose=2, quiet=False, as_json=False)
    lines = capsys.readouterr().err.splitlines()
    assert lines.count("qtool: INFO: overrides: Conv 'c' runs in float32") == 1
    assert lines.count("qtool: WARNING: a warning, three times") == 1
    assert lines.count("qtool: DEBUG: debug lines are not filtered") == 2
    assert "qtool: INFO: another note" in lines
