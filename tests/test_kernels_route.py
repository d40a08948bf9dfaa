"""How the eager PaiNN message picks its route (`mlip_attn.nn.kernels`): the compiled op where it
can be loaded or built, else Python, with the reason said and a failed build remembered."""
import pytest

from mlip_attn.lammps import ops as compiled_ops
from mlip_attn.lammps import torch_build
from mlip_attn.nn import kernels


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not chosen yet (the choice is cached per process)."""
    monkeypatch.setitem(kernels._state, "route", None)
    monkeypatch.setitem(kernels._state, "why", "")
    monkeypatch.setitem(kernels._state, "forced_python", False)
    monkeypatch.delenv("MLIP_ATTN_KERNELS", raising=False)


def test_environment_variable_selects_python(fresh, monkeypatch):
    monkeypatch.setenv("MLIP_ATTN_KERNELS", "python")
    assert not kernels.compiled_message_available()
    assert kernels.describe() == "python: MLIP_ATTN_KERNELS=python"


def test_a_failed_build_is_said_and_not_retried(fresh, monkeypatch, tmp_path, capsys):
    tries = []

    def failing_build(build=True):
        tries.append(build)
        return False, "no C++ compiler found"
    monkeypatch.setattr(compiled_ops, "ops_registered", lambda: False)
    monkeypatch.setattr(compiled_ops, "try_load_ops", failing_build)
    monkeypatch.setattr(torch_build, "torch_library_dir", lambda: tmp_path)
    assert not kernels.compiled_message_available()
    assert "compiling the fused CPU kernels" in capsys.readouterr().err
    assert "no C++ compiler found" in kernels.describe() and len(tries) == 1
    assert (tmp_path / torch_build.FAILED_MARKER).read_text().endswith("no C++ compiler found")
    monkeypatch.setitem(kernels._state, "route", None)          # a later process
    assert not kernels.compiled_message_available()
    assert len(tries) == 1 and "to try again" in kernels.describe()


def test_python_message_block_overrides_and_restores(fresh, monkeypatch):
    monkeypatch.setitem(kernels._state, "route", "compiled")
    assert kernels.compiled_message_available()
    with kernels.python_message():
        assert not kernels.compiled_message_available()
        assert kernels.describe().startswith("python")
    assert kernels.compiled_message_available()
