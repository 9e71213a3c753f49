"""Model keys: the slug a model is stored under, by default from the model's own name.

``model_key_for(name)`` slugs a hub id, folder or file name. ``default_model_key(source)``
looks at what the source says its name is before falling back on the folder's name:

- a GGUF file (or a folder holding one): the file's name, which names the model and its
  weight format (``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct.q4_1``; the
  header's ``general.name`` is often a training-run id such as
  ``smollm2-135m-8k-lc100k-mix1-ep2``); when the file name says nothing (``model.gguf``,
  ``ggml-model-*.gguf``), ``general.name`` with the weight format appended
  (``tiny-llama-2l-chat-q8_0``), so two quantizations of one model get two keys;
- a model folder with a model card (``README.md``): its title (the first ``# heading``) when
  that is a plain name, else the hub id its usage example loads
  (``SentenceTransformer('org/name')`` / ``from_pretrained('org/name')``). The packaged
  all-MiniLM-L6-v2 folder, named ``model``, gives ``all-minilm-l6-v2``;
- anything else: :func:`model_key_for` of the source.

``config.json``'s ``_name_or_path`` is not used: it often names the checkpoint a model was
fine-tuned from (all-MiniLM-L6-v2's says ``nreimers/MiniLM-L6-H384-uncased``).
Reads only small files and the GGUF header; imports neither torch nor transformers.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["default_model_key", "model_key_for"]

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
_USAGE_ID = re.compile(r"""(?:SentenceTransformer|from_pretrained)\(\s*['"]([A-Za-z0-9][\w.-]*/[\w.-]+)['"]""")


def model_key_for(source: str | Path) -> str:
    """A store key (slug) for a model: the last part of the hub id or folder name.

    ``EleutherAI/pythia-70m`` -> ``pythia-70m``; ``/m/Qwen2.5-0.5B/`` -> ``qwen2.5-0.5b``;
    a Hugging Face cache snapshot path (``.../models--org--name/snapshots/<hash>``) gives
    the repo name; a GGUF file gives its name without ``.gguf``. Pass ``key`` explicitly
    when folder names are not distinctive.
    """
    s = str(source).strip().rstrip("/\\")
    parts = [p for p in re.split(r"[/\\]", s) if p]
    name = parts[-1] if parts else "model"
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")]
    for p in parts:
        if p.startswith("models--"):
            name = p.split("--")[-1]
            break
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower())
    slug = re.sub(r"_{2,}", "_", slug)
    slug = re.sub(r"-{2,}", "-", slug)
    slug = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", slug)[:100]
    slug = re.sub(r"[^a-z0-9]+$", "", slug)
    return slug or "model"


def default_model_key(source: str | Path) -> str:
    """The key a model is stored under when none is given (see the module docstring)."""
    p = Path(str(source).strip()).expanduser()
    try:
        if p.is_file() and p.suffix.lower() == ".gguf":
            return _gguf_file_key(p)
        if p.is_dir():
            if not (p / "config.json").exists():
                ggufs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
                if len(ggufs) == 1:
                    return _gguf_file_key(ggufs[0])
            card = _card_name(p / "README.md")
            if card:
                return model_key_for(card)
    except (OSError, ValueError, KeyError, ImportError):
        pass  # an unreadable source fails later, when it is loaded, with its own message
    return model_key_for(source)


def _gguf_file_key(path: Path) -> str:
    name = model_key_for(path)
    if name == "model" or name.startswith("ggml-model"):
        return _gguf_key(path) or name
    return name


def _gguf_key(path: Path) -> str | None:
    from gguf import LlamaFileType

    from actstore.ingest.gguf_header import read_gguf

    reader = read_gguf(path)
    field = reader.fields.get("general.name")
    if field is None or not field.data:
        return None
    name = str(field.contents()).strip()
    if not name:
        return None
    ft = reader.fields.get("general.file_type")
    if ft is not None and ft.data:
        try:
            name += "-" + LlamaFileType(int(ft.contents())).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    return model_key_for(name)


def _card_name(readme: Path) -> str | None:
    """The model's name from its model card, or None."""
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")[:200_000]
    if text.startswith("---"):  # YAML front matter
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end >= 0 else text
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("# "):
            title = line[2:].strip()
            if _PLAIN_NAME.match(title):
                return title
            break
    m = _USAGE_ID.search(text)
    return m.group(1) if m else None
