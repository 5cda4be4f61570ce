"""`twomes deploy`: put the Twomes app on a board that runs MicroPython.

Compiles device/ with mpy-cross (build.compile_tree) and copies what changed: ``lib/**.mpy``,
``boot.py``, ``main.py`` and ``twomes.json`` (the config, checked with the device's own rules). What the
board has is read first by a small script run on the board (sha256 of every app file), so an unchanged
file is never sent again. ``--erase`` first removes the app files (lib/, ota/) and the app's NVS keys:
the seed's "erase all persistently stored data" without erasing MicroPython itself.

Talks to the board with mpremote (default) or adafruit-ampy (``--via ampy``), both as subprocesses.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twtools import REPO, devicecode, term
from twtools.build import compile_tree
from twtools.ports import PortError, check_port, pick_port

CONFIG_FILE = "twomes.json"
ROOT_FILES = ("boot.py", "main.py")
APP_DIRS = ("lib", "ota")  # what --erase removes (ota/: downloaded bundles and the boot selector state)
OWNED = "lib/"  # stale files under lib/ are removed (an old module left there would still be imported)
MARK = "@@TWOMES "

# Runs on the board (MicroPython): its .mpy version, then one line per app file (sha256), directory and
# the config text. Line by line: a board with little heap never holds the whole answer at once.
BOARD_SCRIPT = """
import os, sys, json, hashlib, binascii
print(_MARK + json.dumps(['mpy', getattr(sys.implementation, '_mpy', 0) & 0xff]))
def _h(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            h.update(b)
    return binascii.hexlify(h.digest()).decode()
def _walk(d):
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    print(_MARK + json.dumps(['d', d]))
    for e in entries:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _walk(p)
        else:
            print(_MARK + json.dumps(['f', p, _h(p) if _HASH else None]))
for _d in _DIRS:
    _walk(_d)
for _p in _ROOT:
    try:
        os.stat(_p)
        print(_MARK + json.dumps(['f', _p, _h(_p) if _HASH else None]))
    except OSError:
        pass
try:
    with open(_CONFIG) as _f:
        print(_MARK + json.dumps(['c', _f.read()]))
except OSError:
    pass
"""

# Runs on the board: forget every key the app keeps in NVS (activation token, Wi-Fi, session token...).
NVS_ERASE_SCRIPT = """
try:
    import esp32
except ImportError:
    esp32 = None
if esp32 is None:
    print(_MARK + '{"nvs": "no esp32 module"}')
else:
    _n = esp32.NVS(_NS)
    _gone = 0
    for _k in _KEYS:
        try:
            _n.erase_key(_k)
            _gone += 1
        except OSError:
            pass
    _n.commit()
    print(_MARK + '{"nvs": ' + str(_gone) + '}')
"""


def board_script(script: str, **values: Any) -> str:
    """``script`` preceded by ``_NAME = <repr(value)>`` lines (its parameters) and ``_MARK``."""
    head = "".join(f"_{name.upper()} = {value!r}\n" for name, value in {"mark": MARK, **values}.items())
    return head + script


class DeployError(Exception):
    pass


@dataclass
class BoardState:
    files: dict[str, str | None]  # path -> sha256 hex (None: not asked; mpremote checks it itself)
    dirs: list[str]
    config: str | None  # twomes.json text
    mpy: int = 0  # the .mpy version the board's MicroPython loads (0: it did not say)


@dataclass
class Session:
    """What one mpremote session did."""

    copied: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)  # skipped by mpremote: same sha256
    hashes: list[str] = field(default_factory=list)  # mpremote's sha256sum of the files, in order
    marked: list[str] = field(default_factory=list)  # lines a board script printed


@dataclass
class Plan:
    """File operations that make the board equal to the local build, in execution order."""

    removes: list[str] = field(default_factory=list)  # files
    remove_trees: list[str] = field(default_factory=list)  # dirs removed with everything in them
    mkdirs: list[str] = field(default_factory=list)
    puts: list[tuple[Path, str]] = field(default_factory=list)  # (local file, board path)
    unchanged: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.removes) + len(self.remove_trees) + len(self.mkdirs) + len(self.puts)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def make_plan(local: dict[str, Path], board: BoardState, erase: bool = False) -> Plan:
    """Pure: the operations that turn ``board`` into ``local`` (board path -> local file).

    Changed or missing files are put, unchanged ones skipped (sha256), files under lib/ that the build
    does not have are removed; ``erase`` removes lib/ and ota/ first and then puts everything.
    """
    plan = Plan()
    files = dict(board.files)
    dirs = set(board.dirs)
    if erase:
        for d in APP_DIRS:
            if d in dirs:
                plan.remove_trees.append(d)
        files = {p: h for p, h in files.items() if not any(p.startswith(d + "/") for d in APP_DIRS)}
        dirs = {d for d in dirs if not any(d == a or d.startswith(a + "/") for a in APP_DIRS)}
    for path in sorted(files):
        if path.startswith(OWNED) and path not in local:
            plan.removes.append(path)
    for path in sorted(local):
        for parent in _parents(path):
            if parent not in dirs:
                dirs.add(parent)
                plan.mkdirs.append(parent)
        if files.get(path) == sha256_file(local[path]):
            plan.unchanged.append(path)
        else:
            plan.puts.append((local[path], path))
    return plan


def parse_config_args(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed config values, by config.py's key types."""
    spec = devicecode.config_spec()
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise DeployError(f"--config {item!r}: expected KEY=VALUE, e.g. server_url=https://example.org")
        if key not in spec:
            raise DeployError(f"--config: unknown key {key!r}; the device knows: {', '.join(sorted(spec))}")
        kind = spec[key][1]
        if kind is bool:
            low = text.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise DeployError(f"--config {key}: {text!r} is not true/false")
            values[key] = low in ("true", "1", "yes", "on")
        elif kind is int:
            try:
                values[key] = int(text, 0)
            except ValueError:
                raise DeployError(f"--config {key}: {text!r} is not a whole number") from None
        elif kind is list:
            values[key] = [v.strip() for v in text.split(",") if v.strip()]
        else:
            values[key] = text
    return values


def trust_changes(ca: str | None, release_keys: list[str]) -> tuple[dict[str, Any], bytes | None]:
    """``--release-key`` (64 hex digits or a ``.pub`` file) -> config ``release_keys``; ``--ca FILE``
    (PEM or DER) -> the CA certificate in DER, the form the device reads (config ``ca_file``)."""
    changes: dict[str, Any] = {}
    if release_keys:
        from twtools.keys import SigningError, public_key_from_text

        found = []
        for item in release_keys:
            text = Path(item).read_text() if Path(item).is_file() else item
            try:
                found.append(public_key_from_text(text).hex())
            except SigningError as e:
                raise DeployError(f"--release-key {item}: {e}") from None
        changes["release_keys"] = found
    der = None
    if ca is not None:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            data = Path(ca).read_bytes()
        except OSError as e:
            raise DeployError(f"--ca {ca}: {e.strerror}") from None
        try:
            cert = (
                x509.load_pem_x509_certificate(data)
                if data.lstrip().startswith(b"-----BEGIN")
                else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            raise DeployError(f"--ca {ca}: not an X.509 certificate (PEM or DER)") from None
        der = cert.public_bytes(Encoding.DER)
    return changes, der


def merge_config(board_text: str | None, changes: dict[str, Any], fresh: bool = False) -> dict[str, Any]:
    """The board's config (unless ``fresh``) with ``changes``; refuses what the device would reject."""
    current: dict[str, Any] = {}
    if board_text and not fresh:
        try:
            loaded = json.loads(board_text)
            if isinstance(loaded, dict):
                current = loaded
        except ValueError:
            print(
                f"warning: the board's {CONFIG_FILE} is not valid JSON; starting from defaults",
                file=sys.stderr,
            )
    spec = devicecode.config_spec()
    dropped = sorted(k for k in current if k not in spec)
    if dropped:
        print(f"note: dropping keys the device no longer knows: {', '.join(dropped)}", file=sys.stderr)
    merged = {k: v for k, v in current.items() if k in spec} | changes
    problems = devicecode.config_problems(merged)
    if problems:
        raise DeployError(f"{CONFIG_FILE} would be rejected by the device: " + "; ".join(problems))
    return merged


# ---- talking to the board ----------------------------------------------------------------------------


class Transport(Protocol):
    name: str

    def exec(self, code: str) -> str: ...

    def apply(self, plan: Plan, step: Callable[[str], None]) -> None: ...

    def reset(self) -> None: ...


def _tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError(
            f"{what}: no answer from the board within {timeout:.0f} s. Is MicroPython running (not the app "
            "holding the console)? Press the board's reset button and try again"
        ) from None
    except FileNotFoundError as e:
        raise DeployError(f"{what}: {e.filename} is not installed (run `make install`)") from None
    if r.returncode != 0:
        text = r.stdout + r.stderr
        if "could not enter raw repl" in text.lower():
            raise DeployError(
                "no MicroPython REPL answered on the port. Is MicroPython on the board (`twomes flash`)? "
                "If the app is running and holding the console, press the reset button and run deploy again"
            )
        raise DeployError(f"{what} failed: {_last_error(text)}")
    return r


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "rror" in line or "failed" in line.lower() or "could not" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def _plan_commands(plan: Plan, cp: list[str]) -> list[list[str]]:
    """The plan as mpremote commands: removals, new directories, then `cp` of every file to copy."""
    cmds = [["fs", "rm", "-r", ":" + d] for d in plan.remove_trees]
    cmds += [["fs", "rm", ":" + f] for f in plan.removes]
    cmds += [["fs", "mkdir", ":" + d] for d in plan.mkdirs]
    cmds += [[*cp, str(src), ":" + dest] for src, dest in plan.puts]
    return cmds


class Mpremote:
    """mpremote, one process per phase; ``soft_reset=False`` adds ``resume`` (no soft reset on connect)."""

    name = "mpremote"

    def __init__(self, port: str, soft_reset: bool = True, timeout: float = 60.0) -> None:
        self.port = port
        self.soft_reset = soft_reset
        self.timeout = timeout

    def _base(self) -> list[str]:
        return [_tool("mpremote"), "connect", self.port, *([] if self.soft_reset else ["resume"])]

    def exec(self, code: str) -> str:
        return _run([*self._base(), "exec", code], "mpremote exec", self.timeout).stdout

    def apply(self, plan: Plan, step: Callable[[str], None]) -> None:
        cmds = _plan_commands(plan, ["fs", "cp", "-f"])
        if not cmds:
            return

        def line(text: str) -> None:
            if text.startswith(("cp ", "rm :", "mkdir :")):
                step(text.split()[-1].lstrip(":"))

        self._chained(self._base(), cmds, line)

    def _chained(self, argv: list[str], cmds: list[list[str]], line: Callable[[str], None]) -> None:
        """One mpremote run: `argv`, then `cmds` chained with "+"; every line it prints goes to `line`."""
        for i, c in enumerate(cmds):
            argv = argv + (["+"] if i else []) + c
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        out: list[str] = []
        for text in proc.stdout:
            out.append(text)
            line(text)
        try:
            rc = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise DeployError("mpremote: the board stopped answering") from None
        if rc != 0:
            raise DeployError(f"copying to the board failed: {_last_error(''.join(out))}")

    def reset(self) -> None:
        _run([*self._base(), "reset"], "mpremote reset", self.timeout)

    def session(
        self, plan: Plan, before: str | None, verify: list[str], reset: bool, step: Callable[[str], None]
    ) -> Session:
        """All changes in one mpremote run, on the REPL the read left (``resume``: no second soft
        reset): ``before`` (a board script, e.g. the NVS erase), removals, new directories, a copy of
        every file (mpremote's ``cp`` skips a file whose sha256 on the board is the same), then
        mpremote's own ``sha256sum`` of ``verify`` and, with ``reset``, a hard reset."""
        cmds: list[list[str]] = [["exec", before]] if before else []
        cmds += _plan_commands(plan, ["fs", "cp"])
        cmds += [["fs", "sha256sum", *(":" + p for p in verify)]]
        if reset:
            cmds.append(["reset"])
        result = Session()

        def line(text: str) -> None:
            if text.startswith("Up to date: "):
                result.up_to_date.append(text[len("Up to date: ") :].strip())
            elif text.startswith("cp "):
                result.copied.append(text.split()[-1].lstrip(":"))
                step(result.copied[-1])
            elif text.startswith(("rm :", "mkdir :")):
                step(text.split()[-1].lstrip(":"))
            elif re.fullmatch(r"[0-9a-f]{64}", text.strip()):
                result.hashes.append(text.strip())
            elif text.startswith(MARK):
                result.marked.append(text.strip())

        self._chained([_tool("mpremote"), "connect", self.port, "resume"], cmds, line)
        # mpremote says "cp" for every file and "Up to date" after it for the ones it skipped
        result.copied = [p for p in result.copied if p not in result.up_to_date]
        return result


class Ampy:
    """adafruit-ampy, one process per file operation (each one soft-resets the board)."""

    name = "ampy"

    def __init__(self, port: str, timeout: float = 60.0) -> None:
        self.port = port
        self.timeout = timeout

    def _ampy(self, *args: str) -> str:
        return _run([_tool("ampy"), "--port", self.port, *args], f"ampy {args[0]}", self.timeout).stdout

    def exec(self, code: str) -> str:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(code)
        try:
            return self._ampy("run", f.name)
        finally:
            Path(f.name).unlink()

    def apply(self, plan: Plan, step: Callable[[str], None]) -> None:
        for d in plan.remove_trees:
            self._ampy("rmdir", d)
            step(d)
        for f in plan.removes:
            self._ampy("rm", f)
            step(f)
        for d in plan.mkdirs:
            self._ampy("mkdir", "--exists-okay", d)
            step(d)
        for src, dest in plan.puts:
            self._ampy("put", str(src), dest)
            step(dest)

    def reset(self) -> None:
        self._ampy("reset", "--hard")


def _marked(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    raise DeployError(f"unexpected answer from the board: {output.strip()[-300:]!r}")


def run_board_script(t: Transport, script: str, **values: Any) -> dict[str, Any]:
    """Run ``script`` (which prints ``_MARK`` + JSON) on the board; the JSON it printed."""
    return _marked(t.exec(board_script(script, **values)))


def read_board(t: Transport, hashes: bool = True, extra: tuple[str, ...] = ()) -> BoardState:
    """What the board has; ``extra``: more root files to look at (the CA file)."""
    script = board_script(
        BOARD_SCRIPT, dirs=APP_DIRS, root=(*ROOT_FILES, CONFIG_FILE, *extra), config=CONFIG_FILE, hash=hashes
    )
    out = t.exec(script)
    state = BoardState(files={}, dirs=[], config=None)
    seen = False
    for line in out.splitlines():
        if not line.startswith(MARK):
            continue
        item = json.loads(line[len(MARK) :])
        seen = True
        if item[0] == "mpy":
            state.mpy = int(item[1])
        elif item[0] == "d":
            state.dirs.append(item[1])
        elif item[0] == "f":
            state.files[item[1]] = item[2]
        elif item[0] == "c":
            state.config = item[1]
    if not seen:
        raise DeployError(f"unexpected answer from the board: {out.strip()[-300:]!r}")
    return state


def mpy_version(path: Path) -> int:
    """The .mpy format version of a compiled file (its second byte)."""
    head = path.read_bytes()[:2]
    if len(head) < 2 or head[:1] != b"M":
        raise DeployError(f"{path} is not a compiled .mpy file")
    return head[1]


def check_mpy(board: BoardState, local: dict[str, Path]) -> None:
    """Refuse a board whose MicroPython cannot load the compiled files (another .mpy version)."""
    mpys = [p for p in local.values() if p.suffix == ".mpy"]
    if not mpys or not board.mpy:
        return  # a MicroPython too old to say: its import will say it
    ours = mpy_version(mpys[0])
    if board.mpy != ours:
        raise DeployError(
            f"the board's MicroPython loads .mpy version {board.mpy}, but mpy-cross here makes version "
            f"{ours}: flash a MicroPython that matches (`twomes flash`), or install the mpy-cross that "
            "matches the board's MicroPython"
        )


def nvs_erase_script() -> str:
    return board_script(NVS_ERASE_SCRIPT, ns=devicecode.NVS_NAMESPACE, keys=devicecode.nvs_keys())


def erase_nvs(t: Transport) -> str:
    return nvs_erase_words(_marked(t.exec(nvs_erase_script()))["nvs"])


def nvs_erase_words(result: Any) -> str:
    if isinstance(result, int):
        return f"erased {result} stored value(s) from NVS namespace '{devicecode.NVS_NAMESPACE}'"
    return f"NVS not erased ({result}: not an ESP32)"


def build_local(out: Path, config: dict[str, Any]) -> dict[str, Path]:
    """Board path -> local file, for everything deploy puts on the board."""
    shutil.rmtree(out, ignore_errors=True)
    lib = out / "lib"
    compile_tree(lib)
    files = {f"lib/{f.relative_to(lib).as_posix()}": f for f in sorted(lib.rglob("*.mpy"))}
    for name in ROOT_FILES:
        files[name] = REPO / name
    cfg = out / CONFIG_FILE
    cfg.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    files[CONFIG_FILE] = cfg
    return files


def deploy(
    port: str | None,
    config_items: list[str],
    erase: bool = False,
    via: str = "mpremote",
    reset: bool = True,
    soft_reset: bool = True,
    out: Path | None = None,
    fresh_config: bool = False,
    ca: str | None = None,
    release_keys: list[str] | None = None,
) -> int:
    if out is None:
        # what this run puts on the board, in a directory of its own: two deploys at once (two boards,
        # parallel tests) must not rebuild each other's files between the copy and the check
        with tempfile.TemporaryDirectory(prefix="twomes-deploy-") as tmp:
            return deploy(
                port, config_items, erase, via, reset, soft_reset, Path(tmp), fresh_config, ca, release_keys
            )
    changes = parse_config_args(config_items)
    trust, ca_der = trust_changes(ca, release_keys or [])
    changes |= trust
    try:
        device = pick_port(port)
        check_port(device)
    except PortError as e:
        raise DeployError(str(e)) from None
    t: Transport = Ampy(device) if via == "ampy" else Mpremote(device, soft_reset=soft_reset)
    print(f"reading what {device} has (via {t.name}) ...", flush=True)
    # mpremote checks each file's sha256 itself when it copies: the read only lists names
    board = read_board(t, hashes=via == "ampy")
    config = merge_config(board.config, changes, fresh_config)
    ca_name = str(config.get("ca_file") or devicecode.config_spec()["ca_file"][0])
    if ca_der is not None:
        board = read_board(t, hashes=via == "ampy", extra=(ca_name,))
    if "server_url" not in config:
        term.warning(
            "no server_url configured; the device will use http://127.0.0.1:8000, which only a "
            "virtual board can reach. Add --config server_url=https://your.server"
        )
    local = build_local(out, config)
    if ca_der is not None:
        local[ca_name] = out / "ca.der"
        local[ca_name].write_bytes(ca_der)
    check_mpy(board, local)  # before anything on the board changes
    plan = make_plan(local, board, erase)
    sizes = {dest: src.stat().st_size for src, dest in plan.puts}
    removing = len(plan.removes) + len(plan.remove_trees)
    if isinstance(t, Mpremote):
        print(
            f"{len(plan.puts)} files to bring up to date (mpremote skips what the board has), {removing} to remove"
        )
        with _progress(sizes) as step:
            done = t.session(plan, nvs_erase_script() if erase else None, list(local), reset, step)
        if erase:
            print(nvs_erase_words(_marked("\n".join(done.marked))["nvs"]))
        got = dict(zip(local, done.hashes, strict=False))
        print(f"{len(done.copied)} copied, {len(done.up_to_date)} already up to date, {removing} removed")
    else:
        if erase:
            print(erase_nvs(t))
        print(f"{len(plan.puts)} to copy, {len(plan.unchanged)} unchanged, {removing} to remove")
        if plan.steps:
            with _progress(sizes) as step:
                t.apply(plan, step)
        got = {
            p: h for p, h in read_board(t, extra=(ca_name,) if ca_der is not None else ()).files.items() if h
        }
    wrong = [p for p, f in local.items() if got.get(p) != sha256_file(f)]
    if wrong:
        raise DeployError(f"after copying, these files differ on the board: {', '.join(wrong)}")
    print(term.paint("board is up to date", "green"), f"{len(local)} files checked by sha256", sep=": ")
    if reset:
        if not isinstance(t, Mpremote):
            t.reset()
        print("board restarted; watch it with `twomes monitor`")
    return 0


@contextlib.contextmanager
def _progress(sizes: dict[str, int]) -> Iterator[Callable[[str], None]]:
    """A bar in bytes on a terminal; a line per file in a log (no redrawn frames there)."""
    if not term.progress_on(sys.stdout):

        def line(name: str) -> None:
            print(f"  {name} ({sizes[name]} bytes)" if name in sizes else f"  {name}", flush=True)

        yield line
        return
    from tqdm import tqdm

    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="deploy", file=sys.stdout) as bar:

        def update(name: str) -> None:
            bar.set_postfix_str(name[-40:], refresh=False)
            bar.update(sizes.get(name, 0))

        yield update


def run(args: argparse.Namespace) -> int:
    try:
        return deploy(
            args.port,
            args.config or [],
            erase=args.erase,
            via=args.via,
            reset=not args.no_reset,
            soft_reset=not args.no_soft_reset,
            fresh_config=args.fresh_config,
            ca=args.ca,
            release_keys=args.release_key,
        )
    except DeployError as e:
        term.error(str(e))
        return 2


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "deploy",
        help="copy the Twomes app (compiled) and its config to a MicroPython board",
        description="Compile device/ and copy what changed to the board. Config keys are those of "
        "device/twomes/config.py (an unknown key is refused and the known ones listed).",
    )
    p.add_argument("--port", "-p", help="serial port (default: the one ESP32 board plugged in)")
    p.add_argument(
        "--config",
        "-c",
        action="append",
        metavar="KEY=VALUE",
        help="set a twomes.json key (repeatable), e.g. server_url=https://example.org",
    )
    p.add_argument(
        "--erase",
        action="store_true",
        help="first remove the app's files (lib/, ota/) and its stored data (NVS: tokens, Wi-Fi); "
        "twomes.json is kept (see --fresh-config)",
    )
    p.add_argument(
        "--fresh-config",
        action="store_true",
        help="start twomes.json from the defaults, not from the board's",
    )
    p.add_argument(
        "--via", choices=("mpremote", "ampy"), default="mpremote", help="tool that talks to the board"
    )
    p.add_argument(
        "--ca",
        metavar="FILE",
        help="the CA certificate (PEM or DER) the device trusts for https; copied as DER to ca_file",
    )
    p.add_argument(
        "--release-key",
        action="append",
        metavar="KEY",
        help="a trusted release public key: 64 hex digits or a .pub file from `twomes keys new` "
        "(repeatable: two during a key rotation); replaces release_keys",
    )
    p.add_argument("--no-reset", action="store_true", help="do not restart the board afterwards")
    p.add_argument(
        "--no-soft-reset",
        action="store_true",
        help="mpremote: connect without a soft reset (`resume`), e.g. to a REPL that cannot soft-reset",
    )
    p.set_defaults(func=run)
