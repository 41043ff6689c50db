"""ValidateAtEnd: one validation pass, after the last epoch, whatever max_epochs is."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from prefalign.callbacks import ValidateAtEnd


class Counting(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validated_after = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated_after.append(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


DATA = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)


def _trainer(tmp_path, callbacks, **limits) -> L.Trainer:
    return L.Trainer(
        callbacks=callbacks,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **limits,
    )


def _fit(tmp_path, callbacks, **limits):
    model = Counting()
    _trainer(tmp_path, callbacks, **limits).fit(model, DATA, DATA)
    return model.validated_after


@pytest.mark.parametrize("epochs", [1, 3, 4])
def test_validates_after_the_last_epoch_only(tmp_path, epochs):
    assert _fit(tmp_path, [], max_epochs=epochs) == list(range(epochs))  # Lightning's default: every epoch
    assert _fit(tmp_path, [ValidateAtEnd()], max_epochs=epochs) == [epochs - 1]


def test_a_run_bounded_by_steps_keeps_per_epoch_validation(tmp_path):
    with pytest.warns(UserWarning, match="max_steps"):
        assert _fit(tmp_path, [ValidateAtEnd()], max_epochs=10, max_steps=4) == [0, 1]


def test_no_validation_in_fit_skips_the_fit_s_validation_only(tmp_path):
    from prefalign.callbacks import NoValidationInFit

    class CountingSteps(Counting):
        steps = 0

        def validation_step(self, batch, batch_idx):
            self.steps += 1

    model = CountingSteps()
    trainer = _trainer(tmp_path, [NoValidationInFit()], max_epochs=3)
    trainer.fit(model, DATA, DATA)
    assert model.steps == 0  # not even the sanity check's
    assert trainer.limit_val_batches == 1.0  # restored: validate() on this trainer validates
    trainer.validate(model, DATA, verbose=False)
    assert model.steps == 2 and model.validated_after == [3]
