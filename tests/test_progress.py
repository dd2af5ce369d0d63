"""Progress where stderr is a file or a pipe: plain lines while the work runs, not one bar at the end."""
from autoprune_edge import progress


def test_a_long_stage_logs_lines_while_it_runs_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line on every advance
    with progress.task("gate training lenet5", total=4) as t:
        t.advance()
        t.update(info="loss 0.51")
        t.advance()
        lines_while_running = capsys.readouterr().err.splitlines()
        t.advance(2)
    after = capsys.readouterr().err.splitlines()
    assert lines_while_running[0].strip().startswith("gate training lenet5: 1/4 (25 %)")
    assert "left" in lines_while_running[0]
    assert lines_while_running[1].strip().startswith("gate training lenet5: 2/4 (50 %)")
    assert lines_while_running[1].endswith("loss 0.51")
    assert len(after) == 1 and "4/4 (100 %)" in after[0] and "left" not in after[0]


def test_lines_are_rate_limited_and_quiet_mode_prints_nothing(capsys, monkeypatch):
    with progress.task("fine-tune", total=1000) as t:  # default: at most one line a minute
        for _ in range(1000):
            t.advance()
    assert len(capsys.readouterr().err.splitlines()) == 1  # the final line only
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)
    progress.set_quiet(True)
    try:
        with progress.task("fine-tune", total=3) as t:
            t.advance(3)
    finally:
        progress.set_quiet(False)
    assert capsys.readouterr().err == ""
