"""The fused C kernel of the S2-grid Gaunt product (molgen/nn/gaunt/_kernel.c) against the torch path, and how
it is chosen, built and cached (``MOLGEN_GAUNT_KERNEL``, ``MOLGEN_CACHE``, ``CC``)."""
from __future__ import annotations

import pytest
import torch

from molgen.errors import MolgenError
from molgen.nn.gaunt import _cpu, gaunt_tensor_product

needs_compiler = pytest.mark.skipif(_cpu._compiler() is None, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _value_and_grads(x1, x2, lmax_out, weight, kernel, monkeypatch):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", kernel)
    out = gaunt_tensor_product(x1, x2, lmax_out, method="grid")
    grads = torch.autograd.grad((out * weight).sum(), [x for x in (x1, x2) if x.requires_grad])
    return out, grads


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("l1,l2,lmax_out,shape1,shape2", [
    (0, 0, 0, (3,), (3,)),
    (1, 1, 2, (37,), (37,)),  # 37 pairs: two full float32 tiles and a partial one
    (2, 3, 5, (5, 4), (5, 1)),  # x2 broadcast over the channel axis
    (3, 2, 2, (2, 7), (2, 7)),  # truncated output
    (6, 6, 12, (9, 5), (9, 5)),
    (8, 4, 6, (1, 3), (17, 3)),  # x1 broadcast over the batch axis
    (2, 2, 4, (0, 3), (0, 3)),  # an empty batch
])
def test_c_kernel_equals_torch_path(monkeypatch, dtype, l1, l2, lmax_out, shape1, shape2):
    x1 = torch.randn(*shape1, (l1 + 1) ** 2, dtype=dtype, requires_grad=True)
    x2 = torch.randn(*shape2, (l2 + 1) ** 2, dtype=dtype, requires_grad=True)
    batch = torch.broadcast_shapes(shape1, shape2)
    weight = torch.randn(*batch, (lmax_out + 1) ** 2, dtype=dtype)
    ref, ref_grads = _value_and_grads(x1, x2, lmax_out, weight, "torch", monkeypatch)
    out, grads = _value_and_grads(x1, x2, lmax_out, weight, "c", monkeypatch)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, ref, **tol)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, **tol)


@needs_compiler
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_c_kernel_gradcheck_one_input(monkeypatch, need):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    x1 = torch.randn(19, 9, dtype=torch.float64, requires_grad=need[0])
    x2 = torch.randn(19, 16, dtype=torch.float64, requires_grad=need[1])
    assert torch.autograd.gradcheck(lambda a, b: gaunt_tensor_product(a, b, 4), (x1, x2))


@needs_compiler
def test_c_kernel_second_order_falls_back_to_torch_ops(monkeypatch):
    """create_graph=True: the first backward is built from differentiable torch ops, so double backward works."""
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    x1 = torch.randn(4, 2, 9, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(4, 1, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: gaunt_tensor_product(a, b, 3), (x1, x2))


@needs_compiler
def test_c_kernel_result_does_not_depend_on_threads(monkeypatch):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    x1 = torch.randn(300, 25, requires_grad=True)
    x2 = torch.randn(300, 25, requires_grad=True)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = gaunt_tensor_product(x1, x2)
            results.append((out, *torch.autograd.grad(out.square().sum(), (x1, x2))))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)  # each pair is computed alone, in the same order, whatever the split


def test_kernel_mode_torch_never_builds(monkeypatch):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "torch")
    monkeypatch.setattr(_cpu, "library", lambda dtype: pytest.fail("the C kernel was requested"))
    x1, x2 = torch.randn(3, 4), torch.randn(3, 9)
    assert gaunt_tensor_product(x1, x2).shape == (3, 16)


def test_bad_kernel_mode_is_one_line(monkeypatch):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "fast")
    with pytest.raises(MolgenError, match="MOLGEN_GAUNT_KERNEL must be auto, torch or c, got 'fast'"):
        gaunt_tensor_product(torch.randn(2, 4), torch.randn(2, 4))


@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
    """An empty kernel cache and no library loaded in this process (restored afterwards)."""
    monkeypatch.setenv("MOLGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_cpu, "_libs", {})
    monkeypatch.setattr(_cpu, "_failed", None)
    return tmp_path / "cache" / "kernels"


def test_without_compiler_auto_warns_once_and_uses_torch_path(monkeypatch, fresh_kernel_state):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "auto")
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setattr(_cpu.shutil, "which", lambda name: None)
    x1, x2 = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="C kernel unavailable .*no C compiler found"):
        out = gaunt_tensor_product(x1, x2)
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "torch")
    torch.testing.assert_close(out, gaunt_tensor_product(x1, x2))
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "auto")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the failure is remembered: no second warning, no second build
        gaunt_tensor_product(x1, x2)
    assert not fresh_kernel_state.exists() or not any(fresh_kernel_state.iterdir())


def test_without_compiler_mode_c_is_an_error(monkeypatch, fresh_kernel_state):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    monkeypatch.setattr(_cpu.shutil, "which", lambda name: None)
    with pytest.raises(MolgenError, match="MOLGEN_GAUNT_KERNEL=c but the C kernel could not be built: no C comp"):
        gaunt_tensor_product(torch.randn(2, 4), torch.randn(2, 4))


@needs_compiler
def test_build_is_cached_per_source_and_reused(monkeypatch, fresh_kernel_state):
    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    first = _cpu._build(torch.float32)
    assert first.parent == fresh_kernel_state and first.exists()
    mtime = first.stat().st_mtime_ns
    calls = []
    real_run = _cpu.subprocess.run
    monkeypatch.setattr(_cpu.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    assert _cpu._build(torch.float32) == first and first.stat().st_mtime_ns == mtime
    assert calls == []  # found in the cache, not compiled again
    assert _cpu._build(torch.float64) != first  # one library per dtype
    assert calls  # built (compile and link)
    assert sorted(p.suffix for p in fresh_kernel_state.iterdir()) == [".so", ".so"]  # no temporary files left


@needs_compiler
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_c_kernel_threads_work_in_a_forked_child(monkeypatch):
    """Without OpenMP, the thread pool made before a fork is not reused in the child (its threads do not exist
    there).

    The child calls only the kernel (torch's own OpenMP pool is not fork-safe, so no torch op runs there) and
    writes into shared memory; without a fresh pool it would wait forever for the parent's threads.
    """
    import os
    import time

    from molgen.nn.gaunt._grid import _tables

    monkeypatch.setenv("MOLGEN_GAUNT_KERNEL", "c")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x1, x2 = torch.randn(400, 16), torch.randn(400, 16)
        expected = gaunt_tensor_product(x1, x2)  # creates the pool in this process
        t = _tables(3, 3, 6, torch.float32, torch.device("cpu"))
        out = torch.zeros_like(expected).share_memory_()
        lib, (plan, _) = _cpu.library(torch.float32), _cpu.plan(t)
        monkeypatch.setattr(lib, "openmp", False)  # the Python thread pool (libraries built without OpenMP)
        gaunt_tensor_product(x1, x2)  # creates the pool in this process
        pid = os.fork()
        if pid == 0:  # child: the kernel over all pairs on 2 threads, then leave without any cleanup
            try:
                _cpu._run(lib, "gaunt_forward", plan, 400, _cpu.TILE[torch.float32], x1, x2, out)
                os._exit(0)
            except BaseException:
                os._exit(1)
        deadline = time.monotonic() + 60
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if status[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the kernel hung in a forked child")
    finally:
        torch.set_num_threads(before)
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert torch.equal(out, expected)
