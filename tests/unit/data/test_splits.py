"""data.split and data.dataset_config reach the datasets loader (hub ids and saved DatasetDicts)."""

import datasets
import pytest

from grouprl.data.prompts import DataError, load_rows


def test_split_of_a_saved_dataset_dict(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["a", "b"]}),
                          "test": datasets.Dataset.from_dict({"prompt": ["c"]})}
                         ).save_to_disk(str(tmp_path / "dd"))
    assert [r["prompt"] for r in load_rows(str(tmp_path / "dd"), "prompt")] == ["a", "b"]
    assert [r["prompt"] for r in load_rows(str(tmp_path / "dd"), "prompt", split="test")] == ["c"]
    with pytest.raises(DataError, match="without a 'validation' split .*; set data.split"):
        load_rows(str(tmp_path / "dd"), "prompt", split="validation")


def test_hub_dataset_gets_its_configuration_and_split(monkeypatch):
    seen = {}

    def fake_load_dataset(path, name=None, split=None, data_files=None):
        seen.update(path=path, name=name, split=split)
        return datasets.Dataset.from_dict({"problem": ["1+1="]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_rows("owner/math", "problem", config="main", split="test")
    assert seen == {"path": "owner/math", "name": "main", "split": "test"} and rows[0]["prompt"] == "1+1="
