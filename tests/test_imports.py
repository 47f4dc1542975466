"""Dependencies point one way (data -> sampling -> model -> train -> decode -> bench); only cli sees all."""

import subprocess
import sys

import pytest

CHECK = """
import sys, {module}
loaded = sorted(m for m in sys.modules if m.startswith("fastaed.") and not m.startswith({allowed!r}))
print(",".join(loaded))
"""


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("fastaed.model", ("fastaed.model",)),  # model/ imports only torch
        # sampling is usable on plain arrays, in anyone's training loop
        ("fastaed.sampling", ("fastaed.sampling", "fastaed.constants", "fastaed.util")),
        ("fastaed.data.dataset", ("fastaed.data", "fastaed.constants")),
    ],
)
def test_module_imports_nothing_downstream(module, allowed):
    code = CHECK.format(module=module, allowed=allowed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"{module} pulled in {out.strip()}"


def test_model_package_needs_no_third_party_besides_torch():
    forbidden = ("sentencepiece", "soundfile", "matplotlib")
    code = f"import sys, fastaed.model; print(any(m in sys.modules for m in {forbidden!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
