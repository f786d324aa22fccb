"""The project's set-up promises: what a new user runs is what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"```bash\n{command}\n```" in readme


def test_backend_and_ui_stay_separate():
    for path in (ROOT / "diffllama").rglob("*.py"):
        text = path.read_text()
        assert "import gradio" not in text and "import plotly" not in text, path
    for path in [ROOT / "app.py", *(ROOT / "components").rglob("*.py")]:
        if path.exists():
            assert "import torch" not in path.read_text(), path


def test_readme_states_every_measure_as_the_app_does():
    from diffllama.analysis import measures

    assert measures.markdown() in (ROOT / "README.md").read_text()
