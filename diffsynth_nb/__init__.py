"""diffsynth_nb: train and use LoRA adapters for text-to-image diffusion models.

The names below are imported lazily, so `import diffsynth_nb` stays fast and
`from diffsynth_nb import train_lora` loads only what training needs.
"""
__version__ = "0.1.0"
import importlib

_EXPORTS = {
    "train_lora": "trainer", "TrainConfig": "config", "FAMILY_CARDS": "config",
    "ModelManager": "inference", "SDImagePipeline": "inference", "generate": "inference",
    "download_models": "core", "get_family": "core",
    "SD15": "sd15", "write_tiny_sd15": "sd15", "load_sd15": "sd15",
    "SDXL": "sdxl", "SDXLImagePipeline": "sdxl", "write_tiny_sdxl": "sdxl", "load_sdxl": "sdxl",
    "Kolors": "kolors", "KolorsImagePipeline": "kolors", "write_tiny_kolors": "kolors", "load_kolors": "kolors",
    "SD3": "sd3", "SD3ImagePipeline": "sd3", "write_tiny_sd3": "sd3", "load_sd3": "sd3",
    "HunyuanDiT": "hunyuan_dit", "HunyuanDiTImagePipeline": "hunyuan_dit", "write_tiny_hunyuan_dit": "hunyuan_dit",
    "load_hunyuan_dit": "hunyuan_dit",
    "run_demo": "demo",
}
__all__ = list(_EXPORTS)

def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
