"""data.chat_template replaces the tokenizer's template for the run; data.chat_template_kwargs reach it."""

from grouprl.config import load_config
from grouprl.model.load import format_prompt
from grouprl.model.tokenizer import build_char_tokenizer
from grouprl.train.setup import build, prompt_texts

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% if think %}<think>{% endif %}{% endif %}")


def test_chat_template_kwargs_are_passed_to_the_template():
    tok = build_char_tokenizer()
    tok.chat_template = TEMPLATE
    assert format_prompt(tok, "2+2=") == "<user>2+2=\n<assistant>"
    assert format_prompt(tok, "2+2=", None, {"think": True}) == "<user>2+2=\n<assistant><think>"


def test_the_run_uses_the_configured_template(tmp_path):
    cfg = load_config(None, ["data.num_train=4", "data.num_eval=0", f"chat_template={TEMPLATE!r}",
                             "chat_template_kwargs={think: true}", "system_prompt=S"])
    setup = build(cfg, tmp_path)
    try:
        assert setup.tokenizer.chat_template == TEMPLATE  # so the checkpoints carry it too
        text = prompt_texts(setup, setup.source.rows[:1])[0]
        assert text.startswith("<system>S\n<user>") and text.endswith("<assistant><think>")
    finally:
        setup.rewards.close()
