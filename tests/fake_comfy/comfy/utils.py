"""Fake of ``comfy.utils.ProgressBar`` with ComfyUI's global hook."""
PROGRESS_BAR_HOOK = None
updates = []  # (node_id, value, total) of every update, for tests


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        updates.append((self.node_id, value, self.total))
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)
