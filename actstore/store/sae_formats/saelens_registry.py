"""SAEs named by a SAELens registry entry (release + SAE id), resolved through SAELens' own
pretrained directory and loaders (which download from the Hugging Face Hub where the network
allows). Settings that live only in the registry are honoured: the release's
``config_overrides`` (e.g. ``normalize_activations``) and ``norm_scaling_factor`` (inputs are
scaled by it, which encodes exactly as SAELens' folding of it into W_enc). The loader's
config and state dict then go through the same checks as a folder (:mod:`.saelens`).

Needs the optional ``sae-lens`` package; without it :func:`read_release` says which registry
settings cannot be seen.
"""

from __future__ import annotations

from typing import Any

from actstore.errors import InvalidInput, NotFound

from .common import check_memory, finish
from .saelens import parse_config, tensors_to_saelens

__all__ = ["REGISTRY_SETTINGS", "read_release", "registry_available"]

REGISTRY_SETTINGS = (
    "norm_scaling_factor",
    "config_overrides (e.g. normalize_activations)",
    "the conversion loader and repo folder of the release",
)


def registry_available() -> bool:
    """True when the sae-lens package can be imported."""
    import importlib.util

    return importlib.util.find_spec("sae_lens") is not None


def read_release(release: str, sae_id: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(normalised cfg, tensors, source) of SAELens registry entry ``release`` / ``sae_id``.

    Raises InvalidInput when sae-lens is not installed (naming the registry settings that
    cannot be seen), NotFound for an unknown release or SAE id."""
    if not registry_available():
        raise InvalidInput(
            "release and sae_id resolve through SAELens' pretrained directory, but the sae-lens package is not "
            f"installed (pip install sae-lens); without it these registry settings cannot be seen: "
            f"{', '.join(REGISTRY_SETTINGS)}. Download the SAE folder and register it from its path instead"
        )
    from sae_lens.loading import pretrained_sae_loaders as loaders
    from sae_lens.loading.pretrained_saes_directory import (
        get_config_overrides,
        get_norm_scaling_factor,
        get_pretrained_saes_directory,
        get_repo_id_and_folder_name,
    )

    directory = get_pretrained_saes_directory()
    if release not in directory:
        known = sorted(directory)
        raise NotFound(f"unknown SAELens release {release!r}; {len(known)} releases, e.g. {', '.join(known[:5])}")
    entry = directory[release]
    if sae_id not in entry.saes_map:
        ids = list(entry.saes_map)
        raise NotFound(f"unknown SAE id {sae_id!r} in SAELens release {release!r}; e.g. {', '.join(ids[:5])}")
    conversion = loaders.get_conversion_loader_name(release)
    repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
    overrides = {**get_config_overrides(release, sae_id), "device": "cpu", "dtype": "float32"}
    where = f"SAELens release {release!r} SAE {sae_id!r} ({repo_id}/{folder})"
    try:
        head = loaders.NAMED_PRETRAINED_SAE_CONFIG_GETTERS[conversion](repo_id, folder, "cpu", False, dict(overrides))
        d_in, d_sae = int(head["d_in"]), int(head["d_sae"])
        check_memory([("W_enc", (d_in, d_sae), 4), ("W_dec", (d_sae, d_in), 4)], where)
        cfg_dict, state_dict, _ = loaders.NAMED_PRETRAINED_SAE_LOADERS[conversion](
            repo_id=repo_id, folder_name=folder, device="cpu", cfg_overrides=dict(overrides)
        )
    except (InvalidInput, NotFound):
        raise
    except Exception as exc:  # noqa: BLE001 - network, Hub and format errors of a third-party loader
        raise InvalidInput(
            f"{where} could not be loaded by SAELens' {conversion!r} loader: {type(exc).__name__}: {exc}"
        ) from None
    cfg_dict = loaders.handle_config_defaulting(dict(cfg_dict))
    scale = get_norm_scaling_factor(release, sae_id)
    if scale is not None:
        cfg_dict["norm_scaling_factor"] = float(scale)
    if "finetuning_scaling_factor" in state_dict:
        raise InvalidInput(f"{where} has a finetuning scaling factor; such SAEs are not supported")
    cfg = parse_config(cfg_dict)
    cfg.update(
        format="saelens_registry",
        layout=f"saelens_registry:{conversion}",
        original={
            "release": release,
            "sae_id": sae_id,
            "repo_id": repo_id,
            "folder": folder,
            "conversion": conversion,
            "norm_scaling_factor": scale,
            "config_overrides": overrides,
            "cfg": cfg_dict,
        },
    )
    cfg, tensors = finish(cfg, tensors_to_saelens(dict(state_dict), where), where)
    return cfg, tensors, f"saelens:{release}/{sae_id}"
