"""The peers turbocat is compared with: each runs in its own virtualenv (``bench/.venvs/NAME``)
as a script that writes its results as JSON (``venv.py`` installs and runs them)."""
