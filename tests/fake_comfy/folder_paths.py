"""Fake of ComfyUI's ``folder_paths``: model folders under a directory the tests choose."""
import os
import tempfile

base_path = tempfile.mkdtemp(prefix="fake_comfyui_")
models_dir = os.path.join(base_path, "models")
supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths = {
    name: ([os.path.join(models_dir, name)], supported_pt_extensions)
    for name in ("checkpoints", "loras", "vae", "diffusion_models", "text_encoders")
}
_output = os.path.join(base_path, "output")
_temp = os.path.join(base_path, "temp")
_input = os.path.join(base_path, "input")


def set_base(path):
    """Tests only: move every folder under ``path``."""
    global base_path, models_dir, _output, _temp, _input
    base_path = path
    models_dir = os.path.join(path, "models")
    _output, _temp = os.path.join(path, "output"), os.path.join(path, "temp")
    _input = os.path.join(path, "input")
    for name, (paths, exts) in list(folder_names_and_paths.items()):
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], exts)


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths, exts = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path in paths:
        paths.remove(full_folder_path)
    if is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[folder_name]
    out = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1].lower() in exts:
                    out.add(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def get_full_path(folder_name, filename):
    for root in folder_names_and_paths[folder_name][0]:
        path = os.path.join(root, filename)
        if os.path.isfile(path):
            return path
    return None


def get_full_path_or_raise(folder_name, filename):
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


def get_output_directory():
    os.makedirs(_output, exist_ok=True)
    return _output


def get_temp_directory():
    os.makedirs(_temp, exist_ok=True)
    return _temp


def get_input_directory():
    os.makedirs(_input, exist_ok=True)
    return _input
