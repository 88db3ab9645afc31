"""``turbocat run FILE`` as a user runs it: a real process, its own throwaway database."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import clean_env
from turbocat.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "run"
        not in {c.name or getattr(c.callback, "__name__", None) for c in app.registered_commands},
        reason="'run' is not registered in turbocat.cli.main yet "
        "(app.command('run')(turbocat.cli.run.run))",
    ),
]


def turbocat_run(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turbocat", "run", *map(str, args)],
        env=clean_env(TURBOCAT_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hello_runs_end_to_end_without_touching_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    done = turbocat_run(
        EXAMPLES / "hello.yaml", "--input-file", EXAMPLES / "orders.json", home=home
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["decision"] == "escalate" and out["customers"] == "dee, ada, cy"
    assert "step routine     skipped" in done.stderr
    assert "execution completed (success)" in done.stderr
    assert not home.exists()  # the run's database lived in a temporary folder
    print(f"turbocat run examples/hello.yaml: {took:.2f} s")  # shown with -s; not a timed test


def test_exit_codes_for_failure_and_bad_files(tmp_path: Path) -> None:
    home = tmp_path / "home"
    failing = tmp_path / "failing.yaml"
    failing.write_text(
        yaml.safe_dump(
            {
                "steps": [
                    {
                        "key": "sum",
                        "type": "agent",
                        "component": {
                            "kind": "data",
                            "config": {"operations": [{"op": "aggregate"}]},
                        },
                        "inputs": {"data": ["a"]},
                    }
                ]
            }
        )
    )
    done = turbocat_run(failing, home=home)
    assert done.returncode == 1 and done.stdout == ""
    assert "step sum failed (data_error): aggregate needs numbers" in done.stderr

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"steps": [{"key": "a", "type": "agent"}]}))
    done = turbocat_run(invalid, home=home)
    assert done.returncode == 2 and done.stdout == ""
    assert "  steps[0]" in done.stderr

    done = turbocat_run(EXAMPLES / "hello.yaml", "--input", '{"orders": 3}', home=home)
    assert done.returncode == 2 and "  input.orders: 3 is not of type 'array'" in done.stderr


def test_yaml_output_and_a_kept_database(tmp_path: Path) -> None:
    kept = tmp_path / "run.db"
    done = turbocat_run(
        EXAMPLES / "hello.yaml", "-i", '{"orders": [{"customer": "bo", "total": 101}]}',
        "--format", "yaml", "--no-progress", "--keep-db", kept, home=tmp_path / "home",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["decision"] == "none"
    assert kept.is_file() and done.stderr.strip() == f"database kept at {kept}"
