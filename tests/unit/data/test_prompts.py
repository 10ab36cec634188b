"""The prompt cursor: epochs reshuffle deterministically and a restored cursor continues exactly, across an
epoch boundary too."""

import pytest

from grouprl.data.prompts import DataError, PromptSource, load_rows


def test_cursor_round_trip_across_an_epoch_boundary():
    rows = [{"prompt": str(i)} for i in range(5)]
    a = PromptSource(rows, seed=3)
    first = [r["prompt"] for r in a.take(4)]
    state = a.state_dict()
    rest = [r["prompt"] for r in a.take(8)]  # crosses into epoch 1 and 2
    b = PromptSource(rows, seed=3)
    b.load_state_dict(state)
    assert [r["prompt"] for r in b.take(8)] == rest
    assert sorted(first + rest[:1]) == [str(i) for i in range(5)]  # epoch 0 is a permutation
    assert a.epoch == 2


def test_empty_sources_and_files_are_rejected(tmp_path):
    with pytest.raises(DataError, match="no prompts"):
        PromptSource([], seed=0)
    (tmp_path / "d.jsonl").write_text('{"prompt": "x"}\n\n[1, 2]\n')
    with pytest.raises(DataError, match="line 3: expected an object"):
        load_rows(str(tmp_path / "d.jsonl"), "prompt")
