"""The ``diffcamera`` subcommands on inputs their authors never saw: each mistake ends with exit code 2 and one
line naming the input and the fix, before any heavy work, and no user file is ever overwritten or lost."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from diffcamera.cli import main
from diffcamera.core.files import read_image


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((10, 12, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    Image.fromarray((np.tile(np.linspace(0, 1, 12), (10, 1)) * 255).astype(np.uint8)).save(tmp_path / "d.png")
    return tmp_path


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


@pytest.mark.parametrize("cmd", ["bokeh", "refocus"])
@pytest.mark.parametrize("target", ["img.png", "d.png"])
def test_an_input_is_never_overwritten_even_with_force(scene, capsys, cmd, target):
    before = _digest(scene / target)
    args = [cmd, str(scene / "img.png"), "--depth", str(scene / "d.png"), "--focus", "0.5,0.5",
            "-o", str(scene / target), "--force"]
    assert main(args) == 2
    assert "inputs are never overwritten" in _err(capsys)
    assert _digest(scene / target) == before


def test_bokeh_coc_and_out_on_one_file_is_refused(scene, capsys):
    out = scene / "o.png"
    assert main(["bokeh", str(scene / "img.png"), "--depth", str(scene / "d.png"), "-o", str(out),
                 "--coc", str(out)]) == 2
    assert "--coc and --out are the same file" in _err(capsys) and not out.exists()


def test_bokeh_batch_with_one_name_twice_is_refused(scene, capsys):
    (scene / "a").mkdir()
    (scene / "b").mkdir()
    for sub in ("a", "b"):
        (scene / sub / "img.png").write_bytes((scene / "img.png").read_bytes())
    assert main(["bokeh", str(scene / "a" / "img.png"), str(scene / "b" / "img.png"), "--depth",
                 str(scene / "d.png"), "-o", str(scene / "out") + "/"]) == 2
    assert "would both be written to" in _err(capsys)
    assert not (scene / "out").exists()


def test_bokeh_batch_checks_every_file_before_the_first_render(scene, capsys):
    data = (scene / "img.png").read_bytes()
    (scene / "bad.png").write_bytes(data[: len(data) // 2])
    assert main(["bokeh", str(scene / "img.png"), str(scene / "bad.png"), "--depth", str(scene / "d.png"),
                 "-o", str(scene / "out") + "/"]) == 2
    assert "bad.png: unreadable image" in _err(capsys)
    assert not (scene / "out").exists()       # the readable first image was not rendered and written


def test_bokeh_level_too_large_names_the_flag(scene, capsys):
    assert main(["bokeh", str(scene / "img.png"), "--depth", str(scene / "d.png"), "--level", "1e9",
                 "-o", str(scene / "o.png")]) == 2
    assert _err(capsys).startswith("diffcamera bokeh: error: --level: ")


@pytest.mark.parametrize("out,needle", [("o.xyz", "extension '.xyz' is not an image format"),
                                        ("noext", "has no extension"),
                                        ("img.png/o.png", "is a file, not a folder"),
                                        ("sub", "is a folder")])
@pytest.mark.parametrize("cmd", ["bokeh", "refocus"])
def test_bad_out_paths_are_refused_before_work(scene, capsys, cmd, out, needle):
    (scene / "sub").mkdir()
    if cmd == "bokeh" and out == "sub":
        pytest.skip("bokeh writes into a folder given as --out (documented)")
    assert main([cmd, str(scene / "img.png"), "--depth", str(scene / "d.png"), "--focus", "0.5,0.5",
                 "-o", str(scene / out), "--force"]) == 2
    assert needle in _err(capsys)
    assert not (scene / "o.xyz").exists() and not (scene / "noext").exists()


@pytest.mark.parametrize("extra,needle", [(["--level", "nan"], "--level: must be finite and >= 0, got nan"),
                                          (["--level", "-1"], "--level: must be finite and >= 0, got -1"),
                                          (["--input-level", "nan"], "--input-level: must be finite"),
                                          (["--denoise", "0"], "--denoise: must be finite and in (0, 1]"),
                                          (["--steps", "0"], "--steps must be at least 1")])
def test_refocus_numbers_are_checked_as_given(scene, capsys, extra, needle):
    assert main(["refocus", str(scene / "img.png"), "--depth", str(scene / "d.png"), "--focus", "0.5,0.5",
                 "-o", str(scene / "o.png")] + extra) == 2
    assert needle in _err(capsys)


def test_refocus_refuses_a_depth_outside_0_1_instead_of_clipping_it(scene, capsys):
    np.save(scene / "metric.npy", np.tile(np.linspace(1, 10, 12), (10, 1)).astype(np.float32))
    assert main(["refocus", str(scene / "img.png"), "--depth", str(scene / "metric.npy"), "--focus", "0.5,0.5",
                 "-o", str(scene / "o.png")]) == 2
    assert "holds values 1..10 but refocus reads disparity 0..1" in _err(capsys)
    assert not (scene / "o.png").exists()


def test_sixteen_bit_and_float_grey_images_keep_their_values(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 16), (4, 1))
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "gf.tif")
    for name in ("g16.png", "gf.tif"):
        img = read_image(str(tmp_path / name))
        assert img.shape == (1, 3, 4, 16)
        assert torch_close(img[0, 0], ramp)


def torch_close(t, ref):
    return np.abs(t.numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("extra,needle", [(["--level", "nan"], "--level: must be finite and in 0..1024"),
                                          (["--size", "100000"], "--size must be 8..2048"),
                                          (["--denoise", "0"], "--denoise: must be finite and in (0, 1]"),
                                          (["--model", "missing.safetensors"], "--model: 'missing.safetensors' does not exist"),
                                          (["--depth-model", "nothing"], "--depth-model: 'nothing' does not exist"),
                                          (["-o", "sheet.xyz"], "extension '.xyz'")])
def test_demo_checks_its_arguments_first(tmp_path, monkeypatch, capsys, extra, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"] + extra + ([] if "-o" in extra else ["-o", "sheet.png"])) == 2
    assert needle in _err(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra,needle", [(["--scenes", "1", "--p-aif", "2"], "--p-aif: must be finite and in 0..1"),
                                          (["--scenes", "1", "--level-max", "1e9"], "--level-max: must be"),
                                          (["--scenes", "1", "--scene-kinds", "foo"], "--scene-kinds: unknown kind(s) foo"),
                                          (["--scenes", "0"], "--scenes must be at least 1"),
                                          (["--scenes", "1", "--size", "100000"], "--size must be at most"),
                                          (["--images", "nothing"], "--images nothing does not exist")])
def test_simulate_refuses_before_it_creates_out(tmp_path, capsys, extra, needle):
    out = tmp_path / "ds"
    assert main(["simulate", "-o", str(out), "--size", "16"] + extra) == 2
    assert needle in _err(capsys)
    assert not out.exists()


def test_simulate_a_refused_run_does_not_tie_out_to_its_arguments(scene, capsys):
    """An image without a depth map used to leave simulate_config.json behind, so the corrected rerun was refused
    as 'a dataset simulated with other arguments'."""
    folder = scene / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes((scene / "img.png").read_bytes())
    out = scene / "ds"
    assert main(["simulate", "--images", str(folder), "-o", str(out), "--size", "16", "--variants", "1"]) == 2
    assert "no depth map beside them" in _err(capsys)
    assert not out.exists()


def test_simulate_out_on_a_file_is_refused(scene, capsys):
    assert main(["simulate", "--scenes", "1", "-o", str(scene / "img.png"), "--size", "16"]) == 2
    assert "is a file; give a folder" in _err(capsys)


def test_depth_refuses_sixteen_bit_jpeg_and_bad_process_res_before_loading(scene, capsys):
    base = ["depth", str(scene / "img.png"), "--model", str(scene / "no_model")]
    assert main(base + ["-o", str(scene / "d.jpg")]) == 2
    assert "JPEG cannot hold 16-bit grey" in _err(capsys)
    assert main(base + ["-o", str(scene / "o.png"), "--process-res", "0"]) == 2
    assert "--process-res must be 14..4102" in _err(capsys)
    data = (scene / "img.png").read_bytes()
    (scene / "bad.png").write_bytes(data[:20])
    assert main(["depth", str(scene / "bad.png"), "--model", str(scene / "no_model"), "-o", str(scene / "o.png")]) == 2
    assert "bad.png: unreadable image" in _err(capsys)   # the image, not the missing model: read first



@pytest.mark.parametrize("flag,value,needle", [("--focus", "-0.1,0", "--focus -0.1,0: x and y must be in 0..1"),
                                               ("--input-focus", "-.5,0.2", "--input-focus -.5,0.2: x and y"),
                                               ("--level", "-1e-3", "--level: must be finite and >= 0")])
def test_a_value_that_starts_with_a_minus_gets_its_own_check_not_argparses(scene, capsys, flag, value, needle):
    """argparse reads ``-0.1,0`` as a flag ("expected one argument"); the option's check says what is wrong."""
    args = ["refocus", str(scene / "img.png"), "--depth", str(scene / "d.png"), "--focus", "0.5,0.5",
            "-o", str(scene / "o.png")]
    args[args.index("-o"):args.index("-o")] = [flag, value]
    assert main(args) == 2
    assert needle in _err(capsys)
    assert not (scene / "o.png").exists()


@pytest.mark.parametrize("name", ["PHYSICS", "Physics", " physics"])
def test_the_model_names_are_read_in_any_case(scene, capsys, name):
    out = scene / "o.png"
    assert main(["refocus", str(scene / "img.png"), "--depth", str(scene / "d.png"), "--focus", "0.5,0.5",
                 "--model", name, "--input-level", "0", "-o", str(out)]) == 0
    assert out.exists()


def test_demo_reads_the_model_names_in_any_case_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--model", "PHYSICS", "--size", "16", "-o", "sheet.png"]) == 0
    assert (tmp_path / "sheet.png").exists()
