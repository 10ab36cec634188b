"""A character-level tokenizer built locally with the ``tokenizers`` library: no download, no training.

Ids: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3, then one id per character of the alphabet in
order. Encoding gives exactly one id per character and adds no BOS/EOS (prompt formatting decides that), and
decoding concatenates tokens, so ``decode(encode(text))`` is ``text`` for any text over the alphabet.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)  # ids 0, 1, 2, 3

DEFAULT_ALPHABET = string.digits + string.ascii_letters + " \n" + "+-*/=()<>.,:;?!#'\"[]{}_%^&|~@$\\`"


def build_char_tokenizer(
    alphabet: str = DEFAULT_ALPHABET, *, padding_side: str = "left"
) -> PreTrainedTokenizerFast:
    """Build a character-level fast tokenizer over ``alphabet``.

    Characters outside the alphabet encode to ``<unk>`` (id 3). Special tokens are never added automatically.
    The result round-trips through ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    if len(set(alphabet)) != len(alphabet):
        raise ValueError("alphabet has repeated characters; give each character once so every id is unique.")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({ch: len(SPECIAL_TOKENS) + i for i, ch in enumerate(alphabet)})

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # "[\s\S]" matches any single character, newline included: one pre-token (hence one id) per character.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # concatenate tokens; the default WordLevel decoder joins with spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        add_bos_token=False,
        add_eos_token=False,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
    )
