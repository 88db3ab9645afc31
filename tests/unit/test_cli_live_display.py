"""The live step table stays readable for big loops."""

from __future__ import annotations

import io

from rich.console import Console

from turbocat.cli.run import LiveDisplay, StepView


def test_a_big_loop_shows_active_steps_and_counts_the_rest() -> None:
    out = io.StringIO()
    display = LiveDisplay(Console(file=out, force_terminal=True, width=100), "loop.yaml")
    views = [StepView(f"sq[{i}]", "completed", 1, 3) for i in range(500)]
    views += [StepView(f"sq[{i}]", "running", 1, 10) for i in range(500, 503)]
    display.update(views)
    display.close()
    text = out.getvalue()
    assert "sq[501]" in text and "sq[7]" not in text
    assert "500 more steps done or not started" in text
    assert "500/503 steps" in text
