"""Fake of ``comfy.model_management``: CPU devices, a loaded-models list, the interrupt flag."""
import torch

current_loaded_models = []  # ModelPatchers, most recent first (as in ComfyUI)
load_calls = []             # every list passed to load_models_gpu (tests inspect it)
_interrupted = False


class InterruptProcessingException(Exception):
    pass


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append(list(models))
    for m in models:
        m.model.to(m.load_device)
        m.model.device = m.load_device  # ModelPatcher.load / unpatch_model assign it, as in ComfyUI
        if m in current_loaded_models:
            current_loaded_models.remove(m)
        current_loaded_models.insert(0, m)


def unload_all_models():
    for m in list(current_loaded_models):
        m.model.to(m.offload_device)
        m.model.device = m.offload_device
    current_loaded_models.clear()


def soft_empty_cache(force=False):
    return None


def interrupt_current_processing(value=True):
    global _interrupted
    _interrupted = value


def processing_interrupted():
    return _interrupted


def throw_exception_if_processing_interrupted():
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()


free_memory_bytes = 64 * 1024 ** 3  # what get_free_memory reports; tests lower it


def get_free_memory(dev=None, torch_free_too=False):
    if torch_free_too:
        return free_memory_bytes, free_memory_bytes
    return free_memory_bytes
