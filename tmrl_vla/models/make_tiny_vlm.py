"""Generate the tiny SmolVLM backbone directory that ``tiny_smolvla`` builds SmolVLA on.

Why this exists: LeRobot's ``SmolVLAPolicy`` always resolves ``config.vlm_model_name`` with
``AutoConfig.from_pretrained`` (backbone shape), ``AutoProcessor.from_pretrained`` (it reads
``processor.tokenizer.fake_image_token_id`` / ``global_image_token_id``) and, in its pre-processor pipeline,
``AutoTokenizer.from_pretrained`` (task-string tokenisation). Pointing it at the real
``HuggingFaceTB/SmolVLM2-500M-Video-Instruct`` needs the Hub and builds a ~450M-parameter model. This script
writes a self-contained directory of small JSON/Jinja text files describing a *structurally faithful* SmolVLM
(SigLIP-style vision tower -> pixel-shuffle connector -> Llama text model) that is just big enough to be a real
network (~1M parameters with SmolVLA's action expert) and small enough to train on one CPU core in tests.

Everything is written from the constants below; nothing is copied from another checkpoint. The tokenizer is a
WordPiece model over a hand-written robot-manipulation vocabulary plus single characters, so task strings such as
"pick up the red cube" map to whole-word tokens and unseen words fall back to characters instead of ``<unk>``.

Run ``python -m tmrl_vla.models.make_tiny_vlm [--out DIR]``; the default output is the packaged
``tmrl_vla/models/tiny_smolvlm`` directory. The output is deterministic, so a test regenerates it into a temporary
directory and compares it with the committed files.
"""

from __future__ import annotations

import argparse
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "tiny_smolvlm"

# Special tokens. The four image/video markers are the ones SmolVLM's processor and LeRobot's SmolVLA look up by
# attribute name (``tokenizer.fake_image_token`` etc.); the others play the usual pad/unk/bos/eos roles.
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<end_of_utterance>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    UNK_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    FAKE_IMAGE_TOKEN,
    GLOBAL_IMAGE_TOKEN,
    IMAGE_TOKEN,
    VIDEO_TOKEN,
)
# Attribute names under which transformers exposes the model-specific tokens (and ``<name>_id``).
NAMED_EXTRA_TOKENS: dict[str, str] = {
    "end_of_utterance_token": EOS_TOKEN,
    "fake_image_token": FAKE_IMAGE_TOKEN,
    "global_image_token": GLOBAL_IMAGE_TOKEN,
    "image_token": IMAGE_TOKEN,
    "video_token": VIDEO_TOKEN,
}

SUBWORD_PREFIX = "##"
# Common English suffixes as continuation pieces, so "cubes"/"stacked"/"picking" split into word + suffix.
SUFFIXES: tuple[str, ...] = ("s", "es", "ed", "ing", "er", "est", "ly")

# Whole-word vocabulary, one group per line: function words plus the nouns, verbs, colours and spatial words that
# appear in tabletop-manipulation task strings. Order does not matter; the words are deduplicated and sorted.
_WORD_GROUPS: tuple[str, ...] = (
    "a an the and or but of to in on at into onto from with without by for as is are be been it its this that",
    "these those then than so if when while until after before again once also very more most less",
    "up down left right front back top bottom side over under above below near far next behind beside between",
    "inside outside out off through around across along toward towards away here there where",
    "all each every both some any no not only other another same different",
    "one two three four five six seven eight nine ten first second third last half",
    "small big large little tall short long wide narrow full empty heavy light upright",
    "pick place put push pull lift drop grasp grab release hold move slide rotate turn open close insert",
    "stack unstack pour fold unfold wipe press lower raise reach go bring take give fill sort align flip hang",
    "throw carry transfer set make touch use get keep stop wait return clean cover uncover stay do done try",
    "cube block box cup mug bowl plate bottle can jar lid drawer door cabinet shelf table tray basket bin",
    "container object item ball toy sponge towel cloth spoon fork knife pen marker book bag",
    "apple banana orange carrot lemon peg hole socket button switch handle knob",
    "target goal robot arm gripper hand finger camera view scene",
    "red green blue yellow purple pink black white gray grey brown gold silver color colour",
    "square round circle triangle corner edge center centre middle position location area zone region",
    "start end task episode step please carefully slowly quickly gently",
    "i you he she we they me him her us them my your his their our what which who how",
    "user assistant system",
)
WORDS: tuple[str, ...] = tuple(word for group in _WORD_GROUPS for word in group.split())


@dataclass(frozen=True)
class TowerSpec:
    """One transformer tower's shape (the vision tower or the text model)."""

    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int


def tower_config(tower: TowerSpec) -> dict[str, int]:
    """The keys a transformers config of either tower takes from its :class:`TowerSpec`."""
    return {
        "hidden_size": tower.hidden_size,
        "intermediate_size": tower.intermediate_size,
        "num_hidden_layers": tower.layers,
        "num_attention_heads": tower.heads,
    }


@dataclass(frozen=True)
class TinyVlmSpec:
    """Shape of the generated backbone.

    The defaults give a ~1.0M-parameter SmolVLA: a 2-layer width-64 ViT on 8 px patches of a 64 px image, a 2x
    pixel-shuffle connector (64 patches -> 16 image tokens) and a 4-layer width-96 Llama with grouped-query attention
    (6 query / 2 key-value heads of dim 16). SmolVLA derives its action expert from the text config (width *
    ``expert_width_multiplier``, same heads), so the text tower also sets the expert's size. The size was chosen so a
    batch-32 training step stays near 0.1 s on one CPU core.
    """

    image_size: int = 64
    patch_size: int = 8
    scale_factor: int = 2
    vision: TowerSpec = TowerSpec(hidden_size=64, intermediate_size=128, layers=2, heads=2)
    text: TowerSpec = TowerSpec(hidden_size=96, intermediate_size=384, layers=4, heads=6)
    text_kv_heads: int = 2
    max_position_embeddings: int = 512

    @property
    def image_seq_len(self) -> int:
        """Image tokens per frame after the connector: ``(image_size / patch_size / scale_factor) ** 2``."""
        return image_seq_len(self.image_size, self.patch_size, self.scale_factor)


def image_seq_len(image_size: int, patch_size: int, scale_factor: int) -> int:
    """Number of image tokens the SmolVLM connector emits for a square image.

    The pixel shuffle folds ``scale_factor x scale_factor`` neighbouring patches into one token, so the patch grid
    side must be divisible by ``scale_factor``; anything else would make the connector's reshape fail.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    side = image_size // patch_size
    if side % scale_factor:
        raise ValueError(f"patch grid side {side} is not divisible by the connector scale factor {scale_factor}")
    return (side // scale_factor) ** 2


def vocabulary() -> list[str]:
    """Token list in id order: special tokens, newline, punctuation, characters, continuation pieces, words.

    Single characters (and their ``##`` continuations) guarantee that any ASCII word can be spelled, so WordPiece
    never collapses an unknown task word into ``<unk>``.
    """
    chars = list(string.ascii_lowercase + string.digits)
    pieces = [*SPECIAL_TOKENS, "\n", *string.punctuation, *chars]
    pieces += [SUBWORD_PREFIX + c for c in chars]
    pieces += [SUBWORD_PREFIX + s for s in SUFFIXES if len(s) > 1]
    seen = set(pieces)
    pieces += [w for w in sorted(set(WORDS)) if w not in seen]
    return pieces


def build_tokenizer() -> Tokenizer:
    """Build the WordPiece tokenizer.

    Normalisation lower-cases and strips accents so "Pick up the Cube" and "pick up the cube" tokenise alike.
    Pre-tokenisation keeps words, single punctuation marks and newlines (LeRobot appends ``"\\n"`` to every task
    string, as SmolVLM's own tokenizer would see it) and drops other whitespace.
    """
    vocab = {token: idx for idx, token in enumerate(vocabulary())}
    wordpiece = models.WordPiece(
        vocab, unk_token=UNK_TOKEN, continuing_subword_prefix=SUBWORD_PREFIX, max_input_chars_per_word=64
    )
    tokenizer = Tokenizer(wordpiece)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\n"), behavior="removed", invert=True)
    tokenizer.decoder = decoders.WordPiece(prefix=SUBWORD_PREFIX, cleanup=True)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer


def model_config(spec: TinyVlmSpec, vocab: dict[str, int]) -> dict[str, Any]:
    """SmolVLM ``config.json``: SigLIP-style vision tower + Llama text tower + pixel-shuffle connector.

    ``tie_word_embeddings`` must stay ``False``: SmolVLA freezes ``lm_head`` by name and raises if the pattern matches
    no parameter, which is what happens when ``lm_head`` is tied to (and deduplicated into) the input embeddings.
    ``pad_token_id``/``image_token_id`` must be valid ids of *this* vocabulary (the upstream defaults point past it).
    """
    token_ids = {
        "bos_token_id": vocab[BOS_TOKEN],
        "eos_token_id": vocab[EOS_TOKEN],
        "pad_token_id": vocab[PAD_TOKEN],
    }
    text_config = {
        "model_type": "llama",
        "vocab_size": len(vocab),
        **tower_config(spec.text),
        "num_key_value_heads": spec.text_kv_heads,
        "head_dim": spec.text.hidden_size // spec.text.heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        **token_ids,
    }
    vision_config = {
        "model_type": "smolvlm_vision",
        **tower_config(spec.vision),
        "num_channels": 3,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }
    return {
        "architectures": ["SmolVLMForConditionalGeneration"],
        "model_type": "smolvlm",
        "scale_factor": spec.scale_factor,
        "image_token_id": vocab[IMAGE_TOKEN],
        "pad_token_id": vocab[PAD_TOKEN],
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": "float32",
        "text_config": text_config,
        "vision_config": vision_config,
    }


def tokenizer_config() -> dict[str, Any]:
    """``tokenizer_config.json``.

    ``extra_special_tokens`` as a *dict* is what makes transformers expose ``tokenizer.fake_image_token`` and
    ``tokenizer.fake_image_token_id`` (LeRobot's SmolVLA reads the latter two for its image start/end tokens).
    Right padding matches LeRobot's ``TokenizerProcessorStep(padding_side="right")``.
    """
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "extra_special_tokens": dict(NAMED_EXTRA_TOKENS),
        "processor_class": "SmolVLMProcessor",
    }


def special_tokens_map() -> dict[str, Any]:
    """``special_tokens_map.json`` for older loaders that read the named tokens from this file."""
    return {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN}


def processor_config(spec: TinyVlmSpec) -> dict[str, Any]:
    """``processor_config.json``: ``image_seq_len`` must equal the connector's output length per image."""
    return {"processor_class": "SmolVLMProcessor", "image_seq_len": spec.image_seq_len}


def _visual_processor_common(spec: TinyVlmSpec) -> dict[str, Any]:
    """Settings shared by the image and video processors.

    Mean/std 0.5 maps [0, 1] pixels to [-1, 1], the same range SmolVLA's ``prepare_images`` feeds the vision tower.
    Image splitting is off: one 64 px frame is one global image, so no ``<row_i_col_j>`` tokens are needed.
    """
    return {
        "processor_class": "SmolVLMProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"longest_edge": spec.image_size},
        "max_image_size": {"longest_edge": spec.image_size},
        "resample": 1,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": True,
        "do_image_splitting": False,
    }


def image_processor_config(spec: TinyVlmSpec) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``SmolVLMImageProcessor``."""
    return {"image_processor_type": "SmolVLMImageProcessor", **_visual_processor_common(spec)}


def video_processor_config(spec: TinyVlmSpec) -> dict[str, Any]:
    """``video_preprocessor_config.json``.

    ``SmolVLMProcessor`` always builds a video processor; without this file it would fall back to upstream defaults
    (364 px frames), inconsistent with the 64 px image processor.
    """
    return {
        "video_processor_type": "SmolVLMVideoProcessor",
        **_visual_processor_common(spec),
        "fps": 1,
        "num_frames": 8,
        "do_sample_frames": False,
    }


# Role-prefixed turns closed by <end_of_utterance>; images become a single <image> placeholder that the processor
# expands to fake/global/image tokens. Accepts plain-string or typed-list message content.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] | capitalize + ':' }}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ ' ' + part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<end_of_utterance>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>Assistant:' }}{% endif %}\n"
)


def _json_text(payload: dict[str, Any]) -> str:
    """Stable JSON serialisation (sorted keys, 2-space indent, trailing newline) so regeneration is byte-identical."""
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_files(spec: TinyVlmSpec | None = None) -> dict[str, str]:
    """Return ``{file name: text}`` for the whole backbone directory (pure; writes nothing)."""
    spec = spec or TinyVlmSpec()
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    return {
        "config.json": _json_text(model_config(spec, vocab)),
        "tokenizer.json": tokenizer.to_str(pretty=True) + "\n",
        "tokenizer_config.json": _json_text(tokenizer_config()),
        "special_tokens_map.json": _json_text(special_tokens_map()),
        "processor_config.json": _json_text(processor_config(spec)),
        "preprocessor_config.json": _json_text(image_processor_config(spec)),
        "video_preprocessor_config.json": _json_text(video_processor_config(spec)),
        "chat_template.jinja": CHAT_TEMPLATE,
    }


def write_tiny_vlm(out_dir: Path | str = DEFAULT_OUT_DIR, spec: TinyVlmSpec | None = None) -> list[Path]:
    """Write the backbone directory to ``out_dir`` (created if needed) and return the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_files(spec).items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: ``python -m tmrl_vla.models.make_tiny_vlm [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT_DIR, help=f"output directory (default: {DEFAULT_OUT_DIR})"
    )
    args = parser.parse_args(argv)
    paths = write_tiny_vlm(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} files ({total / 1024:.1f} KiB) to {args.out}")


if __name__ == "__main__":
    main()
