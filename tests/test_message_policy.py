"""How messages run (`mlip_attn.nn.policy`): the compiled op where it can be loaded or built,
else Python, with the reason said and a failed build remembered; one policy object with one
override point, shared by PaiNN and EGNN."""
import pytest
import torch

from mlip_attn.nn import policy
from mlip_attn.ops import build as ops_build
from mlip_attn.ops import library as ops_library


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not chosen yet (the choice is cached per process)."""
    monkeypatch.setitem(policy._compiled, "route", None)
    monkeypatch.setitem(policy._compiled, "why", "")
    monkeypatch.delenv("MLIP_ATTN_KERNELS", raising=False)
    monkeypatch.setattr(policy, "_policy", policy._from_environment())


def test_environment_variable_selects_python(fresh, monkeypatch):
    monkeypatch.setenv("MLIP_ATTN_KERNELS", "python")
    monkeypatch.setattr(policy, "_policy", policy._from_environment())   # a new process
    assert policy.current().route == "python"
    assert not policy.compiled_message_available()
    assert policy.describe() == "python: MLIP_ATTN_KERNELS=python"


def test_a_failed_build_is_said_and_not_retried(fresh, monkeypatch, tmp_path, capsys):
    tries = []

    def failing_build(build=True):
        tries.append(build)
        return False, "no C++ compiler found"
    monkeypatch.setattr(ops_library, "ops_registered", lambda: False)
    monkeypatch.setattr(ops_library, "try_load_ops", failing_build)
    monkeypatch.setattr(ops_build, "torch_library_dir", lambda: tmp_path)
    assert not policy.compiled_message_available()
    assert "compiling the fused CPU kernels" in capsys.readouterr().err
    assert "no C++ compiler found" in policy.describe() and len(tries) == 1
    assert (tmp_path / ops_build.FAILED_MARKER).read_text().endswith("no C++ compiler found")
    monkeypatch.setitem(policy._compiled, "route", None)          # a later process
    assert not policy.compiled_message_available()
    assert len(tries) == 1 and "to try again" in policy.describe()


def test_message_policy_block_overrides_and_restores(fresh, monkeypatch):
    monkeypatch.setitem(policy._compiled, "route", "compiled")
    assert policy.compiled_message_available()
    with policy.message_policy(route="python") as inside:
        assert inside.route == "python" and policy.current() is inside
        assert not policy.compiled_message_available()
        assert policy.describe() == "python: message_policy(route='python')"
    assert policy.compiled_message_available()


def test_policy_values_are_checked_and_chunks_scale_with_threads():
    with pytest.raises(ValueError, match="message route: one of"):
        policy.MessagePolicy(route="cuda")
    with pytest.raises(ValueError, match="edges_per_thread: a non-negative integer"):
        policy.MessagePolicy(edges_per_thread=-1)
    with pytest.raises(ValueError, match="at least one edge"):
        policy.MessagePolicy(script_chunk=0)
    with policy.message_policy(edges_per_thread=64) as p:
        assert p.chunk() == 64 * torch.get_num_threads()
