"""``turbocat run FILE``, in-process: each run makes and throws away its own SQLite database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from turbocat.cli.run import run
from turbocat.domain import definitions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = EXAMPLES / "hello.yaml"
ORDERS = EXAMPLES / "orders.json"

app = typer.Typer()
app.command()(run)


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return path


def data_step(key: str, *, deps: tuple[str, ...] = (), **config: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "key": key,
        "type": "agent",
        "component": {"kind": "data", "config": config},
    }
    if deps:
        step["depends_on"] = list(deps)
    return step


def test_the_hello_example_runs_and_prints_its_output(tmp_path: Path) -> None:
    done = invoke(HELLO, "--input-file", ORDERS)
    assert done.code == 0, done.stderr
    assert done.json() == {
        "big_orders": 3,
        "big_total": 831.5,
        "largest": {"customer": "dee", "total": 480.5},
        "decision": "escalate",
        "message": "3 big orders need a second look",
        "customers": "dee, ada, cy",
    }
    # not a terminal: one line per transition on stderr, nothing of it on stdout
    lines = done.stderr.splitlines()
    assert lines[0] == "running hello (7 steps)"
    assert any(line.startswith("step big_orders") and "completed" in line for line in lines)
    assert any(line.split()[:3] == ["step", "routine", "skipped"] for line in lines)
    assert lines[-1].startswith("execution completed (success) in ")
    assert "step" not in done.stdout


def test_the_other_branch_input_as_json_and_yaml_output() -> None:
    small = {"threshold": 200, "orders": [{"customer": "ada", "total": 250}]}
    done = invoke(HELLO, "--input", json.dumps(small), "--format", "yaml", "--no-progress")
    assert done.code == 0, done.stderr
    out = yaml.safe_load(done.stdout)
    assert out["decision"] == "none" and out["big_orders"] == 1 and out["customers"] == "ada"
    assert done.stderr == ""  # --no-progress: nothing but errors


def test_a_failed_step_exits_1_with_its_error(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "fails.yaml",
        {
            "steps": [
                {**data_step("sum", operations=[{"op": "aggregate"}]), "inputs": {"data": ["a"]}},
                data_step("later", deps=("sum",), mapping={"x": 1}),
            ]
        },
    )
    done = invoke(file)
    assert done.code == 1 and done.stdout == ""
    assert "error: execution failed" in done.stderr
    assert "step sum failed: aggregate needs numbers" in done.stderr
    assert "step sum failed (data_error): aggregate needs numbers, got 'a'" in done.stderr
    assert any(
        line.split()[:3] == ["step", "later", "skipped"] for line in done.stderr.splitlines()
    )


def test_a_partial_result_prints_the_output_but_exits_1(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "partial.json",
        {
            "steps": [
                {
                    **data_step("bad", operations=[{"op": "aggregate"}]),
                    "inputs": {"data": ["x"]},
                    "on_error": "continue",
                },
                data_step("good", deps=("bad",), mapping={"saw": "{{ steps.bad.error.type }}"}),
            ],
            "outputs": {"saw": "{{ steps.good.output.saw }}"},
        },
    )
    done = invoke(file, "--no-progress")
    assert done.code == 1
    assert done.json() == {"saw": "data_error"}
    assert "completed with a partial result" in done.stderr
    assert "step bad failed (data_error)" in done.stderr


def test_an_invalid_definition_exits_2_with_field_paths(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "bad.yaml",
        {
            "steps": [
                data_step("a", mapping={"x": "{{ 1 + }}"}),
                {**data_step("b", mapping={"y": 1}), "depends_on": ["nowhere"]},
            ]
        },
    )
    done = invoke(file)
    assert done.code == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"error: {file} is not a workflow turbocat can run"
    problems = [line.strip() for line in lines[1:]]
    assert len(problems) == 2, problems
    assert all(p.startswith("steps[") for p in problems), problems
    assert any("nowhere" in p for p in problems)


def test_a_loop_runs_with_one_progress_line_per_item(tmp_path: Path) -> None:
    body = data_step("double", mapping={"v": "{{ item * 2 }}"})
    file = write(
        tmp_path,
        "loop.yaml",
        {
            "steps": [{"key": "each", "type": "loop", "over": "{{ input.xs }}", "body": body}],
            "outputs": {"doubled": "{{ steps.each.output }}"},
        },
    )
    done = invoke(file, "--input", json.dumps({"xs": [1, 2, 3]}))
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"doubled": [{"v": 2}, {"v": 4}, {"v": 6}]}
    labels = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("step ")]
    assert {"each", "double[0]", "double[1]", "double[2]"} <= set(labels), done.stderr


def test_the_input_is_checked_against_the_inputs_schema(tmp_path: Path) -> None:
    bad = {"orders": [{"customer": "ada", "total": "lots"}], "threshold": "x"}
    done = invoke(HELLO, "--input", json.dumps(bad))
    assert done.code == 2
    lines = done.stderr.splitlines()
    assert lines[0] == "error: the input does not match the workflow's inputs schema"
    assert "  input.orders[0].total: 'lots' is not of type 'number'" in lines
    assert "  input.threshold: 'x' is not of type 'number'" in lines
    missing = invoke(HELLO)
    assert missing.code == 2 and "  input: 'orders' is a required property" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "{nope"], "--input is not valid JSON"),
        (["--input", "[1, 2]"], "the input must be a JSON object, not an array"),
        (["--input", "{}", "--input-file", str(ORDERS)], "not both"),
        (["--format", "xml"], "Invalid value for '--format'"),
        (["--timeout", "0"], "Invalid value for '--timeout'"),
    ],
)
def test_bad_usage_exits_2(args: list[str], message: str) -> None:
    done = invoke(HELLO, *args)
    assert done.code == 2 and message in done.stderr, done.stderr


def test_unreadable_and_malformed_files_exit_2(tmp_path: Path) -> None:
    assert invoke(tmp_path / "missing.yaml").code == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [\n  - key: a\n")
    done = invoke(broken)
    assert done.code == 2 and "is not valid YAML or JSON" in done.stderr
    listing = write(tmp_path, "list.json", [1, 2])
    assert "must hold an object" in invoke(listing).stderr


def test_exported_and_canvas_files_run(tmp_path: Path) -> None:
    definition = {
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": [
            {
                "key": "route",
                "type": "condition",
                "branches": [{"label": "big", "when": "{{ input.n > 10 }}"}],
                "default": "small",
            },
            {**data_step("on_big", deps=("route",), mapping={"size": "big"}), "when": "big"},
        ],
        "outputs": {"route": "{{ steps.route.output.label }}"},
    }
    exported = {
        "format": "turbocat/workflow@1",
        "name": "Sizer",
        "tags": ["demo"],
        "definition": definition,
    }
    done = invoke(write(tmp_path, "sizer.json", exported), "-i", '{"n": 50}', "--no-progress")
    assert done.code == 0, done.stderr
    assert done.json() == {"route": "big"}

    canvas = definitions.to_canvas(definitions.validate_definition(definition))
    done = invoke(write(tmp_path, "canvas.yaml", canvas), "-i", '{"n": 1}', "--no-progress")
    assert done.code == 0, done.stderr
    assert done.json() == {"route": "small"}

    exported["definition"] = {"steps": [{"key": "x", "type": "agent"}]}
    bad = invoke(write(tmp_path, "bad-export.yaml", exported))
    assert bad.code == 2 and "  definition.steps[0]" in bad.stderr, bad.stderr
    exported["colour"] = "red"
    assert "  colour: unknown field" in invoke(write(tmp_path, "x.yaml", exported)).stderr


def test_a_saved_agent_reference_cannot_run_locally(tmp_path: Path) -> None:
    file = write(
        tmp_path, "agent.yaml", {"steps": [{"key": "a", "type": "agent", "agent": "summarizer"}]}
    )
    done = invoke(file)
    assert done.code == 2, done.stderr
    assert "  steps[0]" in done.stderr and "summarizer" in done.stderr


def test_keep_db_keeps_the_database_for_inspection(tmp_path: Path) -> None:
    kept = tmp_path / "kept.db"
    done = invoke(HELLO, "--input-file", ORDERS, "--keep-db", kept, "--no-progress")
    assert done.code == 0, done.stderr
    assert f"database kept at {kept}" in done.stderr
    with sqlite3.connect(kept) as conn:
        rows = conn.execute("SELECT status, result FROM executions").fetchall()
        steps = conn.execute("SELECT count(*) FROM step_runs").fetchone()
    assert rows == [("completed", "success")] and steps == (7,)
    again = invoke(HELLO, "--input-file", ORDERS, "--keep-db", kept)
    assert again.code == 2 and "already exists" in again.stderr


def test_the_timeout_cancels_an_execution_that_does_not_finish(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "slow.yaml",
        {
            "steps": [
                {"key": "nap", "type": "wait", "duration_ms": 60_000},
                data_step("after", deps=("nap",), mapping={"x": 1}),
            ]
        },
    )
    done = invoke(file, "--timeout", "0.3")
    assert done.code == 1 and done.stdout == ""
    assert any(
        line.split()[:3] == ["step", "nap", "scheduled"] for line in done.stderr.splitlines()
    )
    assert "did not finish within 0.3 s (--timeout); it was cancelled" in done.stderr
