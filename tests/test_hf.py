"""A model nobody here wrote, trained as it is: Hugging Face transformers' GPT-2 from a config.

Dict batches ``{"input_ids", "labels"}`` go to ``forward`` by name and the loss is the output's
``.loss`` (``[loss] target = "model"``). transformers is in the ``test`` extra; without it the
test is skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, load_ckpt, write_spec

from tuiloop.engine.events import Event, Finished, Validated
from tuiloop.runner.spec_run import run_spec

pytestmark = pytest.mark.slow  # transformers: seconds to import, a GPT-2 to train

pytest.importorskip("transformers", reason="transformers is not installed (it is in the [test] extra)")


def test_a_hugging_face_gpt2_trains_through_a_spec(workdir: Path) -> None:
    shutil.copy(FIXTURES / "hf_task.py", workdir / "hf_task.py")
    spec = write_spec(
        workdir,
        run={"epochs": 3},
        model={"target": "hf_task.py:gpt2", "in_features": None, "out_features": None, "hidden": None},
        data={"target": "hf_task.py:pydoc_bytes", "batch_size": 16},
        loss={"target": "model"},
        optimizer={"target": "AdamW", "lr": 3e-3},
        train={"gradient_clip_val": 1.0, "accumulate_grad_batches": 2},
    )
    events: list[Event] = []
    code, run_dir = run_spec(spec, sinks=[events.append])
    assert code == 0, [e for e in events if e.kind == "failed"]
    vals = [e.metrics["val_loss"] for e in events if isinstance(e, Validated)]
    assert vals[-1] < vals[0] < 5.6, vals  # it learns (a uniform guess over 256 bytes is 5.55)
    (f,) = [e for e in events if isinstance(e, Finished)]
    assert f.step == 3 * 8  # 15 batches of 16 per epoch, in groups of 2
    keys = load_ckpt(run_dir / "checkpoints" / "best.pt")["model_state_dict"]
    assert "transformer.h.1.attn.c_attn.weight" in keys and not any(
        k.startswith(("module.", "_orig_mod.")) for k in keys
    )
