"""Print the V1 view (what ComfyUI's validator and executor read) of every DiffCamera node class under
the real ``comfy_api.latest``. Usage: ``python v1_view.py MODEL_BASE``."""
import sys

from bootstrap import bootstrap, emit


def v1_view(cls) -> dict:
    return {"INPUT_TYPES": cls.INPUT_TYPES(), "RETURN_TYPES": list(cls.RETURN_TYPES),
            "RETURN_NAMES": list(cls.RETURN_NAMES), "FUNCTION": cls.FUNCTION, "OUTPUT_NODE": bool(cls.OUTPUT_NODE),
            "CATEGORY": cls.CATEGORY, "DESCRIPTION": cls.DESCRIPTION}


if __name__ == "__main__":
    bootstrap(sys.argv[1])
    from diffcamera.nodes import all_nodes

    emit({cls.define_schema().node_id: v1_view(cls) for cls in all_nodes()})
