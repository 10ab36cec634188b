"""The character tokenizer: one id per character, no automatic specials, exact round trips, save/load."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from grouprl.model.load import load_tokenizer
from grouprl.model.tokenizer import DEFAULT_ALPHABET, build_char_tokenizer

TEXT = "Q: 12+3 = ?\n A: (15) [ok], {x_1}; 'a' \"b\" #!"


def test_special_ids_and_padding_side(char_tokenizer):
    assert (char_tokenizer.pad_token_id, char_tokenizer.bos_token_id, char_tokenizer.eos_token_id) == (
        0,
        1,
        2,
    )
    assert char_tokenizer.unk_token_id == 3
    assert char_tokenizer.padding_side == "left"
    assert len(char_tokenizer) == 4 + len(DEFAULT_ALPHABET)


def test_one_id_per_character_without_bos_eos(char_tokenizer):
    ids = char_tokenizer("12+3")["input_ids"]
    # ids 0-3 are specials and the alphabet starts with the digits: "1" -> 5, "2" -> 6, "3" -> 7
    assert ids == [5, 6, 4 + DEFAULT_ALPHABET.index("+"), 7]
    assert len(char_tokenizer(TEXT)["input_ids"]) == len(TEXT)


def test_decode_round_trips_exactly(char_tokenizer):
    ids = char_tokenizer(TEXT)["input_ids"]
    assert char_tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert char_tokenizer.decode([1, *ids, 2, 0, 0], skip_special_tokens=True) == TEXT


def test_unknown_character_maps_to_unk(char_tokenizer):
    a, b = (4 + DEFAULT_ALPHABET.index(c) for c in "ab")
    assert char_tokenizer("a\u00e9b")["input_ids"] == [a, 3, b]


def test_left_padding(char_tokenizer):
    batch = char_tokenizer(["12", "3+45"], padding=True)
    assert batch["input_ids"][0][:2] == [0, 0]
    assert batch["attention_mask"] == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_save_pretrained_round_trip(char_tokenizer, tmp_path):
    char_tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        ids = loaded(TEXT)["input_ids"]
        assert ids == char_tokenizer(TEXT)["input_ids"]
        assert loaded.decode(ids, skip_special_tokens=True) == TEXT
        assert (loaded.pad_token_id, loaded.eos_token_id, loaded.padding_side) == (0, 2, "left")


def test_custom_alphabet_and_duplicates():
    tok = build_char_tokenizer("ab")
    assert tok("ba")["input_ids"] == [5, 4]
    with pytest.raises(ValueError, match="repeated"):
        build_char_tokenizer("aba")
