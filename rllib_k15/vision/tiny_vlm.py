"""``tiny-random-idefics3``: a seeded random vision-language model for tests (registered in
``rllib_k15.models``).

Idefics3 is the architecture of SmolVLM, the vision sibling of the embedded SmolLM2: a
SigLIP-style vision tower (2 layers, hidden 64, 32×32 images in 8×8 patches), a pixel-shuffle
connector (scale factor 2: 16 patches → 4 image tokens) and the same 2-layer Llama as
``tiny-random-llama`` (hidden 128, head_dim 32: vLLM's CPU attention needs >= 32), with the
SmolLM2 tokenizer plus Idefics3's image tokens. Saved with its processor (the Idefics3 image
processor without image splitting, and the tokenizer with a chat template that takes image
items), as a real VLM directory is. It runs on vLLM's CPU build, whose LLaVA loader needs
torchvision (not installable beside the CPU torch here).
"""

from __future__ import annotations

from pathlib import Path

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE // SCALE_FACTOR) ** 2  # image tokens per image
SPECIAL_TOKENS = ["<fake_token_around_image>", IMAGE_TOKEN, "<global-img>", "<end_of_utterance>"]
# SmolLM2's chat format; content may be a string or a list of {"type": "image"} and
# {"type": "text", "text": ...} items, as real VLM processors' templates take it
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}"
    "{{ '<image>\\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_random_idefics3(out: Path, tokenizer_dir: Path) -> None:
    """Write the model, its processor and tokenizer to ``out`` (deterministic: seed 0)."""
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from rllib_k15.models import tiny_llama_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    text = tiny_llama_config(tokenizer)  # the same Llama as tiny-random-llama
    vision = Idefics3VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=SCALE_FACTOR,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Idefics3ForConditionalGeneration(config)
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            do_image_splitting=False,
            size={"longest_edge": IMAGE_SIZE},
            max_image_size={"longest_edge": IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    model.config.dtype = "bfloat16"
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)
