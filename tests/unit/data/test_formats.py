"""Prompt datasets in every supported format load to the same rows; bad files name file, line and column."""

import json

import pytest

from grouprl.data.prompts import DataError, load_rows

ROWS = [{"question": "1+1=", "answer": "2"}, {"question": "2+3=", "answer": "5"}]


def write_all(tmp_path):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "d.csv").write_text("question,answer\n1+1=,2\n2+3=,5\n")
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_list(ROWS)
    data.to_parquet(str(tmp_path / "d.parquet"))
    data.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": data}).save_to_disk(str(tmp_path / "saved_dict"))
    return ["d.jsonl", "d.json", "wrapped.json", "d.csv", "d.parquet", "saved", "saved_dict"]


def test_every_format_gives_the_same_rows(tmp_path):
    for name in write_all(tmp_path):
        rows = load_rows(str(tmp_path / name), "question")
        assert [(r["prompt"], r["answer"]) for r in rows] == [("1+1=", "2"), ("2+3=", "5")], name


def test_chat_messages_are_a_prompt(tmp_path):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+1="},
                {"role": "assistant", "content": "2"}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": messages, "answer": "2"}) + "\n")
    rows = load_rows(str(tmp_path / "chat.jsonl"), "prompt")
    assert rows[0]["prompt"] == messages[:2]  # the assistant turn is the answer, not the prompt


@pytest.mark.parametrize("name,content,message", [
    ("bad.json", "[1, 2", "bad.json line 1: not valid JSON"),
    ("obj.json", '{"a": 1}', "expected a JSON list of rows"),
    ("rows.json", "[1, 2]", "row 0: expected an object"),
    ("nocol.csv", "q,answer\nx,1\n", "nocol.csv line 2: no 'question' column"),
    ("empty.csv", "question,answer\n", "is empty"),
    ("blank.jsonl", '{"question": ""}\n', "the 'question' column is empty"),
    ("d.txt", "hello", "unknown format '.txt'"),
])
def test_bad_files_name_the_place(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_rows(str(tmp_path / name), "question")


def test_a_datasets_builder_with_data_files_reads_through_datasets(tmp_path):
    pytest.importorskip("datasets")
    names = write_all(tmp_path)
    for builder, name in (("json", "d.jsonl"), ("csv", "d.csv"), ("parquet", "d.parquet")):
        rows = load_rows(builder, "question", data_files=str(tmp_path / name))
        assert [r["prompt"] for r in rows] == ["1+1=", "2+3="], builder
    assert "d.jsonl" in names
    split_files = {"train": str(tmp_path / "d.jsonl"), "test": str(tmp_path / "d.json")}
    assert len(load_rows("json", "question", data_files=split_files, split="test")) == 2
    with pytest.raises(DataError, match="could not read a datasets source with data_files"):
        load_rows("json", "question", data_files=str(tmp_path / "missing.jsonl"))


def test_local_text_files_keep_every_value_as_written(tmp_path):
    """Why local .jsonl/.csv do not go through ``datasets``: its readers change values (a mixed JSON column is
    decoded, so the string "2" becomes the int 2; CSV numbers are inferred). grouprl's readers keep them."""
    (tmp_path / "mixed.jsonl").write_text('{"prompt": "a", "answer": "2"}\n{"prompt": "b", "answer": 5}\n')
    (tmp_path / "zeros.csv").write_text("prompt,answer\na,007\n")
    assert [r["answer"] for r in load_rows(str(tmp_path / "mixed.jsonl"), "prompt")] == ["2", 5]
    assert load_rows(str(tmp_path / "zeros.csv"), "prompt")[0]["answer"] == "007"
