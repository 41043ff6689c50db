"""--model_name_or_path / --dataset_name (TRL's names) set the HF backbone's and the data module's arguments."""

from prefalign.cli import hf_shortcuts


def test_both_spellings_map_in_place_and_other_words_pass_through():
    words = ["fit", "--config", "c.yaml", "--model_name_or_path", "M", "--dataset_name=D", "--trainer.max_steps=3"]
    assert hf_shortcuts(words) == [
        "fit",
        "--config",
        "c.yaml",
        "--model_name_or_path=M",
        "--model.backbone.init_args.model_name_or_path=M",
        "--dataset_name=D",
        "--data.init_args.dataset_name=D",
        "--trainer.max_steps=3",
    ]
    assert hf_shortcuts(["fit", "--model.backbone.init_args.model_name_or_path=X"]) == [
        "fit",
        "--model.backbone.init_args.model_name_or_path=X",
    ]
