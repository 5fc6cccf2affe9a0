"""The README's Python examples run, as written, against the real server."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_examples() -> list[str]:
    text = README.read_text()
    section = text.split("## The Python client", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_python_examples_run(server):
    examples = python_examples()
    assert len(examples) == 2
    key = server.new_key()[1]
    env = {**os.environ, "CONVTREE_URL": server.base_url, "CONVTREE_KEY": key}
    outputs = []
    for example in examples:
        result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert "echo: And in July?" in outputs[0] and "404 message-not-found" in outputs[0]
    assert "conversation_created True" in outputs[1]
