"""`genprop eval`: scores are right for known outputs, every method and task lands in the report, and the
report is written whole (JSON, Markdown, one contact sheet per example) or not at all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from genprop_cli.cli import app
from genprop_cli.config import Task
from genprop_cli.errors import InputError, OutputError
from genprop_cli.evaluation.runner import (
    REPORT_JSON,
    REPORT_MD,
    SHEETS,
    EvalRequest,
    MethodOutput,
    evaluate,
    run_eval,
    score,
)
from genprop_cli.toy import read_eval_set, write_eval_set

SIZE, FRAMES = 32, 8


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-set")
    write_eval_set(root, 1, seed=5, frames=FRAMES, size=SIZE)
    return root


@pytest.fixture(scope="module")
def examples(eval_set):
    return {e.task: e for e in read_eval_set(eval_set)}


def test_the_ground_truth_scores_perfectly(examples):
    for task, example in examples.items():
        scores = score(example, MethodOutput(example.target))
        assert math.isinf(scores["psnr"]) and scores["ssim"] == pytest.approx(1.0)
        if task is Task.REMOVE:
            assert scores["residual_object"] == pytest.approx(0.0, abs=1e-9)
            assert scores["residual_shadow"] == pytest.approx(0.0, abs=1e-9)
        if task is Task.TRACK:
            assert scores["marker_iou"] == pytest.approx(1.0) and scores["marker_JF"] == pytest.approx(1.0)


def test_returning_the_source_leaves_the_whole_object_and_shadow(examples):
    example = examples[Task.REMOVE]
    scores = score(example, MethodOutput(example.source))
    assert scores["residual_object"] == pytest.approx(1.0) and scores["residual_shadow"] == pytest.approx(1.0)
    assert math.isinf(scores["psnr_m"])  # nothing outside the edit region changed


def test_several_outputs_of_one_method_are_scored_as_separate_methods(examples):
    def two_outputs(example):
        return {"": MethodOutput(example.target), "+src": MethodOutput(example.source)}

    report = evaluate(list(examples.values()), {"oracle": two_outputs, "mask_then_inpaint": lambda e: MethodOutput(e.source)})
    assert report.methods == ["oracle", "oracle+src", "mask_then_inpaint"]
    summary = report.summary()
    assert set(summary) == {t.value for t in Task}
    assert "mask_then_inpaint" in summary["remove"] and "mask_then_inpaint" not in summary["edit"]
    assert summary["edit"]["oracle"]["psnr"] == 100.0  # infinite PSNR counts as 100 dB in means
    assert summary["remove"]["oracle+src"]["residual_object"] == pytest.approx(1.0)
    markdown = report.to_markdown()
    assert "### remove" in markdown and "| oracle+src |" in markdown


def test_run_eval_writes_report_sheets_and_json(eval_set, tmp_path):
    out = tmp_path / "report"
    request = EvalRequest(eval_set=eval_set, output=out, model="random-tiny", steps=1, tasks=(Task.REMOVE, Task.TRACK), device="cpu")
    report = run_eval(request)
    assert sorted(p.name for p in (out / SHEETS).iterdir()) == ["remove-000.png", "track-000.png"]
    document = json.loads((out / REPORT_JSON).read_text())
    assert document["methods"] == ["genprop", "genprop+composite", "flow_warp", "mask_then_inpaint"]
    assert {r["task"] for r in document["rows"]} == {"remove", "track"}
    assert "| genprop+composite |" in (out / REPORT_MD).read_text()
    sheet = Image.open(out / SHEETS / "remove-000.png")
    # columns: source, edited, 4 outputs, ground truth, mask; 3 px gaps
    assert sheet.size[0] == 8 * SIZE + 7 * 3
    assert report.summary()["track"]["genprop"]["mpd_JF"] >= 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
    with pytest.raises(OutputError, match="exists"):
        run_eval(request)


@pytest.mark.parametrize(("model", "other"), [("toy", "no-preserve"), ("random-tiny", "preserve")])
def test_eval_with_preserve_also_scores_the_sampling_the_variant_does_not_default_to(eval_set, tmp_path, model, other):
    # toy samples with --preserve by default (weights.toml), random-tiny without.
    request = EvalRequest(eval_set=eval_set, output=tmp_path / "r", model=model, steps=2, tasks=(Task.EDIT,),
                          device="cpu", baselines=False, preserve=True)  # fmt: skip
    summary = run_eval(request).summary()["edit"]
    assert list(summary) == ["genprop", "genprop+composite", f"genprop+{other}", f"genprop+{other}+composite"]
    if model == "toy":  # random-tiny's untrained MPD marks nearly everything, so preserve changes little there
        assert summary[f"genprop+{other}"]["psnr"] != summary["genprop"]["psnr"]


def test_run_eval_refuses_a_folder_that_is_not_an_eval_set(tmp_path):
    with pytest.raises(InputError, match="not an evaluation set"):
        run_eval(EvalRequest(eval_set=tmp_path, output=tmp_path / "r", baselines=True, variant_adapter=False))
    assert not (tmp_path / "r").exists()


def test_eval_cli_end_to_end_and_errors(eval_set, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r"
    result = runner.invoke(app, ["eval", str(eval_set), "-o", str(out), "--no-variant-adapter", "--task", "edit",
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert list(summary) == ["edit"] and list(summary["edit"]) == ["flow_warp"]
    again = runner.invoke(app, ["eval", str(eval_set), "-o", str(out), "--no-variant-adapter", "-q"])
    assert again.exit_code == 4 and "exists" in again.stderr
    missing = runner.invoke(app, ["eval", str(tmp_path / "nope"), "-o", str(tmp_path / "r2"), "-q"])
    assert missing.exit_code == 3 and "not an evaluation set" in missing.stderr
    bad = runner.invoke(app, ["eval", str(eval_set), "-o", str(tmp_path / "r3"), "--adapter", "x=", "-q"])
    assert bad.exit_code != 0 and "LABEL=PATH" in bad.stderr
    assert "Traceback" not in bad.output


def test_toy_commands_write_datasets_and_refuse_non_empty_folders(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["toy", "dataset", str(tmp_path / "d"), "--clips", "2", "--frames", "4", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d" / "JPEGImages").rglob("*.jpg"))) == 8
    result = runner.invoke(app, ["toy", "eval-set", str(tmp_path / "e"), "--per-task", "1", "--frames", "4", "--size", "32"])
    assert result.exit_code == 0, result.output
    assert len(read_eval_set(tmp_path / "e")) == 4
    again = runner.invoke(app, ["toy", "dataset", str(tmp_path / "d")])
    assert again.exit_code != 0 and "not empty" in again.stderr


def test_clip_scores_come_from_the_given_clip_model(eval_set, tmp_path):
    from test_metrics import tiny_clip, tiny_tokenizer

    clip_dir = tmp_path / "clip"
    tiny_clip().save_pretrained(clip_dir)
    tiny_tokenizer().save_pretrained(clip_dir)
    result = CliRunner().invoke(app, ["eval", str(eval_set), "-o", str(tmp_path / "r"), "--no-variant-adapter",
                                      "--task", "insert", "--clip-model", str(clip_dir), "--json", "-q"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["summary"]["insert"]["flow_warp"]
    assert -1 <= scores["clip_t"] <= 1 and 0 < scores["clip_i"] <= 1
    report = json.loads((tmp_path / "r" / REPORT_JSON).read_text())
    assert not any("CLIP" in note for note in report["notes"])


def test_genprop_method_samples_with_the_preserve_options_it_is_given(examples):
    from genprop_cli.evaluation.runner import genprop_method

    class Recording:
        """Stands in for a loaded variant: records the options, returns the source with an empty mask."""

        def __init__(self) -> None:
            self.seen = []

        def propagate(self, clip, options):
            from types import SimpleNamespace

            self.seen.append(options)
            return [SimpleNamespace(rgb=f, mask=f[..., 0] * 0) for f in examples[Task.EDIT].source]

    model = Recording()
    outputs = genprop_method(model, preserve=True, preserve_threshold=0.3)(examples[Task.EDIT])
    assert (model.seen[0].preserve, model.seen[0].preserve_threshold) == (True, 0.3)
    assert not outputs[""].masks.any()
    genprop_method(model)(examples[Task.EDIT])
    assert (model.seen[1].preserve, model.seen[1].preserve_threshold) == (None, None)  # the variant's defaults
