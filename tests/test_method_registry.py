"""How methods plug in: a module under `ort_bench/unlearning/methods/` registers its method without
being listed anywhere, a method's own data (`Method.own_data`) is what `unlearn` hands it and writes
to the card, and the code above the methods (unlearn, demo, the experiment script) branches on no
method's name."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
import sys
import textwrap
from pathlib import Path

import pytest

from ort_bench.unlearning import methods
from ort_bench.unlearning.methods import METHODS, Method, in_table_order, make_config

ROOT = Path(__file__).parents[1]

EXAMPLE = '''
"""A method for the tests only: edits nothing, reports the data it was given."""

from dataclasses import dataclass

from ort_bench.unlearning.methods.base import Method, MethodConfig, OwnData, hp, register_method


@dataclass
class EchoConfig(MethodConfig):
    cli_prefix = "echo"
    loud: bool = hp(False, "nothing")


@register_method
class Echo(Method):
    name = "echo_test"
    summary = "edits nothing"
    config_class = EchoConfig
    trains = False

    def own_data(self, source):
        return OwnData(data={"targets": list(source.targets)}, card={"echo": {"n_targets": len(source.targets)}})

    def apply(self, model, tokenizer, data, progress=True):
        import torch

        with torch.no_grad():  # a visible edit, so that the checkpoint differs from the original
            next(model.parameters()).add_(1e-3)
        return {"got": data.method_data}
'''


@pytest.fixture()
def example_method(tmp_path, monkeypatch):
    """`echo_test`, written as a new module file in a folder the methods package scans."""
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "echo_test.py").write_text(textwrap.dedent(EXAMPLE), encoding="utf-8")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(folder)])
    before = dict(METHODS)
    methods._register_all()
    yield METHODS["echo_test"]
    METHODS.clear()
    METHODS.update(before)
    sys.modules.pop("ort_bench.unlearning.methods.echo_test", None)


def test_every_method_module_registers_itself():
    found = {}
    for info in pkgutil.iter_modules(methods.__path__):
        module = importlib.import_module(f"{methods.__name__}.{info.name}")
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Method) and obj.__module__ == module.__name__ and obj.name:
                found[obj.name] = obj
    assert found and found == METHODS
    assert list(METHODS) == sorted(METHODS)  # name order, whatever order the modules import in
    assert in_table_order() == ["ga", "graddiff", "npo", "simnpo", "rmu", "ilu", "rocr"]


def test_a_new_module_is_found_without_editing_a_list(example_method):
    assert list(METHODS) == sorted(METHODS) and "echo_test" in METHODS
    assert make_config("echo_test", {"loud": True}).loud is True
    assert make_config("echo_test", max_steps=5, seed=1) == make_config("echo_test")  # training-free
    from ort_bench.unlearning.methods import add_method_arguments, config_from_args

    p = add_method_arguments(argparse.ArgumentParser())
    assert config_from_args(p.parse_args(["--method", "echo_test", "--echo-loud"])).loud is True


def test_unlearn_hands_a_method_its_own_data_and_cards_it(example_method, tiny_llama_dir, tmp_path):
    from ort_bench.kb.facts import load_kb
    from ort_bench.kb.templates import load_templates
    from ort_bench.unlearning.unlearn import unlearn

    fix = ROOT / "tests" / "fixtures"
    card = unlearn("echo_test", str(tiny_llama_dir), ["france"], tmp_path / "out", max_steps=3, progress=False,
                   kb=load_kb(fix / "kb"), templates=load_templates(fix / "templates"))
    assert card["stats"]["got"] == {"targets": ["france"]}
    on_disk = json.loads((tmp_path / "out" / "unlearn_card.json").read_text())
    assert on_disk["data"]["echo"] == {"n_targets": 1} and on_disk["hyperparameters"] == {"loud": False}


def test_rocr_and_ilu_data_come_from_their_own_hooks():
    from ort_bench.kb.facts import load_kb
    from ort_bench.kb.templates import load_templates
    from ort_bench.unlearning.methods.rocr import ROCRData
    from ort_bench.unlearning.unlearn import build_data

    fix = ROOT / "tests" / "fixtures"
    kb, templates = load_kb(fix / "kb"), load_templates(fix / "templates")
    plain, plain_desc = build_data(kb, templates, ["france"], "qa")
    rocr_cls, ilu_cls = METHODS["rocr"], METHODS["ilu"]
    rocr, rocr_desc = build_data(kb, templates, ["france"], "qa", rocr_cls(make_config("rocr")))
    assert plain.method_data is None and isinstance(rocr.method_data, ROCRData)
    assert rocr.method_data.subjects["france"][0] == kb.targets["france"].name
    assert rocr_desc["rocr"]["subjects"] == rocr.method_data.subjects
    assert set(rocr_desc["seen_fact_ids"]) >= set(plain_desc["seen_fact_ids"])  # its corpus: utility probes
    _, ilu_desc = build_data(kb, templates, ["france"], "qa", ilu_cls(make_config("ilu", {"ilu_envs": ["sentiment"]})))
    assert set(ilu_desc["ilu_envs"]) == {"sentiment"} and ilu_desc["seen_fact_ids"] == plain_desc["seen_fact_ids"]


@pytest.mark.parametrize("path", ["ort_bench/unlearning/unlearn.py", "ort_bench/demo.py", "scripts/experiment.py",
                                  "ort_bench/unlearning/methods/__init__.py"])
def test_no_branch_on_a_method_name_above_the_methods(path):
    """Comparisons with a method's name, or probes of a method's config fields, belong in the method."""
    text = (ROOT / path).read_text(encoding="utf-8")
    names = "|".join(map(re.escape, METHODS))
    assert not re.findall(rf"""(?:[=!]=|\bin)\s*[(\[{{]?\s*["'](?:{names})["']""", text)
    assert not re.findall(r"hasattr\(cfg|isinstance\(cfg, \w+\.\w+Config\)", text)


def test_experiment_configs_are_the_documented_ones():
    """scripts/experiment.py's defaults: the shared budget for every method that trains, RMU at the
    setting docs/RESULTS.md found to act within it (lr 1e-3, c 300, alpha 12), ILU over NPO, ROCR as
    published."""
    spec = importlib.util.spec_from_file_location("experiment_script", ROOT / "scripts" / "experiment.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = argparse.Namespace(hp=list(script.DEFAULT_HP), steps=30, lr=5e-5)
    cfgs = {m: script.method_config(m, args) for m in METHODS}
    assert cfgs["rocr"] == make_config("rocr")
    assert cfgs["rmu"] == make_config("rmu", {"steering_coeff": 300, "alpha": 12, "lr": 1e-3}, max_steps=30)
    assert cfgs["ilu"] == make_config("ilu", {"base_method": "npo"}, max_steps=30, lr=5e-5)
    assert cfgs["simnpo"] == make_config("simnpo", max_steps=30, lr=5e-5)
    args.hp += ["rmu.steering_coeff=100", "rmu.lr=5e-5"]  # a later value wins
    assert script.method_config("rmu", args) == make_config("rmu", {"steering_coeff": 100, "alpha": 12, "lr": 5e-5},
                                                           max_steps=30)
    with pytest.raises(SystemExit):
        script.parse_hp(["nomethod.x=1"])
