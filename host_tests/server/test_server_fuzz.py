"""A short slice of `make fuzz` (schemathesis against a fresh server): seconds, not minutes."""

from __future__ import annotations

import re

import pytest

from twtools.server import fuzz


def test_schemathesis_slice_finds_no_server_error_or_undeclared_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = fuzz.fuzz(seconds=4, kinds=list(fuzz.KINDS), seed=12345)
    out = capsys.readouterr()
    assert rc == 0, out.out[-6000:] + out.err[-3000:]
    assert "fuzz: passed (admin, device, account; 4 s each)" in out.out
    # Each run really reached the server with its token (not only 401/403).
    assert out.out.count("Loaded specification") == 3
    generated = [int(n) for n, ok in re.findall(r"(\d+) generated, (\d+) passed", out.out) if n == ok]
    assert len(generated) == 3 and min(generated) >= 20, generated


def test_fuzz_refuses_unknown_token_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz.fuzz(seconds=1, kinds=["root"]) == 2
    assert "unknown token kind(s): root" in capsys.readouterr().err
