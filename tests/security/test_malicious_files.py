"""Every loader of a file, given a file that would run ``touch <marker>`` if trusted: refused with one line, and the
marker never appears (issue #22: a weights file naming ``os.system`` ran it in generate, sample and dream)."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest
import torch

from prefalign.checkpoint import CheckpointError, UnsafeFileError, save_weights
from prefalign.cli import main
from prefalign.models import SeedCNN
from prefalign.models.loading import load_model
from tests.conftest import CONFIGS, REPO, SYNTHETIC_ARGS
from tests.security.evil import EVIL_FILES, Touch, class_path_file

SEED_DPO = [
    "--config",
    str(CONFIGS / "seed_dpo.yaml"),
    *SYNTHETIC_ARGS,
    "--model.backbone.channels=4",
    "--trainer.max_epochs=1",
    "--model.log_figures=false",
]
CODE = "pickled objects"  # the message of every pickle-borne payload
UNKNOWN = "not a known architecture"

# (loader, argv given (evil file, a valid reference, tmp folder), message by kind of evil file)
COMMANDS = {
    "generate": lambda evil, ref, d: ["generate", "--ckpt", str(evil), "--prompt", "the", "--out", str(d / "o.jsonl")],
    "sample": lambda evil, ref, d: ["sample", "--ckpt", str(evil), "--out", str(d / "s.pt")],
    "dream": lambda evil, ref, d: ["dream", "--ckpt", str(evil), "--out_dir", str(d / "dreams")],
    "dream --compare_ckpt": lambda evil, ref, d: [
        "dream",
        "--ckpt",
        str(ref),
        "--compare_ckpt",
        str(evil),
        "--out_dir",
        str(d / "dreams"),
    ],
    "fit reference": lambda evil, ref, d: ["fit", *SEED_DPO, f"--model.reference_ckpt={evil}"],
    "predict reference": lambda evil, ref, d: ["predict", *SEED_DPO, f"--model.reference_ckpt={evil}"],
    "test --ckpt_path": lambda evil, ref, d: [
        "test",
        *SEED_DPO,
        f"--model.reference_ckpt={ref}",
        f"--ckpt_path={evil}",
    ],
    "validate --ckpt_path": lambda evil, ref, d: [
        "validate",
        *SEED_DPO,
        f"--model.reference_ckpt={ref}",
        f"--ckpt_path={evil}",
    ],
}
MESSAGES = {"class_path": UNKNOWN, "lora_base": UNKNOWN, "plain_pickle": CODE, "torch_pickle": CODE}
WEIGHTS_NOT_CKPT = "is a prefalign weights file, not a Lightning checkpoint"


@pytest.mark.parametrize("kind", sorted(EVIL_FILES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_refuses_a_malicious_file_in_one_line_and_runs_nothing(
    command, kind, in_tmp, tiny_reference, capsys, monkeypatch
):
    monkeypatch.delenv("PREFALIGN_DEBUG")
    marker = in_tmp / "PWNED"
    evil = EVIL_FILES[kind](in_tmp / "evil.pt", marker)
    code = main(COMMANDS[command](evil, tiny_reference, in_tmp))
    err = capsys.readouterr().err
    expected = MESSAGES[kind]
    if "--ckpt_path" in command and kind in ("class_path", "lora_base"):
        expected = WEIGHTS_NOT_CKPT
    elif command in ("fit reference", "predict reference") and kind == "lora_base":
        expected = "but the configured backbone is"  # compared with the config's class before anything is built
    assert not marker.exists(), "the file's code ran"
    assert code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], err
    assert not (in_tmp / "o.jsonl").exists() and not (in_tmp / "s.pt").exists() and not (in_tmp / "dreams").exists()


def test_the_issue_file_through_the_real_entry_point(tmp_path):
    """`python -m prefalign generate` as a person runs it: one line on stderr, exit 2, no PWNED."""
    class_path_file(tmp_path / "evil.pt", tmp_path / "PWNED")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PREFALIGN_WANDB": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "prefalign", "generate", "--ckpt", "evil.pt", "--prompt", "the", "--out", "x.jsonl"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and UNKNOWN in done.stderr and "evil.pt" in done.stderr
    assert not (tmp_path / "PWNED").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt"]


@pytest.mark.parametrize("kind", sorted(EVIL_FILES))
def test_library_loaders_refuse_it(kind, tmp_path):
    """The loaders behind the commands and the fit-time mining: load_model, a reward model, a LoRA's base."""
    from prefalign.models import LoRA
    from prefalign.objectives.rewards import RewardModelConfidence

    marker = tmp_path / "PWNED"
    evil = EVIL_FILES[kind](tmp_path / "evil.pt", marker)
    with pytest.raises(UnsafeFileError, match=MESSAGES[kind]):
        load_model(evil)
    with pytest.raises(UnsafeFileError, match=MESSAGES[kind]):
        _ = RewardModelConfidence(str(evil)).reward_model
    with pytest.raises(UnsafeFileError, match=UNKNOWN):
        LoRA(base={"class_path": "os.system", "init_args": {"command": f"touch {marker}"}})
    assert not marker.exists()


@pytest.mark.parametrize("kind", sorted(EVIL_FILES))
def test_a_pair_cache_holding_code_is_refused_not_rebuilt_over(kind, tmp_path):
    from prefalign.data.pair_cache import load_or_build

    marker = tmp_path / "PWNED"
    cache = EVIL_FILES[kind](tmp_path / "pairs-abc.pt", marker)
    before = cache.read_bytes()
    if kind in ("class_path", "lora_base"):
        # A cache is plain tensors and is never instantiated: a class path inside it is just a string, and the
        # fingerprint decides. It is rebuilt (the file was no cache of this run), and nothing runs.
        assert load_or_build(cache, "abc", lambda: {"x": torch.ones(1)})["x"].tolist() == [1.0]
    else:
        with pytest.raises(UnsafeFileError, match=f"refusing to load mined pairs cache {cache}.*{CODE}"):
            load_or_build(cache, "abc", lambda: pytest.fail("built over a file holding code"))
        assert cache.read_bytes() == before
    assert not marker.exists()


def test_an_unreadable_pair_cache_is_still_rebuilt(tmp_path):
    from prefalign.data.pair_cache import load_or_build

    cache = tmp_path / "pairs.pt"
    cache.write_bytes(b"half a file")
    assert load_or_build(cache, "abc", lambda: {"x": torch.ones(1)})["fingerprint"] == "abc"


class _Data:
    """What ensure_judge reads of a data module: a fingerprint and a test split."""

    splits: ClassVar = {"test": {"x_clean": torch.zeros(2, 1, 28, 28), "y": torch.zeros(2, dtype=torch.long)}}

    def data_fingerprint(self):
        return {"source": "test"}


@pytest.mark.parametrize("kind", sorted(EVIL_FILES))
def test_a_cached_judge_holding_code_is_refused(kind, tmp_path):
    from prefalign.digests import fingerprint
    from prefalign.families.denoiser.judge import ensure_judge, judge_path

    marker = tmp_path / "PWNED"
    key = {"arch": "lenet", "seed": 0, "data": _Data().data_fingerprint(), "format": 1}
    path = judge_path(tmp_path, "lenet", 0, key)
    EVIL_FILES[kind](path, marker)
    if kind in (
        "class_path",
        "lora_base",
    ):  # the judge's own fingerprint: only the class stands between the file and os.system
        payload = torch.load(path, weights_only=True)
        payload["meta"].update(fingerprint=fingerprint(key), test_accuracy=1.0)
        torch.save(payload, path)
    with pytest.raises(UnsafeFileError, match=MESSAGES[kind]):
        ensure_judge("lenet", 0, _Data(), tmp_path)
    assert not marker.exists()


def test_init_args_must_be_plain_data(tmp_path):
    path = save_weights(SeedCNN(channels=4), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["init_args"]["channels"] = torch.tensor(4)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="init_args of prefalign.models.SeedCNN are not plain data"):
        load_model(path)


def test_registered_and_config_named_classes_load(tmp_path):
    from prefalign.core.module import AlignmentModule
    from prefalign.models.registry import allowed_architectures, register_architecture

    class Mine(SeedCNN):
        pass

    path = save_weights(Mine(channels=4), tmp_path / "mine.pt")
    with pytest.raises(UnsafeFileError, match=UNKNOWN):
        load_model(path)
    register_architecture(Mine)
    assert type(load_model(path)) is Mine

    class Named(SeedCNN):
        pass

    AlignmentModule(backbone=Named(channels=4))  # a config naming the class as model.backbone
    assert type(load_model(save_weights(Named(channels=4), tmp_path / "named.pt"))) is Named
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_architecture(print)
    assert {
        "prefalign.models.SeedCNN",
        "prefalign.models.LoRA",
        "prefalign.models.ConditionalUNet",
        "prefalign.models.TinyTransformer",
    } <= set(allowed_architectures())


def test_a_plain_pickle_without_code_is_named_as_such(tmp_path):
    import pickle

    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"state_dict": {}}, protocol=4))
    with pytest.raises(CheckpointError, match="is a plain Python pickle, not a PyTorch file"):
        load_model(path)


def test_lightning_checkpoint_with_hyperparameters_is_refused(in_tmp, tiny_reference, capsys, monkeypatch):
    """LightningCLI reads --ckpt_path's hyper_parameters into the config: a file could choose classes to build."""
    monkeypatch.delenv("PREFALIGN_DEBUG")
    ckpt = in_tmp / "x.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.0.0",
            "state_dict": {},
            "epoch": 0,
            "global_step": 0,
            "hyper_parameters": {"backbone": {"class_path": "torch.nn.Identity"}},
        },
        ckpt,
    )
    assert main(["test", *SEED_DPO, f"--model.reference_ckpt={tiny_reference}", f"--ckpt_path={ckpt}"]) == 2
    assert "carries hyper_parameters naming classes to build" in capsys.readouterr().err


def test_touch_payload_really_runs_when_trusted(tmp_path):
    """The marker is a working detector: unpickling the payload without weights_only creates it."""
    import pickle

    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Touch(marker)))
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_a_plain_pickle_of_any_protocol_is_named_as_code(protocol, tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps({"hook": Touch(marker)}, protocol=protocol))
    with pytest.raises(
        UnsafeFileError, match=r"pickled objects, code that would run when unpickled \((os|posix)\.system\)"
    ):
        load_model(path)
    assert not marker.exists()
