"""CHAP secrets by reference (``USER:@FILE``, TOML ``secret_file``)."""

from __future__ import annotations

import pytest

from difs.controller.config import Chap, VolumeConfig
from difs.util.credentials import resolve_user_secret


def test_user_at_file_reads_the_first_line(tmp_path):
    path = tmp_path / "s"
    path.write_text("s3cret:with:colons\nignored\n")
    assert resolve_user_secret(f"alice:@{path}", what="--chap") == "alice:s3cret:with:colons"
    assert resolve_user_secret("alice:plain", what="--chap") == "alice:plain"
    assert Chap.parse(f"alice:@{path}", flag="--chap") == Chap(user="alice", secret="s3cret:with:colons")


def test_missing_or_empty_files_name_the_file_not_a_secret(tmp_path):
    with pytest.raises(ValueError, match="cannot read the secret file .*nope"):
        Chap.parse(f"alice:@{tmp_path / 'nope'}", flag="--chap")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        resolve_user_secret(f"alice:@{tmp_path / 'empty'}", what="--chap")


def test_toml_secret_file_and_not_both(tmp_path):
    path = tmp_path / "s"
    path.write_text("from-file\n")
    vc = VolumeConfig.model_validate({"name": "v", "chap": {"user": "u", "secret_file": str(path)}})
    assert vc.chap.secret == "from-file" and "from-file" not in repr(vc)
    with pytest.raises(ValueError, match="not both"):
        VolumeConfig.model_validate({"name": "v", "chap": {"user": "u", "secret": "x", "secret_file": str(path)}})
