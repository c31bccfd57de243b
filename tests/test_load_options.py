"""LoadOptions: declared once, on every command that loads a model, refused by a backend that lacks one."""

from __future__ import annotations

import dataclasses

import pytest

from ort_bench.cli import build_parser
from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions
from ort_bench.scoring.backends import Backend, checked_backend, register_backend
from ort_bench.scoring.backends.base import BACKENDS
from ort_bench.scoring.evaluate import EvalConfig

LOADING_COMMANDS = (
    ["evaluate", "--model", "m", "--out", "o"],
    ["unlearn", "--method", "ga", "--model", "m", "--targets", "france", "--out", "o"],
    ["attack", "finetune", "--env", "math", "--model", "m", "--out", "o"],
    ["attack", "relearn", "--targets", "france", "--samples", "2", "--model", "m", "--out", "o"],
    ["audit", "some/submission"],
    ["demo"],
)


@pytest.mark.parametrize("argv", LOADING_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_loading_command_takes_every_load_option(argv):
    flags = ["--dtype", "bfloat16", "--device", "cpu", "--trust-remote-code", "--allow-pickle"]
    args = build_parser().parse_args(argv + flags)
    assert LoadOptions.from_args(args) == LoadOptions("bfloat16", "cpu", True, True)
    assert LoadOptions.from_args(build_parser().parse_args(argv)) == LoadOptions()


def test_eval_config_is_load_options_plus_engine():
    names = [f.name for f in dataclasses.fields(EvalConfig)]
    assert names[:len(LoadOptions.names())] == list(LoadOptions.names())
    assert EvalConfig(device="cpu", batch_size=16).engine_settings() == {}
    assert EvalConfig(batch_size=4).engine_settings() == {"batch_size": 4}


def test_hf_refuses_an_engine_setting_it_lacks():
    with pytest.raises(OrtBenchError, match="backend hf does not support --tensor-parallel-size"):
        checked_backend("hf", LoadOptions(), tensor_parallel_size=2)
    assert checked_backend("hf", LoadOptions(device="cpu", dtype="bfloat16"), batch_size=2).name == "hf"


def test_backend_refuses_a_load_option_it_does_not_declare():
    @register_backend("dtype-only-test")
    class DtypeOnly(Backend):
        load_options = ("dtype",)

        def __init__(self, model, options=None):
            self.model = model

        def generate(self, prompts, params):
            return ["" for _ in prompts]

        def loglikelihood(self, requests):
            return []

    try:
        with pytest.raises(OrtBenchError) as err:
            checked_backend("dtype-only-test", LoadOptions(device="cuda"))
        assert str(err.value) == ("backend dtype-only-test does not support --device (got 'cuda'); it supports "
                                  "--dtype")
        assert checked_backend("dtype-only-test", LoadOptions(dtype="float16")) is DtypeOnly
    finally:
        BACKENDS.pop("dtype-only-test")
