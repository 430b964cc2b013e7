"""Fake of ``comfy.model_patcher.ModelPatcher``: holds a module and its two devices."""


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        # as the real one: a model without a device attribute gets one (load/unload then reassign it,
        # see model_management.load_models_gpu), so a module whose ``device`` is read-only fails here too
        if not hasattr(model, "device"):
            model.device = offload_device
        elif model.device is None:
            model.device = offload_device
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.patches = {}

    def model_size(self):
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size)
        n.patches = {k: list(v) for k, v in self.patches.items()}
        return n
