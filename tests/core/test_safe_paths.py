"""The path policy and safe writing (core/safe_paths.py): refusals, links that leave a root, no overwrite."""
import os

import pytest

from diffcamera.core import safe_paths as sp


@pytest.fixture
def world(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "model.safetensors").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"secret")
    os.symlink(outside / "secret.safetensors", root / "link_out.safetensors")
    os.symlink(outside / "missing.safetensors", root / "dangling_out.safetensors")
    os.symlink(root / "sub" / "model.safetensors", root / "link_in.safetensors")
    os.symlink(outside, root / "dir_out")
    return root, outside


@pytest.mark.parametrize("name", ["/etc/passwd", "\\\\server\\share\\x", "C:\\x", "~/x", "../x", "a/../../x", "a\\..\\x",
                                  "a\x00b", "x" * (sp.MAX_PATH_CHARS + 1), "", "  ", ".", "./"])
def test_relative_parts_refuses(name):
    with pytest.raises(sp.PathRefused, match="^what: "):
        sp.relative_parts(name, "what")


def test_relative_parts_accepts_subfolders():
    assert sp.relative_parts("a/b\\c.safetensors", "w") == ["a", "b", "c.safetensors"]
    assert sp.relative_parts("./a//b", "w") == ["a", "b"]


@pytest.mark.parametrize("name", ["a/b", "..", ".", "", "a\\b", "c:x", "x\x00", "x\ny", "x" * 101, 3])
def test_plain_name_refuses(name):
    with pytest.raises(sp.PathRefused, match="^run_name: "):
        sp.plain_name(name, "run_name")


def test_plain_name_strips_and_accepts():
    assert sp.plain_name("  my run.v2 ", "n") == "my run.v2"


def test_resolve_inside_and_links(world):
    root, outside = world
    assert sp.resolve_in_roots([str(root)], "sub/model.safetensors", "lora", kind="file") == \
        os.path.realpath(root / "sub" / "model.safetensors")
    # an absolute path inside the root is the same file; a link staying inside is followed
    assert sp.resolve_in_roots([str(root)], str(root / "sub" / "model.safetensors"), "lora", kind="file")
    assert sp.resolve_in_roots([str(root)], "link_in.safetensors", "lora", kind="file").endswith("model.safetensors")
    with pytest.raises(sp.PathRefused, match="^lora: 'link_out.safetensors' is a link that leads outside"):
        sp.resolve_in_roots([str(root)], "link_out.safetensors", "lora", kind="file")
    with pytest.raises(sp.PathRefused, match="leads outside"):
        sp.resolve_in_roots([str(root)], "dir_out/secret.safetensors", "lora", kind="file")
    with pytest.raises(sp.PathRefused, match="is outside"):
        sp.resolve_in_roots([str(root)], str(outside / "secret.safetensors"), "lora", kind="file")
    with pytest.raises(sp.PathRefused, match="is outside"):
        sp.resolve_in_roots([str(root)], str(root / ".." / "outside" / "secret.safetensors"), "lora")
    with pytest.raises(sp.PathRefused, match="not an existing file"):
        sp.resolve_in_roots([str(root)], "sub", "lora", kind="file")  # a folder, not a file


def test_messages_do_not_reveal_what_exists_outside(world):
    """Refusals for outside paths read the same whether the target exists or not."""
    root, outside = world

    def msg(name):
        with pytest.raises(sp.PathRefused) as err:
            sp.resolve_in_roots([str(root)], name, "path", kind="any", hint="HINT")
        return str(err.value).replace(name, "NAME")

    assert msg(str(outside / "secret.safetensors")) == msg(str(outside / "missing.safetensors"))
    assert msg("link_out.safetensors") == msg("dangling_out.safetensors")
    assert msg("dir_out/secret.safetensors") == msg("dir_out/missing.safetensors")
    assert msg("../outside/secret.safetensors") == msg("../outside/missing.safetensors")
    assert msg("link_out.safetensors").endswith("; HINT")


def test_opt_in_allows_external(world):
    root, outside = world
    got = sp.resolve_in_roots([str(root)], str(outside / "secret.safetensors"), "m", kind="file", allow_external=True)
    assert got == os.path.realpath(outside / "secret.safetensors")
    assert sp.resolve_in_roots([str(root)], "link_out.safetensors", "m", allow_external=True) == got


def test_opted_in_reads_the_environment(monkeypatch):
    monkeypatch.delenv(sp.ALLOW_EXTERNAL_MODELS, raising=False)
    assert not sp.opted_in(sp.ALLOW_EXTERNAL_MODELS)
    for value, on in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(sp.ALLOW_EXTERNAL_MODELS, value)
        assert sp.opted_in(sp.ALLOW_EXTERNAL_MODELS) is on


def test_check_tree_inside(world, tmp_path):
    root, outside = world
    model = root / "sub"
    sp.check_tree_inside(str(model), [str(root)], "model_name")
    os.symlink(outside / "secret.safetensors", model / "weights.safetensors")
    with pytest.raises(sp.PathRefused, match="^model_name: 'weights.safetensors' in the model folder is a link"):
        sp.check_tree_inside(str(model), [str(root)], "model_name")


def test_make_dirs_inside_refuses_links_out(world):
    root, outside = world
    made = sp.make_dirs_inside(str(root), ["a", "b"], "name")
    assert os.path.isdir(made) and made == str(root / "a" / "b")
    assert sp.make_dirs_inside(str(root), ["a", "b"], "name") == made  # reused
    with pytest.raises(sp.PathRefused, match="^name: 'dir_out' is a link that leads outside"):
        sp.make_dirs_inside(str(root), ["dir_out", "x"], "name")
    assert os.listdir(outside) == ["secret.safetensors"]  # nothing created through the link
    with pytest.raises(sp.PathRefused, match="is a file"):
        sp.make_dirs_inside(str(root), ["sub", "model.safetensors"], "name")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with sp.atomic_write(str(target)) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["config.json"]
    sp.write_json_atomic({"a": 1}, str(target))
    assert target.read_text().strip().startswith("{") and os.listdir(tmp_path) == ["config.json"]


def test_atomic_write_replaces_a_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("user data")
    link = tmp_path / "manifest.json"
    os.symlink(victim, link)
    sp.write_json_atomic({"x": 1}, str(link))
    assert victim.read_text() == "user data" and not os.path.islink(link)


def test_write_new_never_overwrites(tmp_path):
    (tmp_path / "run.safetensors").write_bytes(b"user")
    (tmp_path / "run_2.json").write_bytes(b"user json")
    os.symlink(tmp_path / "nowhere", tmp_path / "run_3.safetensors")  # a dangling link counts as taken
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.safetensors").write_bytes(b"new")
    (src / "m.json").write_bytes(b"{}")
    base = sp.copy_new(str(src / "m.safetensors"), str(tmp_path), "run", [".safetensors", ".json"])
    assert base == str(tmp_path / "run_4")
    assert (tmp_path / "run.safetensors").read_bytes() == b"user"
    assert (tmp_path / "run_2.json").read_bytes() == b"user json"
    assert (tmp_path / "run_4.safetensors").read_bytes() == b"new" and (tmp_path / "run_4.json").read_bytes() == b"{}"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_refuse_link(tmp_path):
    os.symlink(tmp_path / "x", tmp_path / "loss.jsonl")
    with pytest.raises(sp.PathRefused, match="^output_dir: .* is a link"):
        sp.refuse_link(str(tmp_path / "loss.jsonl"), "output_dir")
    sp.refuse_link(str(tmp_path / "absent"), "output_dir")
