"""Reference log-probs are computed once and cached on disk, keyed by the model files, the data and the truncation."""

from __future__ import annotations

import torch

from prefalign.data.hf import TRLPreferenceDataModule
from prefalign.data.hf.datamodule import TRLBatches
from prefalign.families.hf import HFCausalLMFamily
from prefalign.models import HFCausalLM


def cache(tmp_path, model, data, **kwargs):
    dm = TRLPreferenceDataModule(str(data), cache_dir=str(tmp_path / "cache"), **kwargs)
    dm.prepare(model.load_tokenizer())
    calls = []
    family = HFCausalLMFamily()

    def sums(batch):
        calls.append(len(batch["input_ids"]))
        return family.reference_sums(model, batch)

    dm.precompute_reference(model, sums)
    return dm, calls


def test_cached_once_reused_and_rebuilt_when_an_ingredient_changes(tiny_model, data_files, tmp_path):
    model = HFCausalLM(str(tiny_model)).eval()
    dm, calls = cache(tmp_path, model, data_files["standard"])
    assert calls and len(list((tmp_path / "cache").glob("hf-ref-*.pt"))) == 1
    # Every training row's cached reference sums equal the reference run on that row's batch.
    batch = next(iter(TRLBatches(dm.splits["train"], True, batch_size=16)))
    assert "ref_head" in batch
    expected = HFCausalLMFamily().reference_sums(model, batch)
    torch.testing.assert_close(batch["ref_head"] + batch["ref_tail"], expected["ref_head"] + expected["ref_tail"])
    _, again = cache(tmp_path, model, data_files["standard"])
    assert again == []  # read from disk: the reference did not run
    _, shorter = cache(tmp_path, model, data_files["standard"], max_length=8)
    assert shorter and len(list((tmp_path / "cache").glob("hf-ref-*.pt"))) == 2  # other truncation, other key
