"""onnxruntime-CUDA rows time what the torch and TensorRT CUDA rows time: the model call enqueued on
the device, logits left there, on the runner's own device (checked with a recording session)."""
from __future__ import annotations

import sys
import types

import torch

from lfcc_deploy.bench.backends import Runner
from lfcc_deploy.bench.ort_backend import bound_cuda_run
from lfcc_deploy.bench.run import what_is_timed


class Arg:
    def __init__(self, name, shape):
        self.name, self.shape = name, shape


class Binding:
    def __init__(self, log):
        self.log = log

    def bind_input(self, *a):
        self.log.append(("input", a))

    def bind_output(self, *a):
        self.log.append(("output", a))

    def copy_outputs_to_cpu(self):
        raise AssertionError("a device-to-host copy inside the timed call")


class Session:
    def __init__(self):
        self.log, self.options = [], None

    def get_inputs(self):
        return [Arg("input", ["batch", 1, 8, 8])]

    def get_outputs(self):
        return [Arg("logits", ["batch", 10])]

    def io_binding(self):
        return Binding(self.log)

    def run_with_iobinding(self, binding, options):
        self.options = options


class RunOptions:
    def __init__(self):
        self.entries = {}

    def add_run_config_entry(self, k, v):
        self.entries[k] = v


def test_cuda_call_binds_device_tensors_of_its_own_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(RunOptions=RunOptions))
    session = Session()
    run = bound_cuda_run(session, device_id=1)
    x = torch.zeros(3, 1, 8, 8)  # the device does not matter to the binding logic
    logits = run(x)
    (_, inp), (_, out) = session.log
    assert inp[1:3] == ("cuda", 1) and inp[4] == (3, 1, 8, 8) and inp[5] == x.data_ptr()
    assert out[1:3] == ("cuda", 1) and out[4] == (3, 10) and out[5] == logits.data_ptr()
    assert logits.device == x.device and logits.shape == (3, 10)
    assert session.options.entries == {"disable_synchronize_execution_providers": "1"}


def test_rows_say_what_was_timed():
    cuda = Runner(lambda x: x, torch.device("cpu"), cuda_events=True)
    host = Runner(lambda x: x, torch.device("cpu"))
    assert "CUDA events" in what_is_timed(cuda, "compute") and "host" in what_is_timed(host, "compute")
    assert what_is_timed(cuda, "e2e") == what_is_timed(host, "e2e")
